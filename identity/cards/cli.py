"""``onecard card ...``: a virtual card file worked as a registration desk and its holder would.

The desk makes a new card (its key pair generated on the card), asks the identity service to
issue it through the gateway with an administrator's credentials file, writes the certificate
onto the card and, once the holder has chosen a PIN on the card, marks it active. The holder
changes the PIN or unblocks it with the PUK on the card alone. PINs and PUKs are read with a
hidden prompt unless given as options, and never printed.

``sweep`` is the operator's: it works on the identity database and Redis directly, like
``onecard identity ...``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from identity.cards import upkeep
from identity.pki.certificates import card_applications, card_pseudonym, card_serial_of
from identity.scopes import APPLICATIONS
from identity.simulators.card import CardError, VirtualCard
from services.kit.credentials import ClientCredentials

app = typer.Typer(
    no_args_is_help=True, help="Citizen cards: a virtual card file, issued and activated."
)
console = Console(stderr=True)

CARDS_PATH = "/identity/cards"
MANAGE_SCOPE = "card.manage"
TIMEOUT = 15.0

CardFile = Annotated[Path, typer.Argument(help="The virtual card file (JSON, mode 0600).")]
Admin = Annotated[
    Path,
    typer.Option(
        help="An administrator's client credentials file (from `onecard identity add-client "
        "--kind admin --scope card.manage`)."
    ),
]
BaseUrl = Annotated[
    str | None,
    typer.Option(help="The platform's public URL (the gateway); default: the credentials'."),
]


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]{message}[/red]", markup=True, highlight=False)
    return typer.Exit(1)


def _load(path: Path) -> VirtualCard:
    try:
        return VirtualCard.load(path)
    except CardError as exc:
        raise _fail(str(exc)) from None


def _secret(value: str | None, prompt: str, *, confirm: bool = False) -> str:
    if value is not None:
        return value
    entered: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return entered


def _credentials(path: Path) -> ClientCredentials:
    try:
        return ClientCredentials.load(path)
    except (OSError, ValueError, KeyError) as exc:
        raise _fail(f"cannot read the credentials file {path}: {exc}") from None


async def _call_as_admin(
    credentials: ClientCredentials, base_url: str | None, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    """One request with a fresh card.manage token (SMART Backend Services, private_key_jwt)."""
    async with httpx.AsyncClient(
        base_url=base_url or credentials.base_url, timeout=TIMEOUT
    ) as http:
        token = await credentials.fetch_token(http, MANAGE_SCOPE)
        return await http.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs
        )


def _admin_request(
    admin: Path, base_url: str | None, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    credentials = _credentials(admin)
    try:
        return asyncio.run(_call_as_admin(credentials, base_url, method, path, **kwargs))
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach {base_url or credentials.base_url}: {exc}") from None
    except RuntimeError as exc:  # fetch_token: the token endpoint refused, with its reason
        raise _fail(str(exc)) from None


def _refused(response: httpx.Response) -> typer.Exit:
    try:
        detail = response.json().get("detail") or response.text
    except ValueError:
        detail = response.text
    return _fail(f"refused ({response.status_code}): {detail}")


@app.command()
def new(card_file: CardFile) -> None:
    """Make a new card: its key pair is generated on it; the serial comes when it is issued."""
    try:
        VirtualCard.create(card_file)
    except CardError as exc:
        raise _fail(str(exc)) from None
    console.print(f"new card in {card_file}: EC P-256 key pair generated on the card")


@app.command()
def csr(
    card_file: CardFile,
    citizen: Annotated[str, typer.Option(help="The holder's pseudonymous id.")],
) -> None:
    """Print the card's certificate request (PEM), signed on the card, in the holder's name."""
    card = _load(card_file)
    try:
        typer.echo(card.csr(citizen), nl=False)
    except CardError as exc:
        raise _fail(str(exc)) from None


@app.command()
def issue(
    card_file: CardFile,
    citizen: Annotated[str, typer.Option(help="The holder's pseudonymous id.")],
    admin: Admin,
    app_: Annotated[
        list[str] | None,
        typer.Option(
            "--app",
            help=f"An application to enable (repeatable; default all): {', '.join(APPLICATIONS)}.",
        ),
    ] = None,
    base_url: BaseUrl = None,
) -> None:
    """Issue the card: post its CSR, then write the certificate (and serial) onto the card."""
    card = _load(card_file)
    if card.certificate is not None:
        raise _fail(f"{card_file} already holds a certificate (card {card.serial})")
    try:
        request = {"citizen": citizen, "applications": app_ or list(APPLICATIONS)}
        request["csr"] = card.csr(citizen)
    except CardError as exc:
        raise _fail(str(exc)) from None
    response = _admin_request(admin, base_url, "POST", CARDS_PATH, json=request)
    if response.status_code != 201:
        raise _refused(response)
    body = response.json()
    try:
        card.install_certificate(body["certificate"])
    except CardError as exc:
        raise _fail(f"the card refused its certificate: {exc}") from None
    typer.echo(f"serial: {body['serial']}")
    typer.echo(f"status: {body['status']}")
    typer.echo(f"applications: {' '.join(body['applications'])}")
    typer.echo(f"not_after: {body['not_after']}")
    console.print("next: the holder chooses a PIN and `onecard card activate` marks it active")


@app.command()
def activate(
    card_file: CardFile,
    admin: Admin,
    pin: Annotated[
        str | None, typer.Option(help="The holder's first PIN (6 digits); prompted if absent.")
    ] = None,
    puk: Annotated[str | None, typer.Option(help="The PUK (8 digits); prompted if absent.")] = None,
    base_url: BaseUrl = None,
) -> None:
    """Set the first PIN and the PUK on the card, then mark the card active at the service."""
    card = _load(card_file)
    if card.certificate is None:
        raise _fail(f"{card_file} holds no certificate yet: `onecard card issue` it first")
    try:
        if not card.activated:
            card.activate(
                _secret(pin, "New PIN (6 digits)", confirm=True),
                _secret(puk, "PUK (8 digits)", confirm=True),
            )
    except CardError as exc:
        raise _fail(str(exc)) from None
    response = _admin_request(admin, base_url, "POST", f"{CARDS_PATH}/{card.serial}/activate")
    if response.status_code == 409 and response.json().get("card_status") == "active":
        typer.echo("status: active (already)")
        return
    if response.status_code != 200:
        raise _refused(response)
    typer.echo(f"status: {response.json()['status']}")


@app.command("change-pin")
def change_pin(
    card_file: CardFile,
    old: Annotated[str | None, typer.Option(help="The current PIN; prompted if absent.")] = None,
    new: Annotated[str | None, typer.Option(help="The new PIN; prompted if absent.")] = None,
) -> None:
    """Change the PIN on the card (a wrong current PIN counts towards the block)."""
    card = _load(card_file)
    try:
        card.change_pin(
            _secret(old, "Current PIN"), _secret(new, "New PIN (6 digits)", confirm=True)
        )
    except CardError as exc:
        raise _fail(str(exc)) from None
    console.print("PIN changed")


@app.command()
def unblock(
    card_file: CardFile,
    puk: Annotated[str | None, typer.Option(help="The PUK; prompted if absent.")] = None,
    new_pin: Annotated[str | None, typer.Option(help="The new PIN; prompted if absent.")] = None,
) -> None:
    """Unblock the PIN with the PUK and set a new PIN (10 wrong PUKs kill the card)."""
    card = _load(card_file)
    try:
        card.unblock(_secret(puk, "PUK"), _secret(new_pin, "New PIN (6 digits)", confirm=True))
    except CardError as exc:
        raise _fail(str(exc)) from None
    console.print("PIN unblocked and set")


@app.command()
def status(card_file: CardFile) -> None:
    """What the card file says: serial, PIN tries, blocks, and its certificate."""
    card = _load(card_file)
    lines = [
        ("serial", card.serial if card.has_serial else "(none yet: assigned at issue)"),
        ("activated", "yes" if card.activated else "no"),
        ("pin_tries_left", str(card.pin_tries_left)),
        ("puk_tries_left", str(card.puk_tries_left)),
        ("pin_blocked", "yes" if card.pin_blocked else "no"),
        ("blocked_for_good", "yes" if card.permanently_blocked else "no"),
    ]
    certificate = card.certificate
    if certificate is None:
        lines.append(("certificate", "(none)"))
    else:
        lines += [
            ("holder", card_pseudonym(certificate) or "?"),
            ("certificate_card_serial", card_serial_of(certificate) or "?"),
            ("applications", " ".join(sorted(card_applications(certificate)))),
            ("not_after", certificate.not_valid_after_utc.isoformat()),
            ("certificate_serial", f"{certificate.serial_number:040x}"),
        ]
    for key, value in lines:
        typer.echo(f"{key}: {value}")


@app.command()
def sweep(
    since_hours: Annotated[
        float, typer.Option(help="Also republish every card whose status changed this recently.")
    ] = 24.0,
) -> None:
    """Operator: persist expiry of cards past their notAfter, and rebuild the Redis statuses."""
    # Imported here: the other commands run on a holder's machine without the service's config.
    from identity.settings import IdentitySettings
    from services.kit.database import Database
    from services.kit.redis import connect

    settings = IdentitySettings()

    async def run() -> tuple[int, int]:
        db = Database.for_settings(settings)
        redis = connect(
            url=settings.redis_url, var_dir=settings.var_dir, prefix=settings.redis_prefix
        )
        try:
            return await upkeep.sweep(
                db, redis, since=datetime.now(UTC) - timedelta(hours=since_hours)
            )
        finally:
            await redis.close()
            await db.dispose()

    expired, published = asyncio.run(run())
    console.print(f"expired {expired} card(s); published the status of {published} card(s)")
