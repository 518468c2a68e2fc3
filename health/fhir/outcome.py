"""Errors under /fhir as FHIR R4 OperationOutcome (operationoutcome.html).

Service code raises the kit's :class:`~services.kit.errors.Problem` as everywhere else; a
problem may carry ``issues`` (a list of :class:`Issue` as dicts) to name the offending
elements. The renderer registered for ``/fhir`` turns every problem into an OperationOutcome
whose issue code follows the HTTP status (FHIR R4 valueset-issue-type), unless issues say more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from health.fhir.media import FHIR_JSON
from services.kit.context import current_request_id
from services.kit.errors import Problem

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


_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue: what went wrong and, when known, which element."""

    code: str
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


def fhir_problem(status: int, issues: list[Issue], **kwargs: Any) -> Problem:
    """A problem whose OperationOutcome lists ``issues`` (its detail joins their diagnostics)."""
    detail = "; ".join(issue.diagnostics for issue in issues) or "invalid request"
    return Problem(status, detail, issues=[issue.as_json() for issue in issues], **kwargs)


def outcome_of(problem: Problem) -> dict[str, Any]:
    """The OperationOutcome resource for ``problem``."""
    issues = problem.extensions.get("issues")
    if not issues:
        issues = [
            {
                "severity": "fatal" if problem.status >= 500 else "error",
                "code": _CODE_BY_STATUS.get(problem.status, "exception"),
                "diagnostics": problem.detail,
            }
        ]
    body: dict[str, Any] = {"resourceType": "OperationOutcome", "issue": issues}
    request_id = current_request_id()
    if request_id and _FHIR_ID.fullmatch(request_id):
        # The request id is how an operator finds the log lines of this answer; a caller's
        # own X-Request-ID that is no FHIR id (datatypes.html#id) is left out.
        body["id"] = request_id
    return body


def information(diagnostics: str) -> dict[str, Any]:
    """An informational OperationOutcome (``Prefer: return=OperationOutcome`` on success)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": diagnostics}],
    }


def render_operation_outcome(request: Request, problem: Problem) -> Response:
    """The kit's renderer for ``/fhir``: every refusal as an OperationOutcome."""
    return Response(
        orjson.dumps(outcome_of(problem)),
        status_code=problem.status,
        media_type=FHIR_JSON,
        headers=problem.headers,
    )
