"""Registering a terminal from the operator's console or the demo seeding, without HTTP.

Like ``identity.clients.bootstrap.add_client``: straight in the identity database, the key pair
made here (as the terminal would make it) and the credentials returned for their file.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from identity.pki.service import PkiService
from identity.settings import IdentitySettings
from identity.simulators.terminal import terminal_csr
from identity.terminals.cards import jwk_thumbprint
from identity.terminals.schemas import TerminalCreate
from identity.terminals.service import register_terminal
from services.kit.credentials import ClientCredentials
from services.kit.database import Database


@dataclass(frozen=True)
class NewTerminal:
    credentials: ClientCredentials
    certificate_pem: str


async def add_terminal(
    db: Database,
    settings: IdentitySettings,
    *,
    facility: str,
    purpose: str,
    name: str | None = None,
    pki: PkiService | None = None,
) -> NewTerminal:
    """Register a terminal and certify its key; the private key is nowhere else."""
    key = ec.generate_private_key(ec.SECP256R1())
    data = TerminalCreate(facility=facility, purpose=purpose, csr=terminal_csr(key), name=name)
    if pki is None:
        pki = PkiService(settings)
        await pki.start(db=db)
    async with db.unit_of_work() as session:
        client, row = await register_terminal(session=session, pki=pki, data=data)
    credentials = ClientCredentials(
        client_id=client.client_id,
        kid=jwk_thumbprint(key.public_key()),
        private_key=key,
        base_url=settings.public_url.rstrip("/"),
    )
    return NewTerminal(credentials=credentials, certificate_pem=row.pem)
