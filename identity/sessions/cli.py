"""``onecard app ...``: what the citizen's mobile app does, with a virtual card over "NFC".

``access-log`` signs in with the card (+ PIN: the access log is level 2, the records it names
are the citizen's own), lists who accessed the citizen's data (``GET /audit/me``), and proves
each entry offline against the ledger's checkpoint key, as the app would.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console
from rich.table import Table

from identity.simulators.card import CardError, VirtualCard
from identity.simulators.settlement_view import yuan
from identity.simulators.terminal import FlowError, app_login
from services.audit.offline import verify_entry

app = typer.Typer(no_args_is_help=True, help="The citizen's mobile app, with a virtual card.")
console = Console()
errors = Console(stderr=True)
T = TypeVar("T")


def installation_id(card: VirtualCard) -> str:
    """A stable installation id for this card's "phone" (the real app makes a random one)."""
    return "cli-" + hashlib.sha256(card.serial.encode()).hexdigest()[:24]


def _card_and_pin(path: Path) -> tuple[VirtualCard, str]:
    try:
        card = VirtualCard.load(path)
    except CardError as exc:
        errors.print(f"[red]cannot read the card:[/red] {exc}")
        raise typer.Exit(2) from None
    pin = typer.prompt("PIN", hide_input=True)  # to the card only, never over the network
    return card, pin


def _signed_in(
    base_url: str,
    card: VirtualCard,
    pin: str,
    flow: Callable[[httpx.AsyncClient, dict[str, str]], Awaitable[T]],
) -> T:
    """Sign in with the card and PIN as the app does, then run ``flow`` with the token's
    Authorization header; a refusal or an unreachable gateway is printed and exits 1."""

    async def run() -> T:
        async with httpx.AsyncClient(base_url=base_url, timeout=15) as http:
            tokens = await app_login(
                http, installation_id=installation_id(card), card=card, pin=pin
            )
            return await flow(http, {"Authorization": f"Bearer {tokens['access_token']}"})

    try:
        return asyncio.run(run())
    except FlowError as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    except CardError as exc:
        errors.print(f"[red]the card refused:[/red] {exc}")
        raise typer.Exit(1) from None
    except (httpx.HTTPError, ValueError) as exc:
        errors.print(f"[red]cannot reach {base_url}:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command("access-log")
def access_log(
    card: Annotated[Path, typer.Option(help="The virtual card file.")],
    base_url: Annotated[str, typer.Option(help="The gateway.")] = "http://127.0.0.1:8000",
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
) -> None:
    """Who accessed my data: the newest entries, each proven in the ledger's signed tree."""
    virtual_card, pin = _card_and_pin(card)

    async def flow(
        http: httpx.AsyncClient, auth: dict[str, str]
    ) -> tuple[list[dict[str, Any]], ec.EllipticCurvePublicKey]:
        response = await http.get("/audit/me", params={"limit": limit}, headers=auth)
        if response.status_code != 200:
            raise FlowError("access log", response)
        key = await http.get("/audit/checkpoints/key")
        key.raise_for_status()
        public = serialization.load_pem_public_key(key.json()["public_key_pem"].encode())
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise ValueError("the ledger's checkpoint key is not an EC key")
        entries: list[dict[str, Any]] = response.json()
        return entries, public

    entries, key = _signed_in(base_url, virtual_card, pin, flow)
    _print(entries, key)


def _print(entries: list[dict[str, Any]], key: ec.EllipticCurvePublicKey) -> None:
    table = Table(title="Who accessed my data (newest first)")
    for column in ("#", "time", "who", "via", "what", "purpose", "outcome", "proof"):
        table.add_column(column)
    failed = 0
    for entry in entries:
        record = entry["record"]
        agent = record.get("agent", {})
        problem = verify_entry(entry, key)
        pending = problem is not None and "not yet covered" in problem
        failed += problem is not None and not pending
        what = f"{record.get('action')} {record.get('entity_type')}"
        if record.get("entity_id"):
            what += f"/{record['entity_id']}"
        table.add_row(
            str(entry["seq"]),
            record.get("time", "")[:19],
            agent.get("who", ""),
            agent.get("acting_via") or "",
            what,
            record.get("purpose") or "",
            record.get("outcome", ""),
            "[green]verified[/green]"
            if problem is None
            else ("[yellow]pending checkpoint[/yellow]" if pending else f"[red]{problem}[/red]"),
        )
    console.print(table)
    if failed:
        errors.print(f"[red]{failed} entries failed verification[/red]")
        raise typer.Exit(1)


@app.command("benefits")
def benefits(
    card: Annotated[Path, typer.Option(help="The virtual card file.")],
    base_url: Annotated[str, typer.Option(help="The gateway.")] = "http://127.0.0.1:8000",
    year: Annotated[int | None, typer.Option(help="The medical year (default: this year).")] = None,
) -> None:
    """My medical insurance: this year's deductible and pooled fund used (cap remaining), the
    personal account's balance and latest movements, and my settled claims with their split."""
    virtual_card, pin = _card_and_pin(card)
    chosen = year or datetime.now(UTC).year
    paths = (
        f"/social-security/medical-year/{chosen}",
        "/social-security/medical-account",
        "/social-security/claims",
    )

    async def flow(http: httpx.AsyncClient, auth: dict[str, str]) -> list[dict[str, Any]]:
        answers = []
        for path in paths:
            response = await http.get(path, headers=auth)
            if response.status_code != 200:
                raise FlowError(path, response)
            answers.append(response.json())
        return answers

    medical_year, account, claims = _signed_in(base_url, virtual_card, pin, flow)
    _print_benefits(medical_year, account, claims)


def _print_benefits(
    medical_year: dict[str, Any], account: dict[str, Any], claims: dict[str, Any]
) -> None:
    table = Table(title=f"Medical insurance {medical_year['year']}: year to date")
    for column in ("scheme", "deductible used", "pooled fund paid", "cap", "cap remaining"):
        table.add_column(column, justify="left" if column == "scheme" else "right")
    for scheme in medical_year["schemes"]:
        cap = scheme["annual_pooled_cap_fen"]
        table.add_row(
            scheme["scheme"],
            yuan(scheme["deductible_used_fen"]),
            yuan(scheme["pooled_paid_fen"]),
            yuan(cap) if cap is not None else "-",
            scheme["cap_remaining_yuan"] or "-",
        )
    console.print(table)
    console.print(f"Personal account balance: [bold]{yuan(account['balance_fen'])}[/bold]")
    for entry in account["entries"][:5]:
        console.print(f"  {entry['at'][:19]}  {yuan(entry['amount_fen']):>12}  {entry['reason']}")
    table = Table(title="My settled bills (newest first)")
    for column in ("date", "facility", "bill", "status", "total", "funds", "account", "cash"):
        table.add_column(column)
    for claim in claims["items"]:
        split = claim["split"]
        table.add_row(
            claim["service_date"],
            claim["facility"],
            claim["bill_id"],
            claim["status"],
            yuan(split["total_fen"]),
            yuan(split["funds_fen"]),
            yuan(split["personal_account_fen"]),
            yuan(split["cash_fen"]),
        )
    console.print(table)
