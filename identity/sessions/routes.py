"""HTTP routes of the citizen's app (``/identity/app/...``): card login over NFC, logout.

The refresh grant itself is on the token endpoint (``grant_type=refresh_token``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from identity.sessions import service
from identity.sessions.schemas import AppChallengeRequest, AppSessionCreate, SessionTokensPublic
from identity.terminals.routes import (
    TAP_REFUSALS,
    AuthenticatorDep,
    challenge_response,
    problem,
    token_json,
)
from identity.terminals.schemas import Challenge
from identity.terminals.service import app_terminal
from services.kit.auth import CurrentToken
from services.kit.deps import SessionDep

router = APIRouter(prefix="/identity/app", tags=["app sessions"])


@router.post(
    "/challenges",
    summary="A challenge for the card, read by the phone over NFC (no client authentication)",
    response_model=Challenge,
    responses={422: problem("The installation id is not valid")},
)
async def new_app_challenge(data: AppChallengeRequest, authenticator: AuthenticatorDep) -> Any:
    # Public by design, like a login page; the gateway's per-client rate limit bounds it.
    return challenge_response(
        await authenticator.challenge(terminal=app_terminal(data.installation_id))
    )


@router.post(
    "/sessions",
    summary="Sign the app in with the card: a short access token and a rotating refresh token",
    response_model=SessionTokensPublic,
    responses=TAP_REFUSALS,
)
async def start_session(
    answer: AppSessionCreate, session: SessionDep, authenticator: AuthenticatorDep
) -> Any:
    proof = await authenticator.verify_tap(
        terminal=app_terminal(answer.installation_id),
        nonce=answer.nonce,
        certificate=answer.certificate,
        signature=answer.signature,
        pin_verified=answer.pin_verified,
    )
    tokens = await service.start(session=session, authenticator=authenticator, proof=proof)
    return token_json(tokens.access, refresh_token=tokens.refresh_token)


@router.post(
    "/sessions/current/end",
    status_code=204,
    summary="Sign out: end this token's session; all its tokens are refused from now on",
    responses={400: problem("The token belongs to no app session")},
)
async def end_session(
    token: CurrentToken, session: SessionDep, authenticator: AuthenticatorDep
) -> Response:
    await service.end_current(
        session=session,
        issuer=authenticator.issuer,
        revocations=authenticator.revocations,
        token=token,
    )
    return Response(status_code=204)
