"""Platform services' own credentials: each service appends to the audit ledger as a
registered client of kind ``service`` holding only ``audit.append`` (issue 4: "only platform
services may append, authenticated").

In development the identity service provisions them at start-up under
``<var_dir>/credentials/<service>.json`` (the path each service's audit client reads, see
``ServiceSettings.audit_credentials_path``), so ``make run`` needs no manual step. In production
an operator registers each with ``onecard identity add-client --kind service --scope
audit.append`` and hands the file to that service only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from identity.clients import repository
from identity.clients.bootstrap import add_client
from identity.clients.models import ClientKind
from services.kit import topology
from services.kit.credentials import ClientCredentials
from services.kit.database import Database

log = logging.getLogger(__name__)

# Every deployable but the ledger itself (it appends to itself directly).
PLATFORM_SERVICES = tuple(spec.name for spec in topology.ALL if spec.name != "audit")


async def provision_service_clients(
    db: Database, *, credentials_dir: Path, base_url: str
) -> list[str]:
    """Register each platform service that has no usable credentials yet; their names."""
    provisioned = []
    for name in PLATFORM_SERVICES:
        path = credentials_dir / f"{name}.json"
        if await _usable(db, path):
            continue
        credentials = await add_client(
            db,
            name=f"onecard {name} service",
            kind=ClientKind.SERVICE,
            scopes=["audit.append"],
            base_url=base_url,
        )
        credentials.save(path)
        provisioned.append(name)
    if provisioned:
        log.info("platform service clients provisioned", extra={"services": provisioned})
    return provisioned


async def _usable(db: Database, path: Path) -> bool:
    """The file exists and names an active service client of this identity database."""
    try:
        credentials = ClientCredentials.load(path)
    except (OSError, ValueError, KeyError):
        return False
    async with db.sessionmaker() as session:
        client = await repository.get(session, credentials.client_id)
    return client is not None and client.active and client.kind == ClientKind.SERVICE
