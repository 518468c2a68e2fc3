"""Rules for registered clients."""

from __future__ import annotations

import secrets

from sqlmodel.ext.asyncio.session import AsyncSession

from identity.clients import repository
from identity.clients.models import Client, ClientKind
from identity.clients.schemas import ClientCreate, ClientPublic
from identity.scopes import scopes_refusal
from services.kit.errors import Problem
from services.kit.sqltypes import utcnow


def new_client_id(kind: ClientKind) -> str:
    prefix = {
        ClientKind.HOSPITAL: "hosp",
        ClientKind.TERMINAL: "term",
        ClientKind.ADMIN: "adm",
        ClientKind.SERVICE: "svc",
    }
    return f"{prefix[kind]}_{secrets.token_hex(8)}"


async def register(
    *, session: AsyncSession, data: ClientCreate, client_id: str | None = None
) -> Client:
    """Register a client with its public key and the scopes it may ever be granted."""
    if data.kind == ClientKind.TERMINAL and data.purpose is None:
        raise Problem(422, "a terminal needs a purpose (what the counter is for)")
    if data.kind != ClientKind.TERMINAL and data.purpose is not None:
        raise Problem(422, "only terminals have a purpose")
    refusal = scopes_refusal(data.kind, data.scopes)
    if refusal is not None:
        raise Problem(422, refusal)
    client = Client(
        client_id=client_id or new_client_id(data.kind),
        name=data.name,
        kind=data.kind,
        jwk=data.jwk,
        allowed_scopes=" ".join(data.scopes),
        facility=data.facility,
        purpose=data.purpose,
        created_at=utcnow(),
    )
    return await repository.add(session, client)


async def get_active(*, session: AsyncSession, client_id: str) -> Client:
    """A client that may authenticate now, or 404."""
    client = await repository.get(session, client_id)
    if client is None or not client.active:
        raise Problem(404, f"no active client {client_id!r}")
    return client


def public_view(client: Client) -> ClientPublic:
    return ClientPublic(
        client_id=client.client_id,
        name=client.name,
        kind=client.kind,
        scopes=client.allowed_scopes.split(),
        facility=client.facility,
        purpose=client.purpose,
        active=client.active,
        created_at=client.created_at,
    )
