"""Token-server routes: discovery, JWKS (RFC 8414, RFC 7517) and the OAuth 2.0 endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from identity.scopes import PURPOSES
from identity.tokens import service
from identity.tokens.assertions import authenticate_client
from identity.tokens.forms import OAuthError, read_form, required
from identity.tokens.issuer import TokenIssuer
from services.kit.app import app_runtime
from services.kit.deps import SessionDep
from services.kit.revocation import Revocations
from services.kit.tokens import ALGORITHM, TokenVerifier

TOKEN_PATH = "/identity/oauth2/token"  # noqa: S105 - a URL path, not a secret
INTROSPECT_PATH = "/identity/oauth2/introspect"
REVOKE_PATH = "/identity/oauth2/revoke"
JWKS_PATH = "/.well-known/jwks.json"

CLIENT_CREDENTIALS = "client_credentials"

router = APIRouter(tags=["tokens"])

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 section 5.1


def _issuer(request: Request) -> TokenIssuer:
    issuer: TokenIssuer = request.app.state.token_issuer
    return issuer


def _verifier(request: Request) -> TokenVerifier:
    verifier: TokenVerifier = request.app.state.token_verifier
    return verifier


def _revocations(request: Request) -> Revocations:
    revocations: Revocations = request.app.state.revocations
    return revocations


def endpoint(request: Request, path: str) -> str:
    """Public URL of one of our endpoints (the audience of client assertions)."""
    return _issuer(request).issuer.rstrip("/") + path


@router.get(JWKS_PATH, summary="The token-signing keys: current, next and recently retired")
async def jwks(request: Request, response: Response) -> dict[str, Any]:
    # Short caching: verifiers refetch on an unknown kid anyway, and the next key is published
    # long before it signs.
    response.headers["Cache-Control"] = "public, max-age=60"
    return _issuer(request).ring.jwks()


@router.get(
    "/.well-known/openid-configuration",
    summary="Authorization server metadata (OIDC discovery, RFC 8414)",
)
async def discovery(request: Request) -> dict[str, Any]:
    issuer = _issuer(request).issuer.rstrip("/")
    return {
        "issuer": issuer,
        "jwks_uri": issuer + JWKS_PATH,
        "token_endpoint": issuer + TOKEN_PATH,
        "introspection_endpoint": issuer + INTROSPECT_PATH,
        "revocation_endpoint": issuer + REVOKE_PATH,
        "grant_types_supported": [CLIENT_CREDENTIALS],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": [ALGORITHM],
        "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
        "revocation_endpoint_auth_methods_supported": ["private_key_jwt"],
        "response_types_supported": [],
        "subject_types_supported": ["pairwise"],
        "acr_values_supported": ["1", "2", "3"],
        "scopes_supported": sorted({s for p in PURPOSES.values() for s in p.scopes}),
        "access_token_signing_alg_values_supported": [ALGORITHM],
    }


async def _client(request: Request, session: SessionDep, form: dict[str, str]) -> Any:
    settings = app_runtime(request).settings
    return await authenticate_client(
        session=session,
        redis=app_runtime(request).redis,
        assertion_type=form.get("client_assertion_type"),
        assertion=form.get("client_assertion"),
        token_endpoint=endpoint(request, TOKEN_PATH),
        leeway=settings.token_leeway,
    )


@router.post(
    TOKEN_PATH,
    summary="OAuth 2.0 token endpoint (client_credentials with private_key_jwt)",
    openapi_extra={
        "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {}}}}
    },
)
async def token(request: Request, session: SessionDep) -> JSONResponse:
    form = await read_form(request)
    grant = required(form, "grant_type")
    if grant != CLIENT_CREDENTIALS:
        raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")
    client = await _client(request, session, form)
    issued = service.client_credentials(
        client=client, issuer=_issuer(request), requested_scope=form.get("scope")
    )
    return JSONResponse(service.token_response(issued), headers=_NO_STORE)


@router.post(INTROSPECT_PATH, summary="Token introspection (RFC 7662)")
async def introspect(request: Request, session: SessionDep) -> JSONResponse:
    form = await read_form(request)
    await _client(request, session, form)  # section 2.1: the caller must be authorized
    result = await service.introspect(
        token=required(form, "token"),
        verifier=_verifier(request),
        revocations=_revocations(request),
    )
    return JSONResponse(result, headers=_NO_STORE)


@router.post(REVOKE_PATH, summary="Token revocation (RFC 7009)")
async def revoke(request: Request, session: SessionDep) -> Response:
    form = await read_form(request)
    client = await _client(request, session, form)
    await service.revoke(
        session=session,
        client=client,
        token=required(form, "token"),
        verifier=_verifier(request),
        revocations=_revocations(request),
    )
    return Response(status_code=200, headers=_NO_STORE)
