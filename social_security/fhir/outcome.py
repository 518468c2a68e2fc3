"""Refusals of the insurance service's FHIR routes as R4 OperationOutcome (operationoutcome.html).

A refusal is a :class:`FhirInvalid`: the kit's :class:`~services.kit.errors.Problem` (so a route
simply lets it propagate) carrying one or more :class:`Issue` values. Each issue has a FHIR
issue type (valueset-issue-type), a diagnostic for the person at the counter, the FHIRPath
expression of the offending element, and the insurance reason code (``NEGATIVE_AMOUNT``,
``NOT_INTEGER``, ``UNKNOWN_CODE`` ...) as ``issue.details.coding`` in :data:`REASON_SYSTEM`, so the
hospital's system can act on it without parsing text.

Written here rather than imported from the FHIR store (``health.fhir.outcome``): services never
import each other (CONTRIBUTING.md, "Dependencies point one way").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from services.kit.context import current_request_id
from services.kit.errors import Problem

FHIR_JSON = "application/fhir+json"

# The code system of the insurance service's refusal and adjudication reason codes.
REASON_SYSTEM = "urn:onecard:insurance-reason"


# FHIR R4 valueset-issue-type by HTTP status, for problems raised without issues.
_CODE_BY_STATUS = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    409: "conflict",
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
    """One ``OperationOutcome.issue``: what was wrong, where, and the reason code."""

    code: str  # FHIR R4 valueset-issue-type: invalid, structure, required, value, business-rule...
    diagnostics: str
    expression: tuple[str, ...] = ()
    reason: str | None = None
    severity: str = "error"

    def as_json(self) -> dict[str, Any]:
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code}
        if self.reason:
            issue["details"] = {"coding": [{"system": REASON_SYSTEM, "code": self.reason}]}
        issue["diagnostics"] = self.diagnostics
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


class FhirInvalid(Problem):
    """A refused FHIR request: 400 when it is no readable resource, 422 when a readable
    resource breaks a business rule (FHIR R4 http.html#create: "422 Unprocessable Entity - the
    proposed resource violated applicable FHIR profiles or server business rules").

    ``status``, ``issue_code``, ``expression`` and ``reason`` describe the first issue; all of
    them are in ``issues`` (a Claim with three bad lines is refused once, naming all three).
    """

    def __init__(self, status: int, issues: Sequence[Issue]) -> None:
        if status not in (400, 422):
            raise ValueError(f"a refused FHIR resource is a 400 or a 422, not a {status}")
        if not issues:
            raise ValueError("a refusal names at least one issue")
        self.issues = tuple(issues)
        detail = "; ".join(issue.diagnostics for issue in self.issues)
        super().__init__(status, detail, issues=[issue.as_json() for issue in self.issues])

    @classmethod
    def one(
        cls,
        status: int,
        diagnostics: str,
        *,
        code: str,
        expression: str | None = None,
        reason: str | None = None,
    ) -> FhirInvalid:
        """A refusal with a single issue."""
        issue = Issue(
            code=code,
            diagnostics=diagnostics,
            expression=(expression,) if expression else (),
            reason=reason,
        )
        return cls(status, [issue])

    @property
    def issue_code(self) -> str:
        return self.issues[0].code

    @property
    def expression(self) -> tuple[str, ...]:
        return self.issues[0].expression

    @property
    def reason(self) -> str | None:
        return self.issues[0].reason

    @property
    def reasons(self) -> tuple[str, ...]:
        """Every reason code of the refusal, in the order of its issues, without repeats."""
        return tuple(dict.fromkeys(issue.reason for issue in self.issues if issue.reason))

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def operation_outcome(issues: Sequence[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource listing ``issues``; its id is the request id when that is
    a valid FHIR id (how an operator finds the log lines of this answer)."""
    body: dict[str, Any] = {"resourceType": "OperationOutcome"}
    request_id = current_request_id()
    if request_id and _FHIR_ID.fullmatch(request_id):
        body["id"] = request_id
    body["issue"] = [issue.as_json() for issue in issues]
    return body


def outcome_of(problem: Problem) -> dict[str, Any]:
    """The OperationOutcome of any problem: its issues when it names them, else one issue whose
    type follows the HTTP status."""
    if isinstance(problem, FhirInvalid):
        return problem.outcome()
    issues = problem.extensions.get("issues")
    if issues:
        body = operation_outcome([])
        body["issue"] = list(issues)
        return body
    severity = "fatal" if problem.status >= 500 else "error"
    code = _CODE_BY_STATUS.get(problem.status, "exception")
    return operation_outcome([Issue(code=code, diagnostics=problem.detail, severity=severity)])


def render_operation_outcome(request: Request, problem: Problem) -> Response:
    """A renderer for the kit (``register_renderer(app, prefix, render_operation_outcome)``):
    every refusal on the service's FHIR routes as an OperationOutcome."""
    return Response(
        orjson.dumps(outcome_of(problem)),
        status_code=problem.status,
        media_type=FHIR_JSON,
        headers=problem.headers,
    )
