"""The gateway's graded-protection check: the route's level against the verified token's acr,
refused before anything reaches the service (DESIGN.md "Audit and graded protection")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.requests import Request

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.kit.protection import Decision, PolicyOverride
from services.kit.tokens import AccessToken
from tests.gateway.conftest import RunningDouble, TokenIssuer
from tests.harness import serve_asgi

MakeSettings = Callable[..., GatewaySettings]
EMBEDDED = pytest.mark.parametrize("backend", ["embedded"], indirect=True)
NEEDS_3 = (
    "this route holds level-3 data: it needs card + PIN (acr 2) or an institution's key (acr 3)"
)


def routed(upstream: RunningDouble) -> dict[str, str]:
    return dict.fromkeys(("identity", "health", "social_security", "audit"), upstream.url)


class Refusals(list[tuple[Decision, AccessToken | None, str]]):
    """A refusal hook that records what an audit entry would be made from."""

    def __call__(self, decision: Decision, token: AccessToken | None, request: Request) -> None:
        self.append((decision, token, request.headers.get("x-request-id") or ""))


def audience(path: str) -> str:
    return "/" + path.split("/")[1]


async def test_a_one_factor_token_to_health_records_gets_an_operation_outcome_and_no_forwarding(
    gateway_settings: MakeSettings, upstream: RunningDouble, issuer: TokenIssuer
) -> None:
    refusals = Refusals()
    app = create_app(gateway_settings(routed(upstream)), on_refusal=refusals)
    token = issuer.bearer(acr="1", amr=["sc", "hwk"], audience="/fhir", card="C-0042")
    async with serve_asgi(app) as client:
        response = await client.get(
            "/fhir/Observation?patient=p-1", headers={"Authorization": token}
        )
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/fhir+json"
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    [issue] = body["issue"]
    assert issue["severity"] == "error"
    assert issue["code"] == "forbidden"
    assert issue["diagnostics"] == f"{NEEDS_3}; the token has acr 1"
    assert body["id"] == response.headers["x-request-id"]
    # RFC 9470: what would do, for a client that can step up.
    assert 'acr_values="2 3"' in response.headers["www-authenticate"]
    assert upstream.seen == []
    [(decision, refused_token, _)] = refusals
    assert (decision.level, decision.status, decision.acr) == (3, 403, "1")
    assert decision.path == "/fhir/Observation"
    assert refused_token is not None
    assert refused_token.card == "C-0042"


@EMBEDDED
@pytest.mark.parametrize(
    ("path", "claims"),
    [
        ("/fhir/Observation", {"acr": "2"}),  # card + PIN
        ("/insurance/claims", {"acr": "2"}),
        # A hospital's backend authenticated by its registered key (DESIGN.md "Tokens").
        ("/fhir/Observation", {"acr": "3", "amr": ["swk"], "client_id": "hospital-7"}),
        ("/insurance/claims", {"acr": "3", "amr": ["swk"], "client_id": "hospital-7"}),
        ("/audit/entries/1", {"acr": "3", "amr": ["swk"], "client_id": "auditor"}),
        # Level 2 and 1 routes take one factor.
        ("/social-security/benefits", {"acr": "1"}),
        ("/audit/me", {"acr": "1"}),
        ("/identity/me", {"acr": "1"}),
    ],
)
async def test_a_token_meeting_the_level_is_forwarded(
    gateway_settings: MakeSettings,
    upstream: RunningDouble,
    issuer: TokenIssuer,
    path: str,
    claims: dict[str, Any],
) -> None:
    authorization = issuer.bearer(audience=audience(path), **claims)
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        response = await client.get(path, headers={"Authorization": authorization})
    assert response.status_code == 200, response.text
    [seen] = upstream.seen
    assert (seen.path, seen.all("authorization")) == (path, [authorization])


@EMBEDDED
@pytest.mark.parametrize("path", ["/insurance/claims", "/audit/entries", "/audit/checkpoints"])
async def test_a_one_factor_token_writing_elsewhere_gets_403_problem_json(
    gateway_settings: MakeSettings, upstream: RunningDouble, issuer: TokenIssuer, path: str
) -> None:
    token = issuer.bearer(acr="1", audience=audience(path))
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        response = await client.post(path, headers={"Authorization": token}, content=b"{}")
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["detail"] == f"{NEEDS_3}; the token has acr 1"
    assert body["protection_level"] == 3
    assert body["request_id"] == response.headers["x-request-id"]
    assert upstream.seen == []


async def test_without_a_token_a_protected_route_gets_401_and_public_ones_pass(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    refusals = Refusals()
    settings = gateway_settings(routed(upstream), protection_require_token=True)
    async with serve_asgi(create_app(settings, on_refusal=refusals)) as client:
        benefits = await client.get("/social-security/benefits")
        records = await client.get("/fhir/Patient")
        public = [
            await client.get(path)
            for path in (
                "/fhir/metadata",
                "/fhir/.well-known/smart-configuration",
                "/audit/checkpoints/latest",
                "/.well-known/jwks.json",
                "/identity/oauth2/token",
            )
        ]
    assert benefits.status_code == 401
    assert benefits.headers["content-type"] == "application/problem+json"
    assert benefits.headers["www-authenticate"] == 'Bearer realm="onecard"'
    assert benefits.json()["detail"] == (
        "this route holds level-2 data: it needs a bearer token (any acr); no bearer token was sent"
    )
    assert records.status_code == 401
    assert records.headers["content-type"] == "application/fhir+json"
    assert records.json()["issue"][0]["code"] == "login"
    assert records.json()["issue"][0]["diagnostics"] == f"{NEEDS_3}; no bearer token was sent"
    assert [r.status_code for r in public] == [200] * 5
    assert [s.path for s in upstream.seen] == [
        "/fhir/metadata",
        "/fhir/.well-known/smart-configuration",
        "/audit/checkpoints/latest",
        "/.well-known/jwks.json",
        "/identity/oauth2/token",
    ]
    assert [(d.status, d.path) for d, _, _ in refusals] == [
        (401, "/social-security/benefits"),
        (401, "/fhir/Patient"),
    ]


@EMBEDDED
async def test_outside_production_a_request_without_a_token_is_left_to_the_service(
    gateway_settings: MakeSettings, upstream: RunningDouble, issuer: TokenIssuer
) -> None:
    # The default outside production: the service refuses it (it requires a token itself); a
    # token that falls short is refused here all the same.
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        without = await client.get("/fhir/Patient")
        weak = await client.get(
            "/fhir/Patient", headers={"Authorization": issuer.bearer(acr="1", audience="/fhir")}
        )
    assert without.status_code == 200
    assert weak.status_code == 403
    assert [s.path for s in upstream.seen] == ["/fhir/Patient"]


@EMBEDDED
async def test_an_operators_override_is_enforced(
    gateway_settings: MakeSettings, upstream: RunningDouble, issuer: TokenIssuer
) -> None:
    override = PolicyOverride.model_validate(
        {
            "rules": [{"prefix": "/social-security/benefits", "level": 3}],
            "fhir_types": {"Observation": 4},
        }
    )
    settings = gateway_settings(routed(upstream), protection_policy=override)
    async with serve_asgi(create_app(settings)) as client:
        benefits = await client.get(
            "/social-security/benefits",
            headers={"Authorization": issuer.bearer(acr="1", audience="/insurance")},
        )
        observations = await client.get(
            "/fhir/Observation", headers={"Authorization": issuer.bearer(audience="/fhir")}
        )
    assert benefits.status_code == 403
    # Level 4: the token may pass; consent or break-glass is for the FHIR store to decide.
    assert observations.status_code == 200
    assert len(upstream.seen) == 1


def test_production_refuses_tokenless_requests_at_the_gateway_and_cannot_be_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ONECARD_ENVIRONMENT", "production")
    assert GatewaySettings().protection_requires_token is True
    monkeypatch.setenv("ONECARD_PROTECTION_REQUIRE_TOKEN", "false")
    with pytest.raises(ValidationError, match="ONECARD_PROTECTION_REQUIRE_TOKEN=false is refused"):
        GatewaySettings()
    monkeypatch.setenv("ONECARD_ENVIRONMENT", "development")
    assert GatewaySettings().protection_requires_token is False
    monkeypatch.setenv("ONECARD_PROTECTION_REQUIRE_TOKEN", "true")
    assert GatewaySettings().protection_requires_token is True


def test_a_bad_policy_stops_the_gateway_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONECARD_PROTECTION_POLICY", '{"rules": [{"prefix": "/fhir", "level": 7}]}')
    with pytest.raises(ValidationError, match="unknown protection level 7"):
        create_app()
