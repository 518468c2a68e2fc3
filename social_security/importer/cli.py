"""``onecard social-security ...``: the bureau's bulk import, and synthetic files to try it on.

``import`` works on the social-security service's own database, found from the same settings
the service reads (``ONECARD_DATABASE_URL_SOCIAL_SECURITY``, ``ONECARD_DATABASE_URL``, or
SQLite under ``ONECARD_VAR_DIR``), created and migrated first if needed exactly as the service
does at start-up. Exit status: 0 every row loaded, 1 some rows refused (see the error report),
2 the file could not be read as one of the formats.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from services.kit.database import Database
from services.kit.migrations import alembic_config, upgrade
from social_security.importer import generate
from social_security.importer.formats import FileKind, FormatError
from social_security.importer.run import DEFAULT_CHUNK_ROWS, ImportConflict, ImportReport
from social_security.importer.run import import_file as run_import
from social_security.settings import SocialSecuritySettings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Social security: the bureau's CSV imports, scheme rules, designated institutions.",
)
console = Console(stderr=True)


@app.callback()
def social_security() -> None:
    """Social security: bulk import of the bureau's enrolments and contributions."""


async def open_database(settings: SocialSecuritySettings) -> Database:
    """The service's own database, created and migrated to head as the service does at start."""
    db = Database.for_settings(settings)
    await db.ensure_exists()
    config = alembic_config(
        service=settings.service,
        migrations_dir=MIGRATIONS,
        database_url=db.url.render_as_string(hide_password=False),
        connect_args=db.connect_args(),
    )
    await asyncio.to_thread(upgrade, config)
    return db


@app.command("import")
def import_command(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="The bureau's CSV export."),
    ],
    database_url: Annotated[
        str | None,
        typer.Option(
            help="A database server for all services, as ONECARD_DATABASE_URL (this service "
            "uses <database>_social_security on it). Default: the service's own settings.",
        ),
    ] = None,
    chunk_rows: Annotated[
        int, typer.Option(min=1, help="Rows per transaction (the unit a rerun resumes after).")
    ] = DEFAULT_CHUNK_ROWS,
    encoding: Annotated[
        str, typer.Option(help="The file's text encoding, e.g. gbk for older exports.")
    ] = "utf-8-sig",
) -> None:
    """Load enrolments or contributions; resumable, idempotent; refused rows in FILE.errors.csv."""
    settings = (
        SocialSecuritySettings(database_url=database_url)
        if database_url
        else SocialSecuritySettings()
    )

    async def run(progress: Progress) -> ImportReport:
        task = progress.add_task(f"importing {file.name}", total=None)
        db = await open_database(settings)
        try:
            return await run_import(
                db,
                file,
                chunk_rows=chunk_rows,
                encoding=encoding,
                progress=lambda done, size: progress.update(task, completed=done, total=size),
            )
        finally:
            await db.dispose()

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            report = asyncio.run(run(progress))
    except FormatError as exc:
        console.print(f"[red]{file.name}: {exc}[/red]")
        raise typer.Exit(2) from None
    except ImportConflict as exc:
        console.print(f"[red]{file.name}: {exc}[/red]")
        raise typer.Exit(2) from None
    _print(report)
    if report.rows_failed:
        raise typer.Exit(1)


def _print(report: ImportReport) -> None:
    name = report.file.name
    if report.already_finished:
        console.print(f"{name}: already imported ({report.rows_done:,} rows); nothing to do")
    else:
        resumed = f", resumed after row {report.resumed_after:,}" if report.resumed_after else ""
        console.print(
            f"{name}: {report.kind} - {report.rows_done:,} rows{resumed}; this run loaded "
            f"{report.rows_loaded:,}, found {report.rows_unchanged:,} already recorded, "
            f"credited {report.credited_fen / 100:,.2f} yuan to individual accounts"
            if report.kind is FileKind.CONTRIBUTIONS
            else f"{name}: {report.kind} - {report.rows_done:,} rows{resumed}; this run loaded "
            f"{report.rows_loaded:,}"
        )
    if report.rows_failed:
        console.print(
            f"[yellow]{report.rows_failed:,} rows refused: see {report.errors_path}[/yellow]"
        )


@app.command("generate")
def generate_command(
    out: Annotated[Path, typer.Argument(dir_okay=False, help="Where to write the CSV file.")],
    kind: Annotated[FileKind, typer.Option(help="enrolments or contributions.")] = (
        FileKind.CONTRIBUTIONS
    ),
    citizens: Annotated[int, typer.Option(min=1, help="How many citizens.")] = 1_000,
    months: Annotated[int, typer.Option(min=1, help="Months of contributions.")] = 12,
    first_month: Annotated[str, typer.Option(help="The first month, YYYY-MM.")] = "2025-01",
    seed: Annotated[int, typer.Option(help="Another seed, other citizens.")] = 0,
) -> None:
    """Write a synthetic bureau file (for trying the import and for the benchmark)."""
    if kind is FileKind.ENROLMENTS:
        rows = generate.write_enrolments(out, citizens=citizens, seed=seed)
    else:
        rows = generate.write_contributions(
            out, citizens=citizens, months_count=months, first_month=first_month, seed=seed
        )
    console.print(f"wrote {rows:,} {kind} rows to {out}")
