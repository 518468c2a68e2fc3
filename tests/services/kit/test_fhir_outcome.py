"""Refusals as OperationOutcome, shared by the services' FHIR routes."""

from __future__ import annotations

from services.kit.context import reset_request_id, set_request_id
from services.kit.errors import Problem
from services.kit.fhir_outcome import Issue, outcome_of


def test_a_plain_problem_gets_the_issue_type_of_its_status() -> None:
    assert outcome_of(Problem(410, "deleted"))["issue"] == [
        {"severity": "error", "code": "deleted", "diagnostics": "deleted"}
    ]
    assert outcome_of(Problem(503, "later"))["issue"][0]["severity"] == "fatal"
    assert outcome_of(Problem(418, "teapot"))["issue"][0]["code"] == "exception"


def test_named_issues_are_kept_and_the_request_id_is_the_id_when_it_can_be() -> None:
    issue = Issue("value", "bad date", expression=("Observation.effectiveDateTime",))
    problem = Problem(400, "bad date", issues=[issue.as_json()])
    token = set_request_id("req-1")
    try:
        outcome = outcome_of(problem)
    finally:
        reset_request_id(token)
    assert outcome["issue"] == [issue.as_json()]
    assert outcome["id"] == "req-1"
    token = set_request_id("not a FHIR id!")
    try:
        assert "id" not in outcome_of(problem)
    finally:
        reset_request_id(token)
