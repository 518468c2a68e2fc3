"""``onecard hospital ...``: what a hospital system does with its client credentials."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console

from services.kit.credentials import ClientCredentials
from services.kit.tokens import unverified_claims

app = typer.Typer(no_args_is_help=True, help="A hospital system: SMART Backend Services tokens.")
console = Console()


@app.command()
def token(
    client: Annotated[Path, typer.Option(help="The hospital's client credentials file.")],
    scope: Annotated[str | None, typer.Option(help="Scopes to ask for (default: all).")] = None,
    base_url: Annotated[
        str | None, typer.Option(help="Gateway URL (default: the one in the credentials).")
    ] = None,
    show_token: Annotated[bool, typer.Option(help="Print the token itself too.")] = False,
) -> None:
    """Get an access token the way a hospital's backend does (client_credentials +
    private_key_jwt, SMART Backend Services) and print its claims."""
    credentials = ClientCredentials.load(client)
    if base_url:
        credentials.base_url = base_url.rstrip("/")

    async def run() -> str:
        async with httpx.AsyncClient(base_url=credentials.base_url, timeout=10) as http:
            return await credentials.fetch_token(http, scope)

    try:
        access_token = asyncio.run(run())
    except (RuntimeError, httpx.HTTPError) as exc:
        console.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(1) from None
    # Our own fresh token, printed for the operator to read: it was verified by nobody here.
    console.print_json(json.dumps(unverified_claims(access_token)))
    if show_token:
        console.print(access_token, soft_wrap=True)
