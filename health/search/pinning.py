"""Searches pinned to one patient: ``Observation?patient=X&code=...`` can only match resources
whose ``patient_key`` is X, and the index tables carry that key on every row.

A resource's ``patient_key`` is the Patient that the first element of its type's patient
compartment refers to (health/fhir/compartment.py). For the types below that element is a
single reference (cardinality 0..1 or 1..1 in FHIR R4) and the search parameters named beside it
search exactly that element (their R4 expressions are ``<Type>.<element>``, or that with
``.where(resolve() is Patient)``; a test checks them against the official definitions). So a
resource matching ``patient=X`` (or ``subject=Patient/X``) refers to Patient X there, and its
``patient_key`` is X: the other conditions of the search may then look only at X's index rows
(``ix_search_token_patient``, ``ix_search_date_patient``), a direct index lookup instead of a
probe per resource of the patient.

Anything else (several values, other modifiers, an absolute URL, a type not listed, a subject
that may be a Group) pins nothing and is searched as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Type -> (the compartment element that decides patient_key, the parameters searching it).
SINGLE_PATIENT_ELEMENT: dict[str, tuple[str, frozenset[str]]] = {
    **{
        resource_type: ("subject", frozenset({"patient", "subject"}))
        for resource_type in (
            "CarePlan",
            "CareTeam",
            "Condition",
            "DiagnosticReport",
            "DocumentReference",
            "Encounter",
            "Goal",
            "ImagingStudy",
            "MedicationAdministration",
            "MedicationRequest",
            "Observation",
            "Procedure",
        )
    },
    **{
        resource_type: ("patient", frozenset({"patient"}))
        for resource_type in (
            "AllergyIntolerance",
            "Claim",
            "ExplanationOfBenefit",
            "Immunization",
        )
    },
}

# An id as FHIR R4 datatypes.html#id has it: then "Patient/<id>" reads the same to the search
# index (values.parse_reference) and to the compartment (references.reference_target).
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def pinned_patient(resource_type: str, filters: Iterable[tuple[str, str]]) -> str | None:
    """The Patient id every match of these ``key=value`` filters has as ``patient_key``, if
    one of them pins it; None otherwise."""
    element = SINGLE_PATIENT_ELEMENT.get(resource_type)
    if element is None:
        return None
    _, params = element
    for key, value in filters:
        name, _, modifier = key.partition(":")
        if name not in params or "," in value:
            continue
        patient = _patient_id(name, modifier, value)
        if patient is not None:
            return patient
    return None


def _patient_id(name: str, modifier: str, value: str) -> str | None:
    if modifier == "Patient" or (not modifier and value.startswith("Patient/")):
        candidate = value.removeprefix("Patient/")
    elif not modifier and name == "patient":
        candidate = value  # the patient parameter refers to Patients only
    else:
        return None  # subject=X may be a Group; other modifiers change the match
    return candidate if _ID.fullmatch(candidate) else None
