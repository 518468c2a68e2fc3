"""HTTP routes of terminals: registration (``/identity/terminals``, for the system
administrator) and what a terminal does (``/identity/terminal/...``, with its own token)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from identity.pki.routes import PkiDep
from identity.settings import IdentitySettings
from identity.terminals import service
from identity.terminals.schemas import (
    CardAnswer,
    Challenge,
    QrRedemption,
    TerminalCreate,
    TerminalPublic,
    TokenResponse,
)
from identity.terminals.service import (
    TERMINAL_SCOPE,
    CardAuthenticator,
    IssuedChallenge,
    Terminal,
)
from identity.tokens.issuer import IssuedToken, TokenIssuer
from services.kit.app import Runtime
from services.kit.auth import require_token
from services.kit.deps import SessionDep
from services.kit.errors import PROBLEM_JSON
from services.kit.revocation import Revocations
from services.kit.tokens import AccessToken

# RFC 6749 section 5.1: token responses are never cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {}}}


TAP_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: problem(
        "The card's proof failed (code: nonce_unknown, nonce_foreign, nonce_expired, "
        "certificate_malformed, not_a_card, chain_invalid, signature_malformed, "
        "signature_invalid), or the bearer token was refused"
    ),
    403: problem(
        "Refused by policy (code: card_locked with Retry-After, card_suspended, card_revoked, "
        "card_unknown, application_not_enabled, not_a_terminal), or the token lacks a scope"
    ),
    422: problem("The request body is not valid; the detail says what is wrong"),
}


async def install_terminals(app: FastAPI) -> CardAuthenticator:
    """Start-up hook (after the PKI and the token server): the tap checker of this process."""
    runtime: Runtime = app.state.runtime
    settings = runtime.settings
    if not isinstance(settings, IdentitySettings):
        raise TypeError("terminals run in the identity service")
    issuer: TokenIssuer = app.state.token_issuer
    if runtime.db is None:
        raise RuntimeError("terminals need the identity database")
    authenticator = CardAuthenticator(
        issuer=issuer,
        pki=app.state.pki,
        db=runtime.db,
        redis=runtime.redis,
        revocations=Revocations(runtime.redis, leeway=settings.token_leeway),
        leeway=settings.token_leeway,
    )
    app.state.card_authenticator = authenticator
    return authenticator


async def get_authenticator(request: Request) -> CardAuthenticator:
    # async: FastAPI runs a plain-def dependency in a worker thread, a hop on every tap.
    authenticator: CardAuthenticator | None = getattr(request.app.state, "card_authenticator", None)
    if authenticator is None:
        raise RuntimeError("install_terminals was not run at start-up")
    return authenticator


AuthenticatorDep = Annotated[CardAuthenticator, Depends(get_authenticator)]
TerminalManager = Annotated[AccessToken, Depends(require_token("terminal.manage"))]
TerminalToken = Annotated[AccessToken, Depends(require_token(TERMINAL_SCOPE))]


async def current_terminal(token: TerminalToken, authenticator: AuthenticatorDep) -> Terminal:
    # No request session: a terminal is read from the database only on a cache miss.
    return await authenticator.terminal(token=token)


CurrentTerminal = Annotated[Terminal, Depends(current_terminal)]


def token_json(issued: IssuedToken, **extra: Any) -> JSONResponse:
    body = {
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
        **extra,
    }
    return JSONResponse(body, headers=NO_STORE)


registry = APIRouter(prefix="/identity/terminals", tags=["terminals"])
router = APIRouter(prefix="/identity/terminal", tags=["terminals"])


@registry.post(
    "",
    status_code=201,
    summary="Register a terminal and certify its key (from a CSR made on the terminal)",
    responses={422: problem("The body or the CSR is not valid; the detail says what")},
)
async def register_terminal(
    data: TerminalCreate,
    session: SessionDep,
    pki: PkiDep,
    _: TerminalManager,
    response: Response,
) -> TerminalPublic:
    client, row = await service.register_terminal(session=session, pki=pki, data=data)
    response.headers["Location"] = f"{registry.prefix}/{client.client_id}"
    return service.public_view(client, row)


@registry.get(
    "/{terminal_id}",
    summary="A registered terminal, with its certificate",
    responses={404: problem("No terminal has this id")},
)
async def read_terminal(
    terminal_id: str, session: SessionDep, pki: PkiDep, _: TerminalManager
) -> TerminalPublic:
    client, row = await service.get_terminal(session=session, pki=pki, terminal_id=terminal_id)
    return service.public_view(client, row)


def challenge_response(issued: IssuedChallenge) -> JSONResponse:
    """What a terminal (or the phone acting as one) receives to hand to the card."""
    return JSONResponse(
        {
            "nonce": issued.nonce,
            "expires_in": issued.expires_in,
            "domain": issued.domain,
            "terminal_id": issued.terminal_id,
        },
        headers=NO_STORE,
    )


@router.post(
    "/challenges",
    summary="A challenge for the card: 256-bit nonce bound to this terminal, single use, 120 s",
    response_model=Challenge,
    responses={403: problem("The token is not an active registered terminal's own")},
)
async def new_challenge(terminal: CurrentTerminal, authenticator: AuthenticatorDep) -> Any:
    return challenge_response(await authenticator.challenge(terminal=terminal))


@router.post(
    "/authentications",
    summary="Check the card's signed answer and issue the holder's token, acting via the terminal",
    response_model=TokenResponse,
    responses=TAP_REFUSALS,
)
async def authenticate(
    answer: CardAnswer, terminal: CurrentTerminal, authenticator: AuthenticatorDep
) -> Any:
    # No request session either: the one database read of a tap (the certificate's status)
    # is a single statement on a pooled connection.
    proof = await authenticator.verify_tap(
        terminal=terminal,
        nonce=answer.nonce,
        certificate=answer.certificate,
        signature=answer.signature,
        pin_verified=answer.pin_verified,
    )
    return token_json(authenticator.holder_token(proof))


@router.post(
    "/qr-redemptions",
    summary="Redeem a scanned e-card QR code for the holder's token (single use)",
    response_model=TokenResponse,
    responses=TAP_REFUSALS,
)
async def redeem_qr(
    redemption: QrRedemption,
    terminal: CurrentTerminal,
    session: SessionDep,
    authenticator: AuthenticatorDep,
) -> Any:
    issued = await authenticator.redeem_qr(session=session, terminal=terminal, qr=redemption.qr)
    return token_json(issued)
