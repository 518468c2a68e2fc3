"""Index values: dates at their precision, numbers with theirs, strings normalised."""

from __future__ import annotations

from datetime import UTC, datetime

from health.search.fhirpath import Node
from health.search.values import (
    DATE_MAX,
    date_range,
    date_rows,
    normalize,
    number_range,
    parse_reference,
    string_rows,
    token_rows,
)


def test_dates_cover_the_instants_of_their_precision() -> None:
    assert date_range("2020") == (
        datetime(2020, 1, 1, tzinfo=UTC),
        datetime(2020, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    )
    assert date_range("2020-02")[1] == datetime(2020, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)  # type: ignore[index]
    assert date_range("2020-12-31T23:00:00+08:00") == (
        datetime(2020, 12, 31, 15, 0, tzinfo=UTC),
        datetime(2020, 12, 31, 15, 0, 0, 999999, tzinfo=UTC),
    )
    assert date_range("2020-01-01T10:00:00.5Z") == (
        datetime(2020, 1, 1, 10, 0, 0, 500000, tzinfo=UTC),
        datetime(2020, 1, 1, 10, 0, 0, 599999, tzinfo=UTC),
    )
    assert date_range("9999") is not None
    assert date_range("2020-13") is None
    assert date_range("yesterday") is None


def test_open_periods_reach_the_end_of_time() -> None:
    rows = list(date_rows(Node({"start": "2021-06-01"})))
    assert rows == [{"start": datetime(2021, 6, 1, tzinfo=UTC), "end": DATE_MAX}]


def test_numbers_carry_their_precision() -> None:
    assert number_range("100") == (100.0, 99.5, 100.5)
    assert number_range("1.50") == (1.5, 1.495, 1.505)
    assert number_range("1e2") == (100.0, 50.0, 150.0)
    assert number_range("abc") is None
    assert number_range("NaN") is None


def test_strings_are_normalised_for_starts_with() -> None:
    assert normalize("  Ångström   Müller ") == "angstrom muller"
    assert normalize("STRASSE") == "strasse"
    name = {"use": "official", "family": "Dach", "given": ["Andrea", "Jo"], "prefix": ["Mr."]}
    assert [r["value"] for r in string_rows(Node(name))] == ["Dach", "Andrea", "Jo", "Mr."]


def test_tokens_of_each_data_type() -> None:
    concept = {"coding": [{"system": "s", "code": "c", "display": "Disp"}], "text": "Text"}
    assert list(token_rows(Node(concept))) == [
        {"system": "s", "code": "c", "text": "disp"},
        {"system": None, "code": None, "text": "text"},
    ]
    identifier = {"system": "urn:mrn", "value": "42", "type": {"text": "MRN"}}
    assert list(token_rows(Node(identifier))) == [
        {"system": "urn:mrn", "code": "42", "text": "mrn"}
    ]
    phone = {"system": "phone", "value": "555-1234"}
    assert list(token_rows(Node(phone))) == [{"system": None, "code": "555-1234", "text": None}]
    assert list(token_rows(Node(True))) == [{"system": None, "code": "true", "text": None}]


def test_references_local_versioned_absolute_and_other() -> None:
    assert parse_reference("Patient/1") == ("Patient", "1")
    assert parse_reference("Patient/1/_history/3") == ("Patient", "1")
    assert parse_reference("https://x.example/fhir/Patient/1") == ("Patient", None)
    assert parse_reference("Organization?identifier=a|b") == (None, None)
    assert parse_reference("urn:uuid:1234") == (None, None)
