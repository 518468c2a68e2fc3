"""The FHIRPath subset evaluates the official definitions' expressions as FHIR says."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from health.search.fhirpath import FhirPathError, compile_expression, split_union

OBSERVATION = {
    "resourceType": "Observation",
    "id": "o1",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
    "subject": {"reference": "Patient/p1"},
    "performer": [{"reference": "Practitioner/d1"}, {"reference": "Organization/o1"}],
    "valueQuantity": {"value": 120, "code": "mm[Hg]"},
    "component": [
        {"code": {"text": "a"}, "valueQuantity": {"value": 1}},
        {"code": {"text": "b"}, "valueCodeableConcept": {"text": "high"}},
    ],
}


def values(expression: str, resource: Mapping[str, object] = OBSERVATION) -> list[object]:
    return [node.value for node in compile_expression(expression).evaluate(resource)]


def test_paths_unions_and_choice_types() -> None:
    assert values("Observation.subject") == [{"reference": "Patient/p1"}]
    assert values("Observation.component.code.text") == ["a", "b"]
    assert values("Observation.code | Observation.component.code") == [
        OBSERVATION["code"],
        {"text": "a"},
        {"text": "b"},
    ]
    assert values("(Observation.value as Quantity)") == [{"value": 120, "code": "mm[Hg]"}]
    assert values("(Observation.value as CodeableConcept)") == []
    assert values("Observation.component.value.as(CodeableConcept)") == [{"text": "high"}]
    assert values("Observation.component.value.ofType(Quantity)") == [{"value": 1}]
    assert values("(Observation.value as CodeableConcept).text") == []


def test_where_resolve_is_reads_the_reference_type() -> None:
    assert values("Observation.subject.where(resolve() is Patient)") == [
        {"reference": "Patient/p1"}
    ]
    assert values("Observation.performer.where(resolve() is Organization)") == [
        {"reference": "Organization/o1"}
    ]
    assert values("Observation.subject.where(resolve() is Group)") == []


def test_where_equality_exists_and_boolean_logic() -> None:
    patient = {
        "resourceType": "Patient",
        "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}],
    }
    assert values("Patient.telecom.where(system='email')", patient) == [
        {"system": "email", "value": "a@b"}
    ]
    deceased = "Patient.deceased.exists() and Patient.deceased != false"
    assert values(deceased, {"resourceType": "Patient"}) == [False]
    assert values(deceased, {"resourceType": "Patient", "deceasedBoolean": False}) == [False]
    assert values(deceased, {"resourceType": "Patient", "deceasedDateTime": "2020"}) == [True]


def test_expressions_outside_the_subset_fail_loudly() -> None:
    with pytest.raises(FhirPathError):
        compile_expression("Observation.code.memberOf('http://x')")
    with pytest.raises(FhirPathError):
        compile_expression("Observation.value + 1")


def test_union_split_respects_parentheses_and_quotes() -> None:
    assert split_union("(A.b as C) | A.d.where(x = 'p|q') | A.e") == [
        "(A.b as C)",
        "A.d.where(x = 'p|q')",
        "A.e",
    ]
