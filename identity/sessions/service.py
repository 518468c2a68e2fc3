"""Rules of app sessions: start after a card tap, rotate the refresh token, end."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from identity.scopes import PURPOSES, audiences
from identity.sessions import repository
from identity.sessions.models import RotatedRefreshToken
from identity.terminals.schemas import APP_PURPOSE
from identity.terminals.service import (
    APP_TERMINAL_PREFIX,
    CardAuthenticator,
    CardProof,
    Refusal,
    Terminal,
)
from identity.tokens.forms import OAuthError
from identity.tokens.issuer import IssuedToken, TokenIssuer
from identity.tokens.models import Session
from identity.tokens.service import grant_scopes
from services.kit.errors import Problem
from services.kit.revocation import Revocations
from services.kit.sqltypes import utcnow
from services.kit.tokens import AccessToken

log = logging.getLogger(__name__)

# How long one card tap keeps the app signed in, however often it refreshes. A session keeps
# the assurance (acr) of its tap, so it must not outlive a reasonable re-authentication cycle.
SESSION_LIFETIME = timedelta(days=7)
REFRESH_TOKEN_BYTES = 32  # 256 bits
_REFRESH_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")

REUSE = "refresh-token-reuse"
LOGOUT = "logout"


class SessionEnded(OAuthError):
    """The refresh ended the session (reuse, or its card is no longer active).

    Answered without raising through the request's unit of work, so the end is committed.
    """

    def __init__(self, description: str) -> None:
        super().__init__("invalid_grant", description)


@dataclass(frozen=True, slots=True)
class SessionTokens:
    access: IssuedToken
    refresh_token: str
    sid: str


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_refresh_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
    return token, hash_refresh_token(token)


def _app_terminal(row: Session) -> Terminal:
    return Terminal(terminal_id=row.client_id, purpose=APP_PURPOSE)


async def start(
    *, session: AsyncSession, authenticator: CardAuthenticator, proof: CardProof
) -> SessionTokens:
    """A new session for a tap at the phone: its first access and refresh tokens."""
    if not proof.terminal.terminal_id.startswith(APP_TERMINAL_PREFIX):
        raise ValueError("app sessions start from a tap at the app")
    sid = secrets.token_urlsafe(16)
    access = authenticator.holder_token(proof, sid=sid)
    refresh_token, refresh_hash = _new_refresh_token()
    now = utcnow()
    await repository.add(
        session,
        Session(
            sid=sid,
            subject=proof.card.pseudonym,
            client_id=proof.terminal.terminal_id,
            card_serial=proof.card.card_serial,
            scope=access.scope,
            acr=access.claims["acr"],
            amr=" ".join(access.claims["amr"]),
            refresh_token_hash=refresh_hash,
            generation=0,
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
        ),
    )
    log.info(
        "app session started",
        extra={"event": "session.started", "sid": sid, "holder": proof.card.pseudonym},
    )
    return SessionTokens(access=access, refresh_token=refresh_token, sid=sid)


async def refresh(
    *,
    session: AsyncSession,
    authenticator: CardAuthenticator,
    revocations: Revocations,
    refresh_token: str,
    client_id: str | None,
    scope: str | None,
) -> SessionTokens:
    """RFC 6749 section 6 with rotation: a new access token and a new refresh token.

    Raises :class:`SessionEnded` after ending the session when the token was already rotated
    (reuse) or the card is no longer active; the caller must commit that.
    """
    if not _REFRESH_TOKEN.fullmatch(refresh_token):
        raise OAuthError("invalid_grant", "unknown refresh token")
    presented = hash_refresh_token(refresh_token)
    row = await repository.by_refresh_hash(session, presented)
    if row is None:
        old = await repository.rotated(session, presented)
        if old is None:
            raise OAuthError("invalid_grant", "unknown refresh token")
        await _end(session, revocations, authenticator.issuer, sid=old.sid, reason=REUSE)
        raise SessionEnded("refresh token already used: the session has ended, sign in again")
    if client_id is not None and client_id != row.client_id:
        # RFC 6749 section 6: the refresh token was issued to another client.
        raise OAuthError("invalid_grant", "the refresh token was issued to another client")
    if row.ended_at is not None:
        raise OAuthError("invalid_grant", f"the session has ended ({row.end_reason})")
    now = utcnow()
    if row.expires_at <= now:
        raise OAuthError("invalid_grant", "the session has expired, sign in again")
    if row.card_serial is not None:
        try:
            await authenticator.active_card(
                session=session, card_serial=row.card_serial, subject=row.subject
            )
        except Refusal as exc:
            await _end(
                session, revocations, authenticator.issuer, sid=row.sid, reason=exc.code[:40]
            )
            raise SessionEnded(f"{exc.detail}: the session has ended") from None
    scopes = grant_scopes(allowed=row.scope, requested=scope)
    generation = row.generation + 1
    new_token, new_hash = _new_refresh_token()
    if not await repository.rotate(
        session, sid=row.sid, old_hash=presented, new_hash=new_hash, generation=generation
    ):
        # Another request rotated this very token a moment ago: it was presented twice.
        await _end(session, revocations, authenticator.issuer, sid=row.sid, reason=REUSE)
        raise SessionEnded("refresh token already used: the session has ended, sign in again")
    await repository.add(
        session,
        RotatedRefreshToken(
            token_hash=presented, sid=row.sid, generation=row.generation, rotated_at=now
        ),
    )
    issuer = authenticator.issuer
    purpose = PURPOSES[APP_PURPOSE]
    access = issuer.issue(
        subject=row.subject,
        client_id=row.client_id,
        scopes=scopes,
        audience=audiences(issuer.issuer, purpose.prefixes),
        acr=row.acr,  # the assurance of the tap that started the session
        amr=row.amr.split(),
        act=_app_terminal(row).actor,
        card=row.card_serial,
        sid=row.sid,
    )
    return SessionTokens(access=access, refresh_token=new_token, sid=row.sid)


async def end_current(
    *, session: AsyncSession, issuer: TokenIssuer, revocations: Revocations, token: AccessToken
) -> None:
    """Logout: end the session of ``token``; every token it issued is refused from now on."""
    if token.sid is None:
        raise Problem(400, "this token belongs to no app session (no sid claim)")
    row = await repository.get(session, token.sid)
    if row is None or row.subject != token.sub:
        raise Problem(404, "no app session of this holder has this sid")
    await _end(session, revocations, issuer, sid=row.sid, reason=LOGOUT)


async def _end(
    session: AsyncSession, revocations: Revocations, issuer: TokenIssuer, *, sid: str, reason: str
) -> None:
    ended = await repository.end(session, sid=sid, reason=reason, at=utcnow())
    # Every token of the session is refused until the last one it could have issued expires.
    # Repeated even if it had ended, in case Redis lost the mark (the database is the truth).
    await revocations.revoke_session(sid, utcnow().timestamp() + issuer.lifetime)
    if ended:
        log.warning(
            "app session ended",
            extra={"event": "session.ended", "sid": sid, "reason": reason},
        )
