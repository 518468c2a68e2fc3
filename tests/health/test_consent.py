"""A citizen's privacy Consent decides which other hospitals may read their records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from health.consent import CLIENT_SYSTEM, CONSENT_SCOPE_SYSTEM, evaluate

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
HIV = ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "HIV")


def consent(provision: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "id": fields.pop("id", "c1"),
        "status": fields.pop("status", "active"),
        "scope": {"coding": [{"system": CONSENT_SCOPE_SYSTEM, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p1"},
        "dateTime": fields.pop("dateTime", "2026-01-01"),
        "provision": provision,
        **fields,
    }


def actor(client_id: str) -> dict[str, Any]:
    return {"reference": {"identifier": {"system": CLIENT_SYSTEM, "value": client_id}}}


def test_a_permit_for_a_hospital_covers_its_ordinary_records_only() -> None:
    decision = evaluate(
        [consent({"type": "permit", "actor": [actor("hosp_b")]})], client_id="hosp_b", now=NOW
    )
    assert decision.allowed
    assert decision.consent_id == "c1"
    assert decision.covers([], sensitive=False)
    assert not decision.covers([HIV], sensitive=True)


def test_another_hospital_gets_nothing() -> None:
    decision = evaluate(
        [consent({"type": "permit", "actor": [actor("hosp_b")]})], client_id="hosp_c", now=NOW
    )
    assert not decision.allowed


def test_sensitive_records_need_their_label_in_the_permit() -> None:
    provision = {
        "type": "permit",
        "actor": [actor("hosp_b")],
        "securityLabel": [{"system": HIV[0], "code": HIV[1]}],
    }
    decision = evaluate([consent(provision)], client_id="hosp_b", now=NOW)
    assert decision.covers([HIV], sensitive=True)


def test_a_nested_deny_is_an_exception_to_its_permit() -> None:
    provision = {
        "type": "permit",
        "provision": [{"type": "deny", "actor": [actor("hosp_x")]}],
    }
    assert evaluate([consent(provision)], client_id="hosp_b", now=NOW).allowed
    assert not evaluate([consent(provision)], client_id="hosp_x", now=NOW).allowed


def test_an_organization_reference_names_the_hospital() -> None:
    provision = {"type": "permit", "actor": [{"reference": {"reference": "Organization/o9"}}]}
    assert evaluate(
        [consent(provision)], client_id="hosp_b", organizations=frozenset({"o9"}), now=NOW
    ).allowed
    assert not evaluate([consent(provision)], client_id="hosp_b", now=NOW).allowed


def test_only_active_privacy_consents_within_their_period_count() -> None:
    permit = {"type": "permit", "actor": [actor("hosp_b")]}
    inactive = consent(permit, status="inactive")
    expired = consent({**permit, "period": {"start": "2025-01", "end": "2026-10"}})
    future = consent({**permit, "period": {"start": "2027"}})
    other_scope = consent(permit)
    other_scope["scope"]["coding"][0]["code"] = "research"
    for one in (inactive, expired, future, other_scope):
        assert not evaluate([one], client_id="hosp_b", now=NOW).allowed
    # The last day of a period given as a date is inside it.
    through_today = consent({**permit, "period": {"end": "2026-11-29"}})
    assert evaluate([through_today], client_id="hosp_b", now=NOW).allowed


def test_the_newest_consent_decides() -> None:
    older = consent({"type": "permit", "actor": [actor("hosp_b")]}, id="old", dateTime="2026-01")
    newer = consent({"type": "deny", "actor": [actor("hosp_b")]}, id="new", dateTime="2026-06")
    assert not evaluate([older, newer], client_id="hosp_b", now=NOW).allowed
    assert not evaluate([newer, older], client_id="hosp_b", now=NOW).allowed
