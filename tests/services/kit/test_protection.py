"""Graded protection: the policy table, the acr rule, and the services' own check."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import ValidationError

from services.kit.app import create_service_app
from services.kit.auth import install
from services.kit.protection import (
    V3_ACT_CODE,
    V3_CONFIDENTIALITY,
    Decision,
    PolicyOverride,
    ProtectionPolicy,
    check_level,
    decide,
    protection_guard,
    refusal_fields,
    require_level,
)
from services.kit.revocation import Revocations
from services.kit.settings import ServiceSettings
from services.kit.tokens import AccessToken
from tests.harness import serve_asgi
from tests.services.kit.test_tokens import access_token, verifier
from tests.services.kit.test_tokens import claims as access_claims

EMBEDDED = pytest.mark.parametrize("backend", ["embedded"], indirect=True)


def token(acr: str) -> AccessToken:
    return AccessToken.from_claims(
        {
            "iss": "i",
            "sub": "p-1",
            "aud": "a",
            "exp": 0,
            "iat": 0,
            "jti": "j",
            "client_id": "c",
            "scope": "",
            "acr": acr,
        }
    )


# --- The default table ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "level"),
    [
        ("GET", "/fhir/Patient/p-1", 3),
        ("POST", "/fhir", 3),
        ("GET", "/fhir/metadata", 1),
        ("HEAD", "/fhir/metadata", 1),
        # Public paths are exact where nothing lies below them.
        ("GET", "/fhir/metadata/Patient", 3),
        ("POST", "/fhir/metadata", 3),
        ("GET", "/audit/consistency/x", 3),
        ("GET", "/healthz/x", 3),
        ("GET", "/fhir/.well-known/smart-configuration", 1),
        ("POST", "/insurance/claims", 3),
        ("GET", "/social-security/benefits", 2),
        ("GET", "/social-security/contributions", 3),
        ("GET", "/insurance/catalogue/XA01", 2),
        ("POST", "/insurance/catalogue", 3),
        ("GET", "/audit/me", 2),
        ("GET", "/audit/entries/7", 3),
        ("GET", "/audit/checkpoints/latest", 1),
        ("GET", "/audit/consistency", 1),
        ("POST", "/audit/checkpoints", 3),  # only reading checkpoints is public
        ("GET", "/identity/oauth2/token", 1),
        ("GET", "/.well-known/jwks.json", 1),
        ("GET", "/healthz", 1),
        # Prefixes match whole segments; anything unlisted is protected.
        ("GET", "/fhirx", 3),
        ("GET", "/identityx/me", 3),
        ("GET", "/somewhere/else", 3),
    ],
)
def test_the_default_table(method: str, path: str, level: int) -> None:
    assert ProtectionPolicy().level_for(method, path) == level


def test_the_longest_prefix_wins_and_a_method_rule_beats_one_without() -> None:
    policy = ProtectionPolicy.from_override(
        PolicyOverride.model_validate(
            {
                "rules": [
                    {"prefix": "/fhir/Organization", "level": 2},
                    {"prefix": "/fhir/Organization", "level": 3, "methods": ["post", "PUT"]},
                    {"prefix": "/fhir/Organization/o-1/*", "level": 4},
                ]
            }
        )
    )
    assert policy.level_for("GET", "/fhir/Organization") == 2
    assert policy.level_for("POST", "/fhir/Organization") == 3
    assert policy.level_for("GET", "/fhir/Organization/o-1/_history") == 4
    assert policy.level_for("GET", "/fhir/Organization/o-1") == 4  # "/*" is sub-paths and itself
    assert policy.level_for("GET", "/fhir/Patient") == 3  # defaults kept


def test_an_exact_rule_holds_for_its_path_only() -> None:
    override = {"rules": [{"prefix": "/fhir/Patient", "level": 2, "exact": True}]}
    policy = ProtectionPolicy.from_override(PolicyOverride.model_validate(override))
    assert policy.level_for("GET", "/fhir/Patient") == 2
    assert policy.level_for("GET", "/fhir/Patient/p-1") == 3


def test_an_override_rule_with_the_same_prefix_replaces_the_default() -> None:
    policy = ProtectionPolicy.from_override(
        PolicyOverride(rules=({"prefix": "/social-security/benefits", "level": 3},))  # type: ignore[arg-type]
    )
    assert policy.level_for("GET", "/social-security/benefits") == 3
    assert sum(r.prefix == "/social-security/benefits" for r in policy.rules) == 1


def test_fhir_types_raise_the_level_of_their_paths_only() -> None:
    policy = ProtectionPolicy.from_override(PolicyOverride(fhir_types={"Observation": 4}))
    assert policy.level_for("GET", "/fhir/Observation") == 4
    assert policy.level_for("GET", "/fhir/Observation/o-1/_history/2") == 4
    assert policy.level_for("GET", "/fhir/Patient/p-1") == 3
    assert policy.level_for("GET", "/fhir/metadata") == 1  # not a type
    # A type never lowers its route: an operator lowers with an explicit rule.
    lower = ProtectionPolicy.from_override(PolicyOverride(fhir_types={"Organization": 1}))
    assert lower.level_for("GET", "/fhir/Organization") == 3


def test_security_labels_raise_a_record_to_level_4() -> None:
    policy = ProtectionPolicy()
    assert policy.record_level("Observation") == 3
    assert policy.record_level("Observation", [(V3_ACT_CODE, "HIV")]) == 4
    assert policy.record_level("Condition", [(V3_ACT_CODE, "PSY")]) == 4
    assert policy.record_level("Condition", [(V3_CONFIDENTIALITY, "R")]) == 4
    assert policy.record_level("Condition", [(V3_CONFIDENTIALITY, "N")]) == 3  # normal
    # The code alone does not do: "HIV" in another code system is something else.
    assert policy.record_level("Condition", [("http://example.org/codes", "HIV")]) == 3
    assert policy.record_level("Condition", [(None, "HIV")]) == 3


def test_an_override_adds_labels_and_types_for_records() -> None:
    override = PolicyOverride(labels={"LOCAL-GENOME": 4}, fhir_types={"MolecularSequence": 4})
    policy = ProtectionPolicy.from_override(override)
    assert policy.record_level("Observation", [("http://example.org/x", "LOCAL-GENOME")]) == 4
    assert policy.record_level("MolecularSequence") == 4
    assert policy.record_level("Observation", [(V3_ACT_CODE, "ETH")]) == 4  # defaults kept


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"rules": [{"prefix": "/fhir", "level": 5}]}, "unknown protection level 5"),
        ({"rules": [{"prefix": "/fhir", "level": 0}]}, "unknown protection level 0"),
        ({"rules": [{"prefix": "/fhir", "level": True}]}, "Input should be a valid integer"),
        ({"rules": [{"prefix": "fhir", "level": 3}]}, "malformed path prefix 'fhir'"),
        ({"rules": [{"prefix": "/fhir/", "level": 3}]}, "malformed path prefix '/fhir/'"),
        ({"rules": [{"prefix": "/a//b", "level": 3}]}, "malformed path prefix '/a//b'"),
        ({"rules": [{"prefix": "/a/../b", "level": 3}]}, "malformed path prefix '/a/../b'"),
        ({"rules": [{"prefix": "/a?x=1", "level": 3}]}, "malformed path prefix '/a?x=1'"),
        ({"rules": [{"prefix": "/a/*/b", "level": 3}]}, "malformed path prefix '/a/*/b'"),
        (
            {"rules": [{"prefix": "/a", "level": 3, "methods": ["FETCH"]}]},
            "unknown HTTP methods ['FETCH']",
        ),
        ({"rules": [{"prefix": "/a", "lvl": 3}]}, "Field required"),
        ({"fhir_types": {"observation": 4}}, "'observation' is not a FHIR resource type name"),
        ({"fhir_types": {"Observation": 9}}, "unknown protection level 9"),
        ({"labels": {"urn:x|": 4}}, "is not a security label"),
        ({"labels": {"HIV": "high"}}, "Input should be a valid integer"),
        ({"level": 3}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_override_stops_start_up_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, override: dict[str, Any], message: str
) -> None:
    monkeypatch.setenv("ONECARD_PROTECTION_POLICY", json.dumps(override))
    with pytest.raises(ValidationError, match="protection_policy") as raised:
        ServiceSettings()
    assert message in str(raised.value)


def test_an_override_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    override = {"rules": [{"prefix": "/social-security/benefits", "level": 3}]}
    monkeypatch.setenv("ONECARD_PROTECTION_POLICY", json.dumps(override))
    policy = ProtectionPolicy.from_override(ServiceSettings().protection_policy)
    assert policy.level_for("GET", "/social-security/benefits") == 3
    assert ServiceSettings.model_fields["protection_policy"].default is None


# --- The acr rule ---------------------------------------------------------------------------

NEEDS_3 = "this route holds level-3 data: it needs card + PIN (acr 2) or an institution's key"


@pytest.mark.parametrize(
    ("level", "acr", "status"),
    [
        (1, None, 200),
        (1, "1", 200),
        (1, "2", 200),
        (1, "3", 200),
        (2, None, 401),
        (2, "1", 200),
        (2, "2", 200),
        (2, "3", 200),
        (3, None, 401),
        (3, "1", 403),
        (3, "2", 200),
        (3, "3", 200),
        (4, None, 401),
        (4, "1", 403),
        (4, "2", 200),
        (4, "3", 200),
    ],
)
def test_the_acr_matrix(level: int, acr: str | None, status: int) -> None:
    decision = decide(level, token(acr) if acr else None, method="GET", path="/x")
    assert (decision.allowed, decision.status) == (status == 200, status)
    assert decision.level == level
    assert decision.acr == acr
    # Level 4 lets the token through, but consent or break-glass must still decide.
    assert decision.needs_more == (level == 4 and status == 200)


def test_a_refusal_says_what_was_needed_and_what_the_token_had() -> None:
    policy = ProtectionPolicy()
    weak = policy.decide("GET", "/fhir/Observation", token("1"))
    assert weak.reason == f"{NEEDS_3} (acr 3); the token has acr 1"
    assert weak.rule == "/fhir"
    none = policy.decide("GET", "/social-security/benefits", None)
    assert none.reason == (
        "this route holds level-2 data: it needs a bearer token (any acr); no bearer token was sent"
    )
    assert (none.status, weak.status) == (401, 403)
    assert weak.acr_values == ("2", "3")


@pytest.mark.parametrize("value", [0, 5, "3", 3.0, None])
def test_check_level_refuses_anything_but_1_to_4(value: Any) -> None:
    with pytest.raises(ValueError, match="unknown protection level"):
        check_level(value)


# --- The services' own check (defence in depth) ---------------------------------------------

router = APIRouter()
refusals: list[tuple[Decision, AccessToken | None]] = []


def record_refusal(decision: Decision, token: AccessToken | None, request: Request) -> None:
    refusals.append((decision, token))


@router.get("/records")
async def records(
    decision: Annotated[Decision, Depends(require_level(3, on_refusal=record_refusal))],
) -> dict[str, Any]:
    return {"level": decision.level, "needs_more": decision.needs_more}


@router.get("/sensitive", dependencies=[Depends(require_level(4))])
async def sensitive() -> dict[str, str]:
    return {"ok": "yes"}


guarded = APIRouter(dependencies=[Depends(protection_guard())])


@guarded.get("/social-security/benefits")
async def benefits() -> dict[str, str]:
    return {"ok": "yes"}


@guarded.get("/fhir/metadata")
async def metadata() -> dict[str, str]:
    return {"resourceType": "CapabilityStatement"}


@asynccontextmanager
async def service(
    make_settings: Callable[..., Any], **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async def on_startup(app: FastAPI) -> None:
        install(app, verifier(), Revocations(app.state.runtime.redis))

    app = create_service_app(
        settings=make_settings(ServiceSettings, **overrides),
        title="protection test",
        routers=[router, guarded],
        on_startup=on_startup,
    )
    async with serve_asgi(app) as client:
        yield client


def bearer(acr: str) -> dict[str, str]:
    return {"authorization": f"Bearer {access_token(acr=acr)}"}


@EMBEDDED
async def test_require_level_refuses_a_weak_token_and_says_why(
    make_settings: Callable[..., Any],
) -> None:
    refusals.clear()
    async with service(make_settings) as client:
        weak = await client.get("/records", headers=bearer("1"))
        none = await client.get("/records")
        strong = await client.get("/records", headers=bearer("2"))
        institution = await client.get("/sensitive", headers=bearer("3"))
        bad = await client.get("/records", headers={"authorization": "Bearer not-a-token"})
    assert weak.status_code == 403
    assert weak.headers["content-type"] == "application/problem+json"
    assert weak.json()["detail"] == f"{NEEDS_3} (acr 3); the token has acr 1"
    assert weak.json()["protection_level"] == 3
    # RFC 9470 section 3: the step-up challenge names the acr values that would do.
    assert 'error="insufficient_user_authentication"' in weak.headers["www-authenticate"]
    assert 'acr_values="2 3"' in weak.headers["www-authenticate"]
    assert none.status_code == 401
    assert none.headers["www-authenticate"] == 'Bearer realm="onecard"'
    assert strong.json() == {"level": 3, "needs_more": False}
    assert institution.status_code == 200
    assert bad.status_code == 401
    assert bad.json()["detail"] == "token is not a compact JWS (three base64url parts)"
    # The refusal hook saw both refusals (the bad token was refused before the policy ran).
    assert [(d.status, d.acr, d.path) for d, _ in refusals] == [
        (403, "1", "/records"),
        (401, None, "/records"),
    ]
    assert [t.sub if t else None for _, t in refusals] == ["p-7f3a9c", None]


@EMBEDDED
async def test_a_router_guard_uses_the_table_and_the_settings_override(
    make_settings: Callable[..., Any],
) -> None:
    async with service(make_settings) as client:
        public = await client.get("/fhir/metadata")
        no_token = await client.get("/social-security/benefits")
        one_factor = await client.get("/social-security/benefits", headers=bearer("1"))
    assert public.status_code == 200
    assert no_token.status_code == 401
    assert one_factor.status_code == 200

    raised = PolicyOverride.model_validate(
        {"rules": [{"prefix": "/social-security/benefits", "level": 3}]}
    )
    async with service(make_settings, protection_policy=raised) as client:
        one_factor = await client.get("/social-security/benefits", headers=bearer("1"))
        two_factors = await client.get("/social-security/benefits", headers=bearer("2"))
    assert one_factor.status_code == 403
    assert two_factors.status_code == 200


def test_a_refusal_carries_what_its_audit_entry_needs() -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/fhir/Condition",
        "headers": [],
        "client": ("10.0.0.7", 5555),
    }
    weak = AccessToken.from_claims({**access_claims(), "acr": "1", "card": "C-9"})
    decision = ProtectionPolicy().decide("GET", "/fhir/Condition", weak)
    fields = refusal_fields(decision, weak, Request(scope))
    assert fields == {
        "event": "protection.refused",
        "method": "GET",
        "path": "/fhir/Condition",
        "protection_level": 3,
        "rule": "/fhir",
        "status": 403,
        "reason": f"{NEEDS_3} (acr 3); the token has acr 1",
        "acr": "1",
        "subject": "p-7f3a9c",
        "client_id": "terminal-app",
        "actor": weak.act,
        "card": "C-9",
        "source_address": "10.0.0.7",
    }
