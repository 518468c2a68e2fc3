"""``onecard social-security rules ...`` and ``provider ...``: the bureau's reference data.

Rules are data (issue #6 item 2): a new version of a scheme's rules is a JSON document
(the shape of ``social_security/data/rules/*.json``) added here, effective from its date;
settlements of bills dated from then on use it, older bills keep the rules of their date.
Designated institutions (定点医疗机构) and their levels are registered here too. Both work on
the service's own database, found from the same settings the service reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.claims.reasons import BillRefused
from social_security.claims.reference import rules_for
from social_security.claims.rules import InvalidRules, parse_rule_set
from social_security.importer.cli import open_database
from social_security.models import ProviderRow
from social_security.reference_data import add_rule_set
from social_security.schemes import MEDICAL_SCHEMES, Scheme
from social_security.settings import SocialSecuritySettings

T = TypeVar("T")
console = Console()
errors = Console(stderr=True)
rules_app = typer.Typer(no_args_is_help=True, help="Versioned, effective-dated scheme rules.")
provider_app = typer.Typer(no_args_is_help=True, help="Designated medical institutions.")


def _in_database(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def run() -> T:
        db = await open_database(SocialSecuritySettings())
        try:
            async with db.unit_of_work() as session:
                return await work(session)
        finally:
            await db.dispose()

    return asyncio.run(run())


@rules_app.command("add")
def add_rules(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A rules document.")],
    author: Annotated[str, typer.Option(help="Who published it (kept with the version).")],
) -> None:
    """Add the next version of a scheme's rules (its ``version`` must be the next number)."""
    try:
        rules = parse_rule_set(file.read_bytes())
    except InvalidRules as exc:
        errors.print(f"[red]{file.name} is not a valid rules document:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        row = _in_database(lambda session: add_rule_set(session, rules, author=author))
    except ValueError as exc:
        errors.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(
        f"{row.scheme} rules version {row.version} for {row.year} stored, in effect from "
        f"{row.effective_from.isoformat()}"
    )


@rules_app.command("show")
def show_rules(
    scheme: Annotated[Scheme, typer.Argument(help="A medical scheme.")],
    on: Annotated[str, typer.Option(help="The date (YYYY-MM-DD) the rules are in effect.")],
) -> None:
    """Print the rules document in effect for ``scheme`` on a date."""
    if scheme not in MEDICAL_SCHEMES:
        errors.print(
            f"[red]{scheme.value} is not a medical scheme: it has no settlement rules[/red]"
        )
        raise typer.Exit(2)
    try:
        found = _in_database(
            lambda session: rules_for(session, scheme.value, date.fromisoformat(on))
        )
    except BillRefused as exc:
        errors.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{found.scheme} version {found.version}:")
    console.print_json(found.rules.to_json())


@provider_app.command("add")
def add_provider(
    facility: Annotated[
        str, typer.Option(help="The facility name its terminals are registered with.")
    ],
    level: Annotated[int, typer.Option(min=1, max=3, help="Hospital level 1, 2 or 3.")],
    kind: Annotated[str, typer.Option(help="hospital or pharmacy.")] = "hospital",
) -> None:
    """Designate (or re-grade) a medical institution for medical-insurance settlement."""
    if kind not in ("hospital", "pharmacy"):
        errors.print("[red]kind is hospital or pharmacy[/red]")
        raise typer.Exit(2)

    async def work(session: AsyncSession) -> None:
        await session.merge(ProviderRow(facility=facility.strip(), level=level, kind=kind))

    _in_database(work)
    console.print(f"{facility.strip()}: designated, level {level} {kind}")


def register(app: typer.Typer) -> None:
    app.add_typer(rules_app, name="rules")
    app.add_typer(provider_app, name="provider")
