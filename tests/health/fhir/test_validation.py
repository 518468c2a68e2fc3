"""Incoming resources are judged against FHIR R4 (health/fhir/validation.py)."""

from __future__ import annotations

import pytest

from health.fhir.validation import is_resource_type, validate_resource
from services.kit.errors import Problem


def test_resource_types_are_resources_not_data_types() -> None:
    assert is_resource_type("Patient")
    assert is_resource_type("Bundle")
    assert not is_resource_type("HumanName")
    assert not is_resource_type("patient")
    assert not is_resource_type("Nonsense")


def test_the_json_as_written_is_returned_unchanged() -> None:
    resource = {"resourceType": "Patient", "active": True, "name": [{"family": "Li"}]}
    assert validate_resource(resource) is resource
    assert resource == {"resourceType": "Patient", "active": True, "name": [{"family": "Li"}]}


def test_expressions_inside_a_bundle_name_the_entry() -> None:
    with pytest.raises(Problem) as caught:
        validate_resource(
            {"resourceType": "Patient", "gender": 7},
            where="Bundle.entry[2].resource",
        )
    assert caught.value.status == 400
    issue = caught.value.extensions["issues"][0]
    assert issue["expression"] == ["Bundle.entry[2].resource.gender"]


def test_not_an_object_and_no_type() -> None:
    with pytest.raises(Problem) as not_object:
        validate_resource([1, 2])
    assert not_object.value.status == 400
    with pytest.raises(Problem) as no_type:
        validate_resource({"id": "x"})
    assert no_type.value.extensions["issues"][0]["expression"] == ["resourceType"]
