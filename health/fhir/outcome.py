"""Errors under /fhir as FHIR R4 OperationOutcome (operationoutcome.html).

Service code raises the kit's :class:`~services.kit.errors.Problem` as everywhere else; a
problem may carry ``issues`` (a list of :class:`Issue` as dicts) to name the offending
elements. The renderer registered for ``/fhir`` (:mod:`services.kit.fhir_outcome`, shared with
the insurance service's FHIR routes) turns every problem into an OperationOutcome whose issue
code follows the HTTP status (FHIR R4 valueset-issue-type), unless issues say more.
"""

from __future__ import annotations

from typing import Any

from services.kit.errors import Problem
from services.kit.fhir_outcome import Issue, outcome_of, render_operation_outcome

__all__ = ["Issue", "fhir_problem", "information", "outcome_of", "render_operation_outcome"]


def fhir_problem(status: int, issues: list[Issue], **kwargs: Any) -> Problem:
    """A problem whose OperationOutcome lists ``issues`` (its detail joins their diagnostics)."""
    detail = "; ".join(issue.diagnostics for issue in issues) or "invalid request"
    return Problem(status, detail, issues=[issue.as_json() for issue in issues], **kwargs)


def information(diagnostics: str) -> dict[str, Any]:
    """An informational OperationOutcome (``Prefer: return=OperationOutcome`` on success)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": diagnostics}],
    }
