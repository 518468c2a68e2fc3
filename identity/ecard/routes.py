"""HTTP route of the e-card QR code (``/identity/ecard/qr``), for the citizen's app."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from identity.ecard.schemas import QrCode
from identity.terminals.routes import NO_STORE, AuthenticatorDep, problem
from services.kit.auth import require_token
from services.kit.deps import SessionDep
from services.kit.tokens import AccessToken

router = APIRouter(prefix="/identity/ecard", tags=["e-card"])

CardHolder = Annotated[AccessToken, Depends(require_token("card.self"))]


@router.post(
    "/qr",
    summary="A dynamic QR code for the holder's active card: signed, single use, <= 60 s",
    response_model=QrCode,
    responses={
        403: problem("The token names no card, or the card is not active (code says which)")
    },
)
async def new_qr(token: CardHolder, session: SessionDep, authenticator: AuthenticatorDep) -> Any:
    payload = await authenticator.issue_qr(session=session, token=token)
    return JSONResponse({"qr": payload.qr, "expires_in": payload.expires_in}, headers=NO_STORE)
