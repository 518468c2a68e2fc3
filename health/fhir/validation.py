"""Validate incoming resources against the FHIR R4 structure definitions (``fhir.resources``).

``fhir.resources.R4B`` models are R4-compatible for the content this store accepts (issue 5);
they forbid unknown elements, check primitive formats (id, date, code) and required elements
and choice-type exclusivity. What is stored is the JSON as the client wrote it (with ``meta``
set by the server), never the model's re-serialization: validation only judges.

Statuses follow FHIR R4 http.html#create: 400 when the content cannot be parsed as the resource
(unknown elements, wrong JSON types), 422 when it parses but breaks a rule (a required element
missing, a value not matching its format or an invariant).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import BaseModel, ValidationError

from health.fhir.outcome import Issue, fhir_problem
from services.kit.errors import Problem

# FHIR R4 datatypes.html#id: the logical id of a resource.
ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# A resource type name as FHIR spells them (resourcelist.html).
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")
# Pydantic error types that mean "this JSON is not shaped like the resource" (400); others
# (missing, value_error, pattern mismatches) are rules the content breaks (422).
_STRUCTURAL = frozenset(
    {
        "extra_forbidden",
        "model_type",
        "model_attributes_type",
        "dict_type",
        "list_type",
        "string_type",
        "int_type",
        "int_parsing",
        "float_type",
        "float_parsing",
        "decimal_type",
        "decimal_parsing",
        "bool_type",
        "bool_parsing",
        "is_instance_of",
    }
)
MAX_ISSUES = 20


@lru_cache(maxsize=256)
def model_class(resource_type: str) -> type[BaseModel] | None:
    """The ``fhir.resources`` model of a resource type, or None when FHIR R4 has no such type."""
    if not _TYPE_NAME.fullmatch(resource_type):
        return None
    try:
        cls = get_fhir_model_class(resource_type)
    except (ValueError, KeyError, AttributeError, ImportError):
        return None
    # Data types (HumanName, Quantity) are models too, but not resources.
    if not (isinstance(cls, type) and issubclass(cls, Resource)):
        return None
    return cls


def is_resource_type(name: str) -> bool:
    return model_class(name) is not None


def check_type(resource_type: str) -> None:
    """404 for a URL naming a resource type FHIR R4 does not define (http.html: unknown type)."""
    if not is_resource_type(resource_type):
        raise Problem(404, f"{resource_type!r} is not a FHIR R4 resource type")


def check_id(resource_id: str, *, where: str = "id") -> None:
    if not ID_PATTERN.fullmatch(resource_id):
        raise fhir_problem(
            400,
            [
                Issue(
                    "value",
                    f"{resource_id[:80]!r} is not a FHIR id (1-64 of A-Z a-z 0-9 - .)",
                    (where,),
                )
            ],
        )


def validate_resource(
    resource: Any, *, expected_type: str | None = None, where: str = ""
) -> dict[str, Any]:
    """``resource`` if it is a valid FHIR R4 resource (of ``expected_type``), else a 400/422.

    ``where`` prefixes the expressions, e.g. ``Bundle.entry[3].resource`` inside a bundle.
    """
    prefix = f"{where}." if where else ""
    if not isinstance(resource, dict):
        raise fhir_problem(
            400, [Issue("structure", "a resource must be a JSON object", (where,) if where else ())]
        )
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise fhir_problem(
            400, [Issue("required", "the resource has no resourceType", (f"{prefix}resourceType",))]
        )
    cls = model_class(resource_type)
    if cls is None:
        raise fhir_problem(
            400,
            [
                Issue(
                    "not-supported",
                    f"{resource_type[:64]!r} is not a FHIR R4 resource type",
                    (f"{prefix}resourceType",),
                )
            ],
        )
    if expected_type is not None and resource_type != expected_type:
        raise fhir_problem(
            400,
            [
                Issue(
                    "invalid",
                    f"the resource is a {resource_type}, the URL names {expected_type}",
                    (f"{prefix}resourceType",),
                )
            ],
        )
    try:
        # From JSON text, not the dict: the same checks and errors, in about half the time
        # (pydantic-core parses and validates in one pass; measured on Synthea resources).
        cls.model_validate_json(orjson.dumps(resource))
    except orjson.JSONEncodeError as exc:
        issue = Issue("structure", str(exc)[:200], (where or resource_type,))
        raise fhir_problem(400, [issue]) from None
    except ValidationError as exc:
        issues, status = _issues(exc, f"{where or resource_type}")
        raise fhir_problem(status, issues) from None
    except (ValueError, TypeError) as exc:  # validators outside pydantic's wrapping
        raise fhir_problem(
            422, [Issue("invalid", str(exc)[:300], (where or resource_type,))]
        ) from None
    return resource


def _issues(exc: ValidationError, root: str) -> tuple[list[Issue], int]:
    issues: list[Issue] = []
    status = 422
    for error in exc.errors(include_url=False, include_input=False)[:MAX_ISSUES]:
        path = _expression(root, error.get("loc", ()))
        kind = error.get("type", "")
        if kind in _STRUCTURAL:
            status = 400
        code = {"missing": "required", "extra_forbidden": "structure"}.get(kind, "value")
        message = str(error.get("msg", "invalid"))
        if kind == "extra_forbidden":
            message = "unknown element"
        issues.append(Issue(code, f"{path}: {message}", (path,)))
    return issues, status


def _expression(root: str, loc: tuple[Any, ...]) -> str:
    """A FHIRPath-style expression for a pydantic location (``Patient.name[0].given``)."""
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}"
    return out
