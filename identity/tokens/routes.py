"""Token-server routes: discovery, JWKS (RFC 8414, RFC 7517) and the OAuth 2.0 endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from identity.scopes import PURPOSES, audiences
from identity.sessions import service as sessions
from identity.terminals.routes import get_authenticator
from identity.tokens import service
from identity.tokens.assertions import authenticate_client
from identity.tokens.forms import OAuthError, read_form, required
from identity.tokens.issuer import TokenIssuer
from services.kit.app import app_runtime
from services.kit.deps import SessionDep
from services.kit.errors import problem_response
from services.kit.revocation import Revocations
from services.kit.tokens import ALGORITHM, TokenError, TokenVerifier

TOKEN_PATH = "/identity/oauth2/token"  # noqa: S105 - a URL path, not a secret
INTROSPECT_PATH = "/identity/oauth2/introspect"
REVOKE_PATH = "/identity/oauth2/revoke"
JWKS_PATH = "/.well-known/jwks.json"

CLIENT_CREDENTIALS = "client_credentials"
REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a grant type name, not a secret
GRANT_TYPES = (CLIENT_CREDENTIALS, REFRESH_TOKEN, service.TOKEN_EXCHANGE)

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
        "grant_types_supported": list(GRANT_TYPES),
        # "none": the mobile app is a public client; it presents only its rotating refresh token.
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
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
    summary=(
        "OAuth 2.0 token endpoint: client_credentials (private_key_jwt), refresh_token "
        "(the app, a public client; rotating), token exchange (RFC 8693, private_key_jwt)"
    ),
    openapi_extra={
        "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {}}}}
    },
)
async def token(request: Request, session: SessionDep) -> Response:
    form = await read_form(request)
    grant = required(form, "grant_type")
    if grant == CLIENT_CREDENTIALS:
        client = await _client(request, session, form)
        issued = service.client_credentials(
            client=client, issuer=_issuer(request), requested_scope=form.get("scope")
        )
        return JSONResponse(service.token_response(issued), headers=_NO_STORE)
    if grant == REFRESH_TOKEN:
        return await _refresh(request, session, form)
    if grant == service.TOKEN_EXCHANGE:
        return await _exchange(request, session, form)
    raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")


async def _refresh(request: Request, session: SessionDep, form: dict[str, str]) -> Response:
    """RFC 6749 section 6, rotating (RFC 9700 section 4.14.2): the app is a public client."""
    if "client_assertion" in form or "client_secret" in form:
        raise OAuthError(
            "invalid_request", "the app is a public client: send the refresh token only"
        )
    try:
        tokens = await sessions.refresh(
            session=session,
            authenticator=await get_authenticator(request),
            revocations=_revocations(request),
            refresh_token=required(form, "refresh_token"),
            client_id=form.get("client_id"),
            scope=form.get("scope"),
        )
    except sessions.SessionEnded as exc:
        # Answered, not raised: the request's unit of work commits the session's end.
        return problem_response(exc, instance=request.url.path)
    body = service.token_response(tokens.access, refresh_token=tokens.refresh_token)
    return JSONResponse(body, headers=_NO_STORE)


def _subject_verifier(request: Request) -> TokenVerifier:
    """Verifies our access tokens for any of our audiences (a subject token may be for any)."""
    verifier: TokenVerifier | None = getattr(request.app.state, "subject_token_verifier", None)
    if verifier is None:
        issuer = _issuer(request)
        verifier = TokenVerifier(
            issuer=issuer.issuer,
            audience=audiences(issuer.issuer),
            keys=issuer.keys,
            leeway=app_runtime(request).settings.token_leeway,
        )
        request.app.state.subject_token_verifier = verifier
    return verifier


async def _exchange(request: Request, session: SessionDep, form: dict[str, str]) -> Response:
    """RFC 8693 token exchange, narrowing audience and scope, with ``act``."""
    client = await _client(request, session, form)
    if form.get("subject_token_type") != service.ACCESS_TOKEN_TYPE:
        raise OAuthError(
            "invalid_request", f"subject_token_type must be {service.ACCESS_TOKEN_TYPE}"
        )
    requested_type = form.get("requested_token_type", service.ACCESS_TOKEN_TYPE)
    if requested_type != service.ACCESS_TOKEN_TYPE:
        raise OAuthError("invalid_request", "only access tokens are issued by exchange")
    for unsupported in ("actor_token", "resource"):
        if unsupported in form:
            # Section 2.1: the acting party is the authenticated client; audience names targets.
            raise OAuthError("invalid_request", f"{unsupported} is not supported here")
    try:
        subject = await _subject_verifier(request).verify(required(form, "subject_token"))
        await _revocations(request).check(subject)
    except TokenError as exc:
        # Section 2.2.2: an invalid subject_token is invalid_request.
        raise OAuthError("invalid_request", f"subject_token: {exc.reason}") from None
    issued = service.exchange(
        client=client,
        issuer=_issuer(request),
        subject=subject,
        audience=form.get("audience"),
        scope=form.get("scope"),
    )
    body = service.token_response(issued, issued_token_type=service.ACCESS_TOKEN_TYPE)
    return JSONResponse(body, headers=_NO_STORE)


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
