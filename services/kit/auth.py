"""Bearer access tokens on FastAPI routes (RFC 6750), verified and checked for revocation.

A service installs its verifier and the revocation checker once, when it starts (Redis is
connected in the lifespan, so from ``on_startup``)::

    async def on_startup(app: FastAPI) -> None:
        install(app, verifier, Revocations(app.state.runtime.redis))

and its routes ask for a token, and the scopes they need, as a dependency::

    @router.get("/benefits")
    async def benefits(token: Annotated[AccessToken, Depends(require_token("benefits.read"))]):

Refusals follow RFC 6750 section 3: 401 with ``WWW-Authenticate: Bearer`` (and
``error="invalid_token"`` when a token was sent but is not acceptable), 403 with
``error="insufficient_scope"`` naming the scope, both as problem+json.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.exceptions import RedisError

from services.kit.errors import Problem
from services.kit.revocation import Revocations
from services.kit.tokens import (
    AccessToken,
    KeySourceError,
    TokenError,
    TokenVerifier,
    parse_smart_scope,
)

log = logging.getLogger(__name__)

REALM = "onecard"

# FastAPI's scheme only so the OpenAPI documents show "bearer JWT"; the header is read and
# every refusal worded here, because its own errors are neither problem+json nor RFC 6750.
_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="An RFC 9068 access token from the identity service",
)
# A platform scope: lower-case words joined by dots (benefits.read, card.manage, audit.read).
_PLATFORM_SCOPE = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*")
# RFC 6750 section 3: error_description is limited to printable ASCII without " and \.
_UNQUOTABLE = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def install(app: FastAPI, verifier: TokenVerifier, revocations: Revocations) -> None:
    """Make ``require_token`` work on ``app``'s routes."""
    app.state.token_verifier = verifier
    app.state.revocations = revocations


def check_scope_syntax(scope: str) -> str:
    """``scope`` if it is a SMART v2 scope or a platform scope, else ValueError."""
    if parse_smart_scope(scope) is None and not _PLATFORM_SCOPE.fullmatch(scope):
        raise ValueError(f"{scope!r} is neither a SMART v2 scope nor a platform scope")
    return scope


def require_token(*scopes: str) -> Callable[..., Awaitable[AccessToken]]:
    """A dependency: the request's verified, unrevoked access token holding every scope."""
    required = tuple(check_scope_syntax(scope) for scope in scopes)

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> AccessToken:
        token = await authenticate(request, credentials)
        missing = token.missing_scopes(required)
        if missing:
            needed = " ".join(missing)
            raise Problem(
                403,
                f"token lacks scope {needed}",
                headers={
                    "WWW-Authenticate": _challenge(
                        error="insufficient_scope",
                        description=f"requires scope {needed}",
                        scope=" ".join(required),
                    )
                },
            )
        return token

    return dependency


async def authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> AccessToken:
    """Verify the bearer token once per request, however many dependencies ask for it."""
    cached: AccessToken | None = getattr(request.state, "access_token", None)
    if cached is not None:
        return cached
    verifier, revocations = _installed(request)
    if len(request.headers.getlist("authorization")) > 1:
        raise Problem(
            400,
            "more than one Authorization header",
            headers={"WWW-Authenticate": _challenge(error="invalid_request")},
        )
    if credentials is None:
        # RFC 6750 section 3.1: no credentials at all gets the challenge without an error code.
        raise Problem(
            401,
            "missing bearer token (send Authorization: Bearer <access token>)",
            headers={"WWW-Authenticate": _challenge()},
        )
    token = await check_bearer(credentials.credentials.strip(), verifier, revocations)
    request.state.access_token = token
    return token


async def check_bearer(
    token_text: str, verifier: TokenVerifier, revocations: Revocations
) -> AccessToken:
    """Verify one bearer token and its revocation status; refusals as RFC 6750 problems.

    Shared by the services' dependency and the gateway's admission check, so both refuse
    with the same words.
    """
    try:
        token = await verifier.verify(token_text)
        await revocations.check(token)
    except TokenError as exc:
        raise Problem(
            401,
            exc.reason,
            headers={"WWW-Authenticate": _challenge(error="invalid_token", description=exc.reason)},
        ) from None
    except (KeySourceError, RedisError) as exc:
        # Fail closed: if we cannot tell whether the token is good, it is not accepted.
        what = "signing keys" if isinstance(exc, KeySourceError) else "revocation status"
        log.warning("cannot verify tokens", extra={"unavailable": what, "error": str(exc)})
        raise Problem(
            503, f"cannot verify tokens right now: {what} unavailable", headers={"Retry-After": "1"}
        ) from exc
    return token


def _installed(request: Request) -> tuple[TokenVerifier, Revocations]:
    state = request.app.state
    verifier: TokenVerifier | None = getattr(state, "token_verifier", None)
    revocations: Revocations | None = getattr(state, "revocations", None)
    if verifier is None or revocations is None:
        raise RuntimeError("services.kit.auth.install(app, ...) was not called")
    return verifier, revocations


def _challenge(
    *, error: str | None = None, description: str | None = None, scope: str | None = None
) -> str:
    """An RFC 6750 section 3 ``WWW-Authenticate`` value."""
    params = [f'realm="{REALM}"']
    if error is not None:
        params.append(f'error="{error}"')
    if description is not None:
        params.append(f'error_description="{_UNQUOTABLE.sub("?", description)}"')
    if scope is not None:
        params.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(params)


CurrentToken = Annotated[AccessToken, Depends(require_token())]
