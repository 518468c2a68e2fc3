"""The patient a resource belongs to: FHIR R4 compartmentdefinition-patient.html.

For each resource type in the Patient compartment, the definition lists the search parameters
that link a resource to a patient; here they are written as the element paths those
parameters search (searchparameter-registry). The first element holding a reference to a
Patient decides: that Patient's logical id is the resource's ``patient_key``, the key that
"patient's records" questions and future sharding use. A Patient's key is its own id.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from health.fhir.references import reference_target

# The platform's naming system for citizens: a Patient carries its citizen's pseudonymous id
# (never the national ID number) as an identifier in it (issue 5; health.citizens).
CITIZEN_SYSTEM = "urn:onecard:citizen"

# compartmentdefinition-patient.html, element paths of each type's parameters, most specific
# first (the subject before a performer who may also be a patient).
PATIENT_COMPARTMENT: dict[str, tuple[str, ...]] = {
    "Account": ("subject",),
    "AdverseEvent": ("subject",),
    "AllergyIntolerance": ("patient", "recorder", "asserter"),
    "Appointment": ("participant.actor",),
    "AppointmentResponse": ("actor",),
    "AuditEvent": ("entity.what",),
    "Basic": ("subject", "author"),
    "BodyStructure": ("patient",),
    "CarePlan": ("subject", "activity.detail.performer"),
    "CareTeam": ("subject", "participant.member"),
    "ChargeItem": ("subject",),
    "Claim": ("patient", "payee.party"),
    "ClaimResponse": ("patient",),
    "ClinicalImpression": ("subject",),
    "Communication": ("subject", "sender", "recipient"),
    "CommunicationRequest": ("subject", "sender", "recipient", "requester"),
    "Composition": ("subject", "author", "attester.party"),
    "Condition": ("subject", "asserter"),
    "Consent": ("patient",),
    "Coverage": ("beneficiary", "subscriber", "policyHolder", "payor"),
    "CoverageEligibilityRequest": ("patient",),
    "CoverageEligibilityResponse": ("patient",),
    "DetectedIssue": ("patient",),
    "DeviceRequest": ("subject", "performer"),
    "DeviceUseStatement": ("subject",),
    "DiagnosticReport": ("subject",),
    "DocumentManifest": ("subject", "author", "recipient"),
    "DocumentReference": ("subject", "author"),
    "Encounter": ("subject",),
    "EnrollmentRequest": ("candidate",),
    "EpisodeOfCare": ("patient",),
    "ExplanationOfBenefit": ("patient", "payee.party"),
    "FamilyMemberHistory": ("patient",),
    "Flag": ("subject",),
    "Goal": ("subject",),
    "Group": ("member.entity",),
    "ImagingStudy": ("subject",),
    "Immunization": ("patient",),
    "ImmunizationEvaluation": ("patient",),
    "ImmunizationRecommendation": ("patient",),
    "Invoice": ("subject", "recipient"),
    "List": ("subject", "source"),
    "MeasureReport": ("subject",),
    "Media": ("subject",),
    "MedicationAdministration": ("subject", "performer.actor"),
    "MedicationDispense": ("subject", "receiver"),
    "MedicationRequest": ("subject",),
    "MedicationStatement": ("subject",),
    "MolecularSequence": ("patient",),
    "NutritionOrder": ("patient",),
    "Observation": ("subject", "performer"),
    "Person": ("link.target",),
    "Procedure": ("subject", "performer.actor"),
    "Provenance": ("target",),
    "QuestionnaireResponse": ("subject", "author"),
    "RelatedPerson": ("patient",),
    "RequestGroup": ("subject", "action.participant"),
    "ResearchSubject": ("individual",),
    "RiskAssessment": ("subject",),
    "Schedule": ("actor",),
    "ServiceRequest": ("subject", "performer"),
    "Specimen": ("subject",),
    "SupplyDelivery": ("patient",),
    "SupplyRequest": ("requester",),
    "VisionPrescription": ("patient",),
}


def patient_key(resource: dict[str, Any]) -> str | None:
    """The logical id of the Patient whose compartment ``resource`` is in, or None."""
    resource_type = resource.get("resourceType")
    if resource_type == "Patient":
        own = resource.get("id")
        return own if isinstance(own, str) else None
    for path in PATIENT_COMPARTMENT.get(str(resource_type), ()):
        for value in _values(resource, path.split(".")):
            if isinstance(value, dict):
                target = reference_target(value.get("reference"))
                if target is not None and target[0] == "Patient":
                    return target[1]
    return None


def _values(node: Any, parts: list[str]) -> Iterator[Any]:
    """Every value at an element path, through lists (FHIRPath's flattening)."""
    if isinstance(node, list):
        for item in node:
            yield from _values(item, parts)
        return
    if not parts:
        yield node
        return
    if isinstance(node, dict) and parts[0] in node:
        yield from _values(node[parts[0]], parts[1:])
