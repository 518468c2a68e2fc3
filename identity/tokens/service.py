"""The grants of the token endpoint, introspection and revocation (RFC 6749, 7662, 7009)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from identity.clients.models import Client
from identity.scopes import audiences
from identity.tokens.forms import OAuthError
from identity.tokens.issuer import IssuedToken, TokenIssuer
from identity.tokens.models import RevokedToken
from services.kit.auth import check_scope_syntax
from services.kit.revocation import Revocations
from services.kit.sqltypes import utcnow
from services.kit.tokens import AccessToken, TokenError, TokenVerifier, scope_allows

# DESIGN.md "Tokens": an institution authenticated by its registered key (a hospital's
# institution card) is trusted at level 3 within its scopes; RFC 8176 "swk": proof of
# possession of a software-secured key.
INSTITUTION_ACR = "3"
INSTITUTION_AMR = ("swk",)

# RFC 8693 section 2.1 and 3.
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN


def grant_scopes(*, allowed: str, requested: str | None) -> list[str]:
    """The requested scopes this client may have (all it may have when none are named)."""
    allowed_set = allowed.split()
    if not requested:
        return allowed_set
    wanted = requested.split()
    refused = [s for s in wanted if not scope_allows(allowed_set, s)]
    if refused:
        # RFC 6749 section 5.2 invalid_scope: say which, so the integrator can fix the request.
        raise OAuthError("invalid_scope", f"scope not allowed for this client: {' '.join(refused)}")
    return wanted


def client_credentials(
    *, client: Client, issuer: TokenIssuer, requested_scope: str | None
) -> IssuedToken:
    """SMART Backend Services: a token for the client itself, within its registered scopes."""
    scopes = grant_scopes(allowed=client.allowed_scopes, requested=requested_scope)
    return issuer.issue(
        subject=client.client_id,  # RFC 9068 section 2.2: sub is the client when it acts for itself
        client_id=client.client_id,
        scopes=scopes,
        audience=audiences(issuer.issuer),
        acr=INSTITUTION_ACR,
        amr=INSTITUTION_AMR,
    )


def exchange(
    *,
    client: Client,
    issuer: TokenIssuer,
    subject: AccessToken,
    audience: str | None,
    scope: str | None,
) -> IssuedToken:
    """RFC 8693: a token for the same subject, narrower (audience, scope), naming ``client``.

    Never wider: each requested scope must be granted by the subject token (SMART wildcards
    understood, so ``patient/*.rs`` narrows to ``patient/Observation.rs``), the audience must be
    one of its audiences, and the new token expires no later than it. Subject, assurance
    (acr, amr), card and session carry over, so revoking the card or ending the session
    reaches the new token too.
    """
    if audience is None:
        targets = list(subject.aud)
    elif audience in subject.aud:
        targets = [audience]
    else:
        # Section 2.2.2: invalid_target, the audience is not one the subject token may reach.
        raise OAuthError("invalid_target", "audience is not among the subject token's audiences")
    if scope:
        wanted = scope.split()
        for name in wanted:
            try:
                check_scope_syntax(name)
            except ValueError as exc:
                raise OAuthError("invalid_scope", str(exc)) from None
        wider = [s for s in wanted if not scope_allows(subject.scope, s)]
        if wider:
            raise OAuthError(
                "invalid_scope", f"scope not granted by the subject token: {' '.join(wider)}"
            )
        scopes: list[str] = wanted
    else:
        scopes = sorted(subject.scope)
    # Whole seconds, one short of the subject's: the issuer's clock may tick between here and
    # its own reading, and the new token must never outlive the one it came from.
    remaining = int(subject.exp - time.time()) - 1
    if remaining < 1:
        raise OAuthError("invalid_request", "subject_token: expires too soon to exchange")
    # Section 4.1: the current actor on top, the earlier chain of actors nested inside.
    act: dict[str, Any] = {"sub": client.client_id}
    if subject.act is not None:
        act["act"] = subject.act
    return issuer.issue(
        subject=subject.sub,
        client_id=client.client_id,
        scopes=scopes,
        audience=targets,
        acr=subject.acr,
        amr=subject.amr,
        act=act,
        card=subject.card,
        sid=subject.sid,
        lifetime=remaining,
    )


def token_response(issued: IssuedToken, **extra: Any) -> dict[str, Any]:
    """RFC 6749 section 5.1."""
    return {
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
        **extra,
    }


async def introspect(
    *, token: str, verifier: TokenVerifier, revocations: Revocations
) -> dict[str, Any]:
    """RFC 7662: ``active`` and the claims of a token that is valid right now, else inactive."""
    try:
        access = await verifier.verify(token)
        await revocations.check(access)
    except TokenError:
        return {"active": False}  # section 2.2: say no more about a token that is not active
    return {"active": True, "token_type": "Bearer", **access.claims}


async def revoke(
    *,
    session: AsyncSession,
    client: Client,
    token: str,
    verifier: TokenVerifier,
    revocations: Revocations,
) -> None:
    """RFC 7009: revoke an access token issued to ``client``; unknown tokens are no error."""
    try:
        access: AccessToken = await verifier.verify(token)
    except TokenError:
        return  # section 2.2: invalid or expired tokens need no revoking
    if access.client_id != client.client_id:
        raise OAuthError("unauthorized_client", "a client may revoke only its own tokens")
    await record_revocation(
        session=session, revocations=revocations, jti=access.jti, exp=access.exp
    )


async def record_revocation(
    *, session: AsyncSession, revocations: Revocations, jti: str, exp: float
) -> None:
    """The database first (the truth), then Redis (what every service checks)."""
    if await session.get(RevokedToken, jti) is None:
        session.add(
            RevokedToken(
                jti=jti,
                expires_at=datetime.fromtimestamp(exp, UTC),
                revoked_at=utcnow(),
            )
        )
        await session.flush()
    await revocations.revoke_token(jti, exp)
