"""SMART App Launch configuration (``/fhir/.well-known/smart-configuration``).

SMART App Launch 2.0 section "SMART on FHIR well-known" has FHIR servers publish where their
authorization server is and what it supports; ours is the platform's identity service, whose
URLs all sit under the public base URL. What is listed is what the identity service really
does: backend services with asymmetric client authentication (``private_key_jwt``, ES256),
SMART v2 scopes, the mobile app's refresh tokens, token exchange, introspection, revocation.
No authorization-code launch exists yet, so no ``authorization_endpoint`` and no launch
capabilities are claimed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from services.kit.app import app_runtime

router = APIRouter(tags=["smart"])


@router.get(
    "/fhir/.well-known/smart-configuration",
    summary="SMART App Launch configuration: the authorization server of this FHIR server",
)
async def smart_configuration(request: Request, response: Response) -> dict[str, Any]:
    issuer = app_runtime(request).settings.public_url.rstrip("/")
    response.headers["Cache-Control"] = "public, max-age=300"
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "token_endpoint": f"{issuer}/identity/oauth2/token",
        "introspection_endpoint": f"{issuer}/identity/oauth2/introspect",
        "revocation_endpoint": f"{issuer}/identity/oauth2/revoke",
        "grant_types_supported": [
            "client_credentials",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "scopes_supported": [
            "system/*.cruds",
            "user/*.cruds",
            "patient/*.rs",
            "offline_access",
        ],
        "response_types_supported": [],
        "capabilities": [
            "client-confidential-asymmetric",
            "permission-v2",
            "permission-patient",
            "permission-user",
        ],
        "code_challenge_methods_supported": [],
    }
