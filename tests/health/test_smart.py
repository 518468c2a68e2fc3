"""The SMART configuration tells a FHIR client where and how to get a token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from health.app import create_app
from health.settings import HealthSettings
from tests.harness import serve_asgi


async def test_smart_configuration_points_at_the_identity_service(
    make_settings: Callable[..., Any],
) -> None:
    settings = make_settings(HealthSettings, public_url="https://onecard.example")
    async with serve_asgi(create_app(settings)) as client:
        response = await client.get("/fhir/.well-known/smart-configuration")
    assert response.status_code == 200
    config = response.json()
    assert config["token_endpoint"] == "https://onecard.example/identity/oauth2/token"
    assert config["jwks_uri"] == "https://onecard.example/.well-known/jwks.json"
    assert "client-confidential-asymmetric" in config["capabilities"]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["ES256"]
    # No authorization-code launch exists, so none is advertised.
    assert "authorization_endpoint" not in config
    assert "launch-standalone" not in config["capabilities"]
