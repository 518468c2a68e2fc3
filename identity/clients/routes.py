"""HTTP routes of the client registry (``/identity/clients``), for the system administrator."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from identity.clients import service
from identity.clients.schemas import ClientCreate, ClientPublic
from services.kit.auth import require_token
from services.kit.deps import SessionDep
from services.kit.tokens import AccessToken

router = APIRouter(prefix="/identity/clients", tags=["clients"])

ClientManager = Annotated[AccessToken, Depends(require_token("client.manage"))]


@router.post("", status_code=201, summary="Register a hospital system, terminal or admin client")
async def register_client(
    data: ClientCreate, session: SessionDep, _: ClientManager, response: Response
) -> ClientPublic:
    client = await service.register(session=session, data=data)
    response.headers["Location"] = f"{router.prefix}/{client.client_id}"
    return service.public_view(client)


@router.get("/{client_id}", summary="A registered client")
async def read_client(client_id: str, session: SessionDep, _: ClientManager) -> ClientPublic:
    return service.public_view(await service.get_active(session=session, client_id=client_id))
