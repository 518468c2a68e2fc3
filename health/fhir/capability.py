"""``GET /fhir/metadata``: the CapabilityStatement (FHIR R4 capabilitystatement.html).

It states only what this server really does: JSON only, the interactions of ``health.store``
for every resource type the search definitions cover, and the search parameters of each type
(from ``health.search.definitions``) when the search routes are mounted in the app.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response
from starlette.routing import Match

from health.fhir.media import base_url, check_format, fhir_json
from health.search.definitions import definitions

router = APIRouter(tags=["fhir"])

_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
]


def search_mounted(app: FastAPI) -> bool:
    """Whether type-level search (``GET /fhir/Patient``, health.search) is served by this app.

    Asked of the app's routing itself, the way a request would be matched, so the answer
    holds however the search routes were mounted.
    """
    return serves(app, "GET", "/fhir/Patient")


def serves(app: FastAPI, method: str, path: str) -> bool:
    """Whether a request ``method path`` would reach one of the app's routes."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    return any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)


# The operations this server runs, by the canonical OperationDefinition each implements
# (operations.html; capabilitystatement-definitions.html#CapabilityStatement.rest.operation).
EVERYTHING = {
    "name": "everything",
    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    "documentation": "The Patient, its compartment and the records outside any compartment "
    "they refer to, as a paged searchset; _since, _type and _count are supported, start and "
    "end are not.",
}
VALIDATE = {
    "name": "validate",
    "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    "documentation": "Checks against the base FHIR R4 definitions (profiles are not checked); "
    "modes create, update and delete; stores nothing.",
}


# Bulk Data Access v2 (hl7.org/fhir/uv/bulkdata/export.html), served by health.bulk: export at
# system, Patient and Group level; NDJSON only; _type, _since and _outputFormat.
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
_BULK_NOTE = (
    "Asynchronous (Prefer: respond-async), kicked off by GET or by POST with a Parameters "
    "body; application/fhir+ndjson, with _type, _since and _outputFormat; _typeFilter, "
    "_elements and patient are not supported."
)
BULK_EXPORTS = {
    None: {
        "name": "export",
        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
        "documentation": _BULK_NOTE,
    },
    "Patient": {
        "name": "export",
        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
        "documentation": _BULK_NOTE,
    },
    "Group": {
        "name": "export",
        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
        "documentation": _BULK_NOTE,
    },
}


def declare_bulk_export(statement: dict[str, Any]) -> None:
    """Add the Bulk Data ``$export`` operations to ``statement`` (when they are served)."""
    statement["instantiates"] = [BULK_DATA]
    rest = statement["rest"][0]
    rest.setdefault("operation", []).append(BULK_EXPORTS[None])
    for entry in rest["resource"]:
        operation = BULK_EXPORTS.get(entry["type"])
        if operation is not None:
            entry.setdefault("operation", []).append(operation)


def search_parameters(resource_type: str) -> list[dict[str, Any]]:
    """The search parameters of one type, as CapabilityStatement.rest.resource.searchParam."""
    params = definitions().params(resource_type)
    return [
        {"name": name, "type": param.type, **({"definition": param.url} if param.url else {})}
        for name, param in sorted(params.items())
    ]


def capability_statement(
    *, base: str, version: str, search: bool, everything: bool = False, validate: bool = False
) -> dict[str, Any]:
    """The CapabilityStatement of this server (``search``: type-level search is mounted;
    ``everything``, ``validate``: those operations are)."""
    resources = []
    for resource_type in sorted(definitions().resource_types):
        interactions = [*_INTERACTIONS, *(["search-type"] if search else [])]
        entry: dict[str, Any] = {
            "type": resource_type,
            "interaction": [{"code": code} for code in interactions],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "local"],
        }
        if search:
            entry["searchParam"] = search_parameters(resource_type)
        if everything and resource_type == "Patient":
            entry["operation"] = [EVERYTHING]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-29",
        "publisher": "onecard",
        "kind": "instance",
        "software": {"name": "onecard health record store", "version": version},
        "implementation": {"description": "onecard FHIR R4 store", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "cors": False,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "description": "SMART App Launch v2 scopes on RFC 9068 access tokens",
                },
                "resource": resources,
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                ],
                **({"operation": [VALIDATE]} if validate else {}),
            }
        ],
    }


@router.get(
    "/fhir/metadata",
    summary="The CapabilityStatement: what this FHIR server supports (http.html#capabilities)",
    response_class=Response,
    responses={200: {"content": {"application/fhir+json": {}}}},
)
async def metadata(request: Request) -> Response:
    check_format(request)
    body = capability_statement(
        base=base_url(request),
        version=request.app.version,
        search=search_mounted(request.app),
        everything=serves(request.app, "GET", "/fhir/Patient/example/$everything"),
        validate=serves(request.app, "POST", "/fhir/Patient/$validate"),
    )
    if serves(request.app, "GET", "/fhir/$export"):
        declare_bulk_export(body)
    return fhir_json(body, headers={"Cache-Control": "public, max-age=300"})
