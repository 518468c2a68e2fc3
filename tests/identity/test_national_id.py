"""GB 11643-1999 resident identity numbers: structure, check character, sex, consistency."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from identity.national_id import (
    PROVINCE_CODES,
    NationalIdError,
    NationalIdMismatch,
    Sex,
    check_character,
    china_today,
    make_national_id,
    mask,
    parse_national_id,
)

# The worked example of GB 11643-1999: Beijing Chaoyang, 31 December 1949, sequence 002.
STANDARD_EXAMPLE = "11010519491231002X"
TODAY = date(2026, 11, 29)


def test_the_standards_example_parses() -> None:
    parsed = parse_national_id(STANDARD_EXAMPLE, today=TODAY)
    assert parsed.number == STANDARD_EXAMPLE
    assert parsed.region == "110105"
    assert parsed.province == "11"
    assert parsed.birth_date == date(1949, 12, 31)
    assert parsed.sex is Sex.FEMALE


def test_the_check_character_follows_iso_7064_mod_11_2() -> None:
    assert check_character(STANDARD_EXAMPLE[:17]) == "X"
    # The standard's other example (born 1880, so refused below for its date): check "4".
    assert check_character("44052418800101001") == "4"
    assert check_character("11010519900101001") == "0"


def test_a_lowercase_x_and_surrounding_spaces_are_normalised() -> None:
    assert parse_national_id("  11010519491231002x\n", today=TODAY).number == STANDARD_EXAMPLE


@pytest.mark.parametrize("province", sorted(PROVINCE_CODES))
def test_every_province_level_code_is_accepted(province: int) -> None:
    number = make_national_id(region=f"{province}0101", birth=date(1985, 6, 15), sequence=123)
    parsed = parse_national_id(number, today=TODAY)
    assert parsed.province == f"{province}"
    assert parsed.birth_date == date(1985, 6, 15)


@pytest.mark.parametrize(
    "birth",
    [date(1900, 1, 1), date(2000, 2, 29), date(2024, 2, 29), TODAY],
    ids=["earliest", "leap-2000", "leap-2024", "born-today"],
)
def test_edge_birth_dates_are_accepted(birth: date) -> None:
    number = make_national_id(birth=birth, sequence=7)
    assert parse_national_id(number, today=TODAY).birth_date == birth


@pytest.mark.parametrize(
    ("sequence", "sex"),
    [
        (1, Sex.MALE),
        (2, Sex.FEMALE),
        (9, Sex.MALE),
        (10, Sex.FEMALE),
        (999, Sex.MALE),
        (0, Sex.FEMALE),
    ],
)
def test_the_parity_of_the_sequence_code_gives_the_sex(sequence: int, sex: Sex) -> None:
    assert parse_national_id(make_national_id(sequence=sequence)).sex is sex


def _with_check(first17: str) -> str:
    return first17 + check_character(first17)


INVALID = [
    pytest.param(STANDARD_EXAMPLE[:17] + "1", "check character", id="wrong-check-character"),
    pytest.param("11010519491231012X", "check character", id="mistyped-digit"),
    pytest.param(_with_check("11010519990230001"), "does not exist", id="19990230"),
    pytest.param(_with_check("11010520230431001"), "does not exist", id="april-31"),
    pytest.param(_with_check("11010519000229001"), "does not exist", id="1900-not-leap"),
    pytest.param(_with_check("11010519991301001"), "does not exist", id="month-13"),
    pytest.param(_with_check("11010500000000001"), "does not exist", id="all-zero-date"),
    pytest.param("440524188001010014", "before 1900", id="born-1880"),
    pytest.param(_with_check("11010518991231001"), "before 1900", id="born-1899"),
    pytest.param(_with_check("110105" + "20261130" + "001"), "future", id="born-tomorrow"),
    pytest.param(_with_check("110105" + "30000101" + "001"), "future", id="born-3000"),
    pytest.param(_with_check("00010519491231002"), "province", id="province-00"),
    pytest.param(_with_check("10010519491231002"), "province", id="province-10"),
    pytest.param(_with_check("16010519491231002"), "province", id="province-16"),
    pytest.param(_with_check("72010519491231002"), "province", id="province-72"),
    pytest.param(_with_check("99010519491231002"), "province", id="province-99"),
    pytest.param(STANDARD_EXAMPLE[:17], "18 characters, got 17", id="17-characters"),
    pytest.param(STANDARD_EXAMPLE + "0", "18 characters, got 19", id="19-characters"),
    pytest.param("110105491231002", "15-digit", id="first-generation-15"),
    pytest.param("", "got 0", id="empty"),
    pytest.param("11010519491231002A", "17 digits followed by", id="letter-at-the-end"),
    pytest.param("1101051949X231002X", "17 digits followed by", id="x-in-the-middle"),
    pytest.param("ABCDEFGHIJKLMNOPQR", "17 digits followed by", id="letters"),
    pytest.param("1101051949 231002X", "17 digits followed by", id="inner-space"),
    pytest.param("１１０１０５１９４９１２３１００２X", "17 digits followed by", id="full-width"),
    pytest.param("١١٠١٠٥١٩٤٩١٢٣١٠٠٢X", "17 digits followed by", id="arabic-indic"),
]


@pytest.mark.parametrize(("number", "reason"), INVALID)
def test_an_invalid_number_is_refused_saying_why_but_not_what(number: str, reason: str) -> None:
    with pytest.raises(NationalIdError) as caught:
        parse_national_id(number, today=TODAY)
    message = str(caught.value)
    assert reason in message
    assert isinstance(caught.value, ValueError)
    if len(number) >= 6:
        # Neither the number nor any long piece of it is echoed.
        for start in range(len(number) - 5):
            assert number[start : start + 6] not in message


def test_today_is_a_date_in_china_by_default() -> None:
    # Born "today" by the UTC+8 calendar is never refused as born in the future.
    assert parse_national_id(make_national_id(birth=china_today())).birth_date == china_today()
    tomorrow = china_today() + timedelta(days=1)
    with pytest.raises(NationalIdError, match="future"):
        parse_national_id(_with_check(f"110105{tomorrow:%Y%m%d}001"))


def test_a_stated_birth_date_and_sex_that_match_pass() -> None:
    parsed = parse_national_id(STANDARD_EXAMPLE)
    parsed.check_consistency()
    parsed.check_consistency(birth_date=date(1949, 12, 31), sex=Sex.FEMALE)


def test_a_stated_birth_date_that_differs_is_refused() -> None:
    parsed = parse_national_id(STANDARD_EXAMPLE)
    with pytest.raises(NationalIdMismatch, match="birth_date does not match") as caught:
        parsed.check_consistency(birth_date=date(1949, 12, 30), sex=Sex.FEMALE)
    assert caught.value.field == "birth_date"


def test_a_stated_sex_that_differs_is_refused() -> None:
    parsed = parse_national_id(STANDARD_EXAMPLE)
    with pytest.raises(NationalIdMismatch, match="sex does not match") as caught:
        parsed.check_consistency(sex=Sex.MALE)
    assert caught.value.field == "sex"


def test_the_parsed_value_never_shows_the_number_in_its_repr() -> None:
    parsed = parse_national_id(STANDARD_EXAMPLE)
    assert repr(parsed) == "NationalId('**************002X')"
    assert str(parsed) == repr(parsed)
    assert STANDARD_EXAMPLE[:6] not in repr(parsed)


def test_the_mask_keeps_only_the_last_four_characters() -> None:
    assert mask(STANDARD_EXAMPLE) == "**************002X"
    assert parse_national_id(STANDARD_EXAMPLE).masked == "**************002X"


def test_made_numbers_are_valid_and_deterministic() -> None:
    number = make_national_id(region="440305", birth=date(2001, 9, 9), sequence=42)
    assert number == make_national_id(region="440305", birth=date(2001, 9, 9), sequence=42)
    parsed = parse_national_id(number)
    assert (parsed.region, parsed.birth_date, parsed.sex) == (
        "440305",
        date(2001, 9, 9),
        Sex.FEMALE,
    )
    assert make_national_id(birth=date(1949, 12, 31), sequence=2) == STANDARD_EXAMPLE


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"region": "99999"}, "six-digit"),
        ({"region": "11010a"}, "six-digit"),
        ({"region": "990101"}, "province"),
        ({"sequence": 1000}, "between 0 and 999"),
        ({"sequence": -1}, "between 0 and 999"),
        ({"birth": date(1899, 12, 31)}, "before 1900"),
        ({"birth": date(2999, 1, 1)}, "future"),
    ],
)
def test_making_a_number_that_cannot_be_valid_is_refused(
    kwargs: dict[str, object], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        make_national_id(**kwargs)  # type: ignore[arg-type]


def test_the_check_character_needs_exactly_17_ascii_digits() -> None:
    for bad in ("1101051949123100", "110105194912310021", "1101051949123100a", "１" * 17):
        with pytest.raises(ValueError, match="17 digits"):
            check_character(bad)
