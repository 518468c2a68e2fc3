"""Refusals as FHIR R4 OperationOutcome (operationoutcome.html), for every service with FHIR
routes: the FHIR store's ``/fhir`` and the insurance service's ``/insurance/fhir``.

Service code raises the kit's :class:`~services.kit.errors.Problem` as everywhere else; a
problem may carry ``issues`` (:class:`Issue` values as dicts) to name the offending elements.
:func:`render_operation_outcome`, registered for a path prefix (``register_renderer``), turns
every problem into an OperationOutcome whose issue type follows the HTTP status
(valueset-issue-type), unless its issues say more. Here in the kit, not in one service: services
never import each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from services.kit.context import current_request_id
from services.kit.errors import Problem

FHIR_JSON = "application/fhir+json"

# FHIR R4 valueset-issue-type, by the HTTP status a refusal answers with (http.html lists the
# statuses; the codes are the nearest issue types).
_CODE_BY_STATUS = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "processing",
    429: "throttled",
    503: "transient",
}

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 datatypes.html#id


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue: what went wrong and, when known, which element."""

    code: str  # FHIR R4 valueset-issue-type: invalid, structure, required, value, business-rule...
    diagnostics: str
    expression: tuple[str, ...] = ()
    severity: str = "error"

    def as_json(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


def operation_outcome(issues: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """An OperationOutcome resource listing ``issues`` (as JSON)."""
    body: dict[str, Any] = {"resourceType": "OperationOutcome", "issue": list(issues)}
    request_id = current_request_id()
    if request_id and _FHIR_ID.fullmatch(request_id):
        # The request id is how an operator finds the log lines of this answer; a caller's
        # own X-Request-ID that is no FHIR id (datatypes.html#id) is left out.
        body["id"] = request_id
    return body


def outcome_of(problem: Problem) -> dict[str, Any]:
    """The OperationOutcome for ``problem``: its issues when it names them, else one issue whose
    type follows the HTTP status."""
    issues = problem.extensions.get("issues")
    if issues:
        return operation_outcome(issues)
    severity = "fatal" if problem.status >= 500 else "error"
    code = _CODE_BY_STATUS.get(problem.status, "exception")
    return operation_outcome([Issue(code, problem.detail, severity=severity).as_json()])


def render_operation_outcome(request: Request, problem: Problem) -> Response:
    """The kit's renderer for a service's FHIR routes: every refusal as an OperationOutcome."""
    return Response(
        orjson.dumps(outcome_of(problem)),
        status_code=problem.status,
        media_type=FHIR_JSON,
        headers=problem.headers,
    )
