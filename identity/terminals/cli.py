"""``onecard terminal ...``: register a card terminal, tap a virtual card at one, redeem a QR."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console

from identity.simulators.card import CardError, VirtualCard
from identity.simulators.settlement_view import SETTLEMENTS, show_settlement
from identity.simulators.terminal import (
    FlowError,
    TapResult,
    VirtualTerminal,
    register,
    tap,
)
from services.kit.credentials import ClientCredentials

app = typer.Typer(
    no_args_is_help=True, help="Card terminals: register one, tap a virtual card at one."
)
console = Console()
errors = Console(stderr=True)

T = TypeVar("T")

BaseUrl = Annotated[
    str | None,
    typer.Option(help="Gateway URL, e.g. http://127.0.0.1:8000 (default: the credentials')."),
]


def _credentials(path: Path, base_url: str | None) -> ClientCredentials:
    try:
        credentials = ClientCredentials.load(path)
    except (OSError, ValueError, KeyError) as exc:
        errors.print(f"[red]cannot read terminal credentials {path}:[/red] {exc}")
        raise typer.Exit(2) from None
    if base_url:
        credentials.base_url = base_url.rstrip("/")
    return credentials


def _run(base_url: str, flow: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def run() -> T:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            return await flow(http)

    try:
        return asyncio.run(run())
    except FlowError as exc:
        hint = f" (retry after {exc.retry_after} s)" if exc.retry_after else ""
        code = f" [{exc.code}]" if exc.code else ""
        errors.print(f"[red]{exc}[/red]{code}{hint}")
        raise typer.Exit(1) from None
    except CardError as exc:
        errors.print(f"[red]the card refused:[/red] {exc}")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        errors.print(f"[red]cannot reach {base_url}:[/red] {exc}")
        raise typer.Exit(1) from None


def _show(result: TapResult, show_token: bool) -> None:
    # Our own fresh token, printed for the operator to read: its claims, decoded, unverified.
    console.print_json(json.dumps(result.claims))
    if show_token:
        console.print(result.access_token, soft_wrap=True)


@app.command("tap")
def tap_command(
    terminal: Annotated[Path, typer.Option(help="The terminal's client credentials file.")],
    card: Annotated[Path, typer.Option(help="The virtual card file (onecard card ...).")],
    pin: Annotated[
        bool, typer.Option("--pin", help="Enter the PIN (asked hidden): card + PIN is acr 2.")
    ] = False,
    base_url: BaseUrl = None,
    show_token: Annotated[bool, typer.Option(help="Print the token itself too.")] = False,
    read: Annotated[
        list[str] | None,
        typer.Option(
            help="Then read this FHIR path with the holder's token, e.g. 'Observation' "
            "(repeatable): what the counter's system does while the patient is present."
        ),
    ] = None,
    settle: Annotated[
        Path | None,
        typer.Option(
            help="Then settle this bill (JSON, see docs/settlement.md) with the holder's token: "
            "pre-settlement, then settlement, as the billing counter's system does.",
        ),
    ] = None,
) -> None:
    """Tap a card at a terminal (the real flow, through the gateway); print the token's claims."""
    credentials = _credentials(terminal, base_url)
    try:
        virtual_card = VirtualCard.load(card)
    except CardError as exc:
        errors.print(f"[red]cannot read the card:[/red] {exc}")
        raise typer.Exit(2) from None
    # The PIN goes to the card only, never over the network.
    secret = typer.prompt("PIN", hide_input=True) if pin else None
    device = VirtualTerminal(credentials)
    bill = _read_bill(settle) if settle is not None else None

    async def flow(http: httpx.AsyncClient) -> tuple[TapResult, list[httpx.Response]]:
        result = await tap(http, terminal=device, card=virtual_card, pin=secret)
        auth = {"Authorization": f"Bearer {result.access_token}"}
        answers = [await http.get(f"/fhir/{path.lstrip('/')}", headers=auth) for path in read or []]
        if bill is not None:
            preview = await http.post(SETTLEMENTS + "/preview", json=bill, headers=auth)
            answers.append(preview)
            if preview.status_code == 200:
                answers.append(await http.post(SETTLEMENTS, json=bill, headers=auth))
        return result, answers

    result, answers = _run(credentials.base_url, flow)
    _show(result, show_token)
    for response in answers:
        if response.request.url.path.startswith(SETTLEMENTS):
            show_settlement(console, response)
        else:
            _show_read(response)
    if any(r.status_code not in (200, 201) for r in answers):
        raise typer.Exit(1)


def _read_bill(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        errors.print(f"[red]cannot read the bill {path}:[/red] {exc}")
        raise typer.Exit(2) from None


def _show_read(response: httpx.Response) -> None:
    """One line per resource read (a Bundle's entries, or the resource itself)."""
    console.print(f"GET {response.request.url.path} -> {response.status_code}")
    body = response.json() if response.content else {}
    if response.status_code != 200:
        for issue in body.get("issue", []):
            console.print(f"  {issue.get('severity')}: {issue.get('diagnostics')}")
        return
    resources = [e.get("resource", {}) for e in body.get("entry", [])]
    if body.get("resourceType") != "Bundle":
        resources = [body]
    elif "total" in body:
        console.print(f"  total {body['total']}")
    for resource in resources:
        console.print(f"  {resource.get('resourceType')}/{resource.get('id')}  {_label(resource)}")


def _label(resource: dict[str, Any]) -> str:
    code = resource.get("code") or resource.get("type") or {}
    if isinstance(code, list):
        code = code[0] if code else {}
    text = code.get("text") or next(
        (c.get("display") for c in code.get("coding", []) if c.get("display")), ""
    )
    value = resource.get("valueQuantity")
    if value:
        text += f" = {value.get('value')} {value.get('unit', '')}"
    return str(text)


@app.command("redeem-qr")
def redeem_qr_command(
    terminal: Annotated[Path, typer.Option(help="The terminal's client credentials file.")],
    qr: Annotated[str, typer.Option(help="The scanned QR payload.")],
    base_url: BaseUrl = None,
    show_token: Annotated[bool, typer.Option(help="Print the token itself too.")] = False,
) -> None:
    """Redeem a scanned e-card QR code at a terminal; print the holder token's claims."""
    credentials = _credentials(terminal, base_url)
    device = VirtualTerminal(credentials)
    _show(_run(credentials.base_url, lambda http: device.redeem_qr(http, qr)), show_token)


@app.command("register")
def register_command(
    admin: Annotated[
        Path, typer.Option(help="Credentials of an admin client allowed terminal.manage.")
    ],
    facility: Annotated[str, typer.Option(help="Where the terminal stands.")],
    purpose: Annotated[str, typer.Option(help="registration_desk, pharmacy, bus, ...")],
    out: Annotated[Path, typer.Option(help="Where to write the terminal's credentials (0600).")],
    name: Annotated[str | None, typer.Option(help="A name for people.")] = None,
    base_url: BaseUrl = None,
) -> None:
    """Register a terminal; write its credentials file and, beside it, its certificate (.pem).

    The terminal's key pair is made here and only its CSR is sent.
    """
    credentials = _credentials(admin, base_url)

    async def flow(http: httpx.AsyncClient) -> str:
        admin_token = await credentials.fetch_token(http, "terminal.manage")
        registered = await register(
            http,
            admin_token=admin_token,
            facility=facility,
            purpose=purpose,
            name=name,
            base_url=credentials.base_url,
        )
        registered.credentials.save(out)
        out.with_suffix(".pem").write_text(registered.certificate_pem)
        return registered.credentials.client_id

    try:
        terminal_id = _run(credentials.base_url, flow)
    except RuntimeError as exc:  # the admin token was refused
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    errors.print(
        f"registered terminal [bold]{terminal_id}[/bold] ({purpose} at {facility}); "
        f"credentials in {out}, certificate in {out.with_suffix('.pem')}"
    )
