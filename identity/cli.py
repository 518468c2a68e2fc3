"""``onecard identity ...``: the identity service's operator commands."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from identity.clients.bootstrap import add_client
from identity.clients.models import ClientKind
from identity.settings import IdentitySettings
from identity.tokens import keys
from identity.tokens.setup import passphrase
from services.kit.database import Database

app = typer.Typer(no_args_is_help=True, help="Identity service: clients and signing keys.")
console = Console(stderr=True)


@app.command("add-client")
def add_client_command(
    name: Annotated[str, typer.Option(help="Who the client is, e.g. a hospital's name.")],
    kind: Annotated[ClientKind, typer.Option(help="hospital, terminal or admin.")],
    scope: Annotated[list[str], typer.Option(help="A scope it may be granted (repeatable).")],
    out: Annotated[Path, typer.Option(help="Where to write its credentials file (0600).")],
    purpose: Annotated[str | None, typer.Option(help="For terminals: what it is for.")] = None,
    facility: Annotated[str | None, typer.Option(help="The facility it belongs to.")] = None,
) -> None:
    """Register a client directly in the identity database (the first administrator)."""
    settings = IdentitySettings()

    async def run() -> str:
        db = Database.for_settings(settings)
        try:
            credentials = await add_client(
                db,
                name=name,
                kind=kind,
                scopes=scope,
                base_url=settings.public_url,
                purpose=purpose,
                facility=facility,
            )
        finally:
            await db.dispose()
        credentials.save(out)
        return credentials.client_id

    client_id = asyncio.run(run())
    console.print(f"registered {kind} client [bold]{client_id}[/bold]; credentials in {out}")


@app.command("rotate-keys")
def rotate_keys() -> None:
    """Make the next token-signing key current, retire the current one, create a new next."""
    settings = IdentitySettings()

    async def run() -> str:
        db = Database.for_settings(settings)
        try:
            async with db.sessionmaker() as session, session.begin():
                return await keys.rotate(session=session, passphrase=passphrase(settings))
        finally:
            await db.dispose()

    kid = asyncio.run(run())
    console.print(f"signing with key [bold]{kid}[/bold]; identity processes switch within 10 s")


@app.command("rollover-ca")
def rollover_ca() -> None:
    """Make a new issuing CA current; cards issued under the old one keep verifying."""
    from identity.pki.service import PkiService

    settings = IdentitySettings()

    async def run() -> str:
        db = Database.for_settings(settings)
        pki = PkiService(settings)
        try:
            await pki.start(db=db)
            async with db.sessionmaker() as session, session.begin():
                ca = await pki.rollover_issuing_ca(session=session)
            return ca.kid
        finally:
            await db.dispose()

    kid = asyncio.run(run())
    console.print(f"issuing CA [bold]{kid}[/bold] is current; the previous one is retired")
