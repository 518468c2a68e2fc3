"""The Patient compartment a resource is in (FHIR R4 compartmentdefinition-patient.html)."""

from __future__ import annotations

from health.fhir.compartment import patient_key


def test_a_patient_is_its_own_compartment() -> None:
    assert patient_key({"resourceType": "Patient", "id": "p1"}) == "p1"


def test_the_subject_decides_before_a_performer() -> None:
    observation = {
        "resourceType": "Observation",
        "performer": [{"reference": "Patient/other"}],
        "subject": {"reference": "Patient/p1"},
    }
    assert patient_key(observation) == "p1"


def test_references_through_lists_and_absolute_urls() -> None:
    claim = {"resourceType": "Claim", "patient": {"reference": "https://x.example/fhir/Patient/p2"}}
    assert patient_key(claim) == "p2"
    group = {"resourceType": "Group", "member": [{"entity": {"reference": "Patient/p3"}}]}
    assert patient_key(group) == "p3"


def test_resources_outside_the_compartment_have_none() -> None:
    assert patient_key({"resourceType": "Organization", "id": "o"}) is None
    group_subject = {"resourceType": "Observation", "subject": {"reference": "Group/g"}}
    assert patient_key(group_subject) is None
    contained = {"resourceType": "Observation", "subject": {"reference": "#p"}}
    assert patient_key(contained) is None
