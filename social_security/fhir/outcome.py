"""Refusals of the insurance service's FHIR routes as R4 OperationOutcome (operationoutcome.html).

A refusal is a :class:`FhirInvalid`: the kit's :class:`~services.kit.errors.Problem` (so a route
simply lets it propagate) carrying one or more :class:`Issue` values. Each issue has a FHIR
issue type (valueset-issue-type), a diagnostic for the person at the counter, the FHIRPath
expression of the offending element, and the insurance reason code (``NEGATIVE_AMOUNT``,
``NOT_INTEGER``, ``UNKNOWN_CODE`` ...) as ``issue.details.coding`` in :data:`REASON_SYSTEM`, so the
hospital's system can act on it without parsing text.

The OperationOutcome itself, and the renderer, are the kit's (:mod:`services.kit.fhir_outcome`),
shared with the FHIR store: services never import each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.kit.errors import Problem
from services.kit.fhir_outcome import FHIR_JSON, outcome_of, render_operation_outcome
from services.kit.fhir_outcome import Issue as KitIssue

__all__ = [
    "FHIR_JSON",
    "REASON_SYSTEM",
    "FhirInvalid",
    "Issue",
    "outcome_of",
    "render_operation_outcome",
]

# The code system of the insurance service's refusal and adjudication reason codes.
REASON_SYSTEM = "urn:onecard:insurance-reason"


@dataclass(frozen=True, slots=True)
class Issue(KitIssue):
    """An issue with, beside the kit's, the insurance reason code (``issue.details``)."""

    reason: str | None = None

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
        return outcome_of(self)
