"""Registering a client from the operator's console, without an administrator token.

The first administrator cannot get a token from an API that needs an administrator token, so
``onecard identity add-client`` (and the demo seeding) registers clients straight in the
identity database, generating their key pair and writing their credentials file.
"""

from __future__ import annotations

from identity.clients import service
from identity.clients.models import ClientKind
from identity.clients.schemas import ClientCreate
from services.kit.credentials import ClientCredentials
from services.kit.database import Database


async def add_client(
    db: Database,
    *,
    name: str,
    kind: ClientKind,
    scopes: list[str],
    base_url: str,
    purpose: str | None = None,
    facility: str | None = None,
    client_id: str | None = None,
) -> ClientCredentials:
    """Register a new client and return its credentials (the private key is nowhere else).

    ``client_id``: a chosen id instead of a new random one (a benchmark's store written ahead
    of time names its author); it must not be taken."""
    client_id = client_id or service.new_client_id(kind)
    credentials = ClientCredentials.generate(client_id=client_id, base_url=base_url)
    data = ClientCreate(
        name=name,
        kind=kind,
        jwk=credentials.jwk,
        scopes=scopes,
        purpose=purpose,
        facility=facility,
    )
    async with db.sessionmaker() as session, session.begin():
        await service.register(session=session, data=data, client_id=client_id)
    return credentials
