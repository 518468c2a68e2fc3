"""``onecard audit ...``: the auditor's commands (read the audit database from settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="The audit ledger.")


@app.callback()
def audit() -> None:
    """The audit ledger: verify it, export and purge its oldest entries (retention)."""


@app.command()
def verify(
    chunk: Annotated[int, typer.Option(min=1, help="Entries read per query.")] = 10_000,
    key: Annotated[
        Path | None,
        typer.Option(
            help="A checkpoint public key (PEM) published by the ledger, trusted instead of "
            "the keys stored in its database."
        ),
    ] = None,
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            help="A signed checkpoint (JSON, as GET /audit/checkpoints/latest returns it) kept "
            "from earlier: the ledger must still match it (repeatable)."
        ),
    ] = None,
) -> None:
    """Recompute the Merkle tree from every entry; check every checkpoint; exit 1 on tampering."""
    import asyncio

    from services.audit.checkpoint import SignedCheckpoint, key_id_for
    from services.audit.checkpoints import load_public_pem
    from services.audit.settings import AuditSettings
    from services.audit.verify import Report, verify_ledger
    from services.kit.database import Database

    settings = AuditSettings()
    trusted = None
    if key is not None:
        public = load_public_pem(key.read_text())
        trusted = {key_id_for(public): public}
    try:
        pinned = [SignedCheckpoint.from_json(path.read_bytes()) for path in checkpoint or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--checkpoint") from None

    async def run() -> Report:
        db = Database.for_settings(settings)
        try:
            return await verify_ledger(
                db,
                algorithm=settings.hash_algorithm,
                chunk=chunk,
                trusted_keys=trusted,
                pinned=pinned,
            )
        finally:
            await db.dispose()

    report = asyncio.run(run())
    for finding in report.findings:
        typer.echo(f"TAMPERED {finding}")
    for note in report.notes:
        typer.echo(f"NOTE {note}")
    verdict = "OK" if report.ok else f"{len(report.findings)} problem(s)"
    purged = f" ({report.purged} purged)" if report.purged else ""
    typer.echo(
        f"{verdict}: {report.entries} entries{purged}, {report.checkpoints} checkpoints, "
        f"{report.seconds:.2f} s, {report.entries_per_second:,.0f} entries/s"
    )
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def export(
    upto: Annotated[
        int,
        typer.Option(
            min=1,
            help="Export the oldest stored entries below this sequence number (a tree size).",
        ),
    ],
    out: Annotated[Path, typer.Option(help="The file to write (gzip'ed JSON lines); new.")],
) -> None:
    """Write the oldest entries [start, UPTO) with their checkpoints, verifiable offline."""
    import asyncio

    from services.audit.export import ExportRefused, ExportReport, write_export
    from services.audit.settings import AuditSettings
    from services.kit.database import Database

    settings = AuditSettings()

    async def run() -> ExportReport:
        db = Database.for_settings(settings)
        try:
            return await write_export(db, upto=upto, out=out, algorithm=settings.hash_algorithm)
        finally:
            await db.dispose()

    try:
        report = asyncio.run(run())
    except ExportRefused as exc:
        typer.echo(f"REFUSED {exc}", err=True)
        raise typer.Exit(1) from None
    anchor = report.anchor.checkpoint.size if report.anchor is not None else "?"
    typer.echo(
        f"exported entries [{report.start}, {report.end}) to {out}: {report.entries} entries, "
        f"{report.checkpoints} checkpoints checked (anchor {anchor}), sha256 {report.sha256}"
    )


@app.command("verify-export")
def verify_export(
    file: Annotated[Path, typer.Argument(help="An export written by `onecard audit export`.")],
    key: Annotated[
        Path | None,
        typer.Option(
            help="The ledger's checkpoint public key (PEM, GET /audit/checkpoints/key), trusted "
            "instead of the key the file carries."
        ),
    ] = None,
) -> None:
    """Check an export offline (no database); exit 1 on any tampering."""
    from services.audit.checkpoint import key_id_for
    from services.audit.checkpoints import load_public_pem
    from services.audit.export import verify_export as check

    trusted = None
    if key is not None:
        try:
            public = load_public_pem(key.read_text())
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--key") from None
        trusted = {key_id_for(public): public}
    report = check(file, trusted_keys=trusted)
    for finding in report.findings:
        typer.echo(f"TAMPERED {finding}")
    if not report.ok:
        typer.echo(f"{len(report.findings)} problem(s) in {file}")
        raise typer.Exit(1)
    anchor = report.anchor.checkpoint.size if report.anchor is not None else "?"
    typer.echo(
        f"OK: entries [{report.start}, {report.end}) of {report.origin} ({report.algorithm}), "
        f"{report.checkpoints} checkpoints (anchor {anchor}), sha256 {report.sha256}"
    )
    if not report.trusted:
        typer.echo(
            f"NOTE signatures checked with the key in the file ({', '.join(report.key_ids)}); "
            "pass --key with the ledger's published key to rule out a re-signed copy"
        )


@app.command()
def purge(
    upto: Annotated[
        int, typer.Option(min=1, help="Remove the oldest entries below this sequence number.")
    ],
    export: Annotated[
        Path,
        typer.Option(
            "--export",
            help="The export of exactly those entries (`onecard audit export --upto ...`).",
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove the oldest entries: only past the retention period, exported and verified."""
    import asyncio

    from services.audit.retention import PurgeRefused, PurgeResult
    from services.audit.retention import purge as remove
    from services.audit.settings import AuditSettings
    from services.kit.database import Database

    settings = AuditSettings()
    if not yes:
        typer.confirm(
            f"Remove audit entries below {upto} from the ledger (kept in {export})?", abort=True
        )

    async def run() -> PurgeResult:
        db = Database.for_settings(settings)
        try:
            return await remove(
                db,
                upto=upto,
                export=export,
                retention_days=settings.audit_retention_days,
                algorithm=settings.hash_algorithm,
            )
        finally:
            await db.dispose()

    try:
        result = asyncio.run(run())
    except PurgeRefused as exc:
        typer.echo(f"REFUSED {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"purged entries [{result.start}, {result.end}): all recorded before "
        f"{result.cutoff.isoformat()} ({settings.audit_retention_days} days), export sha256 "
        f"{result.export_sha256}, covered by checkpoint {result.checkpoint_size}"
    )


@app.command()
def retention() -> None:
    """Where retention stands: the oldest entry kept, and how far a purge could go today."""
    import asyncio

    from services.audit.retention import RetentionStatus, retention_status
    from services.audit.settings import AuditSettings
    from services.kit.database import Database

    settings = AuditSettings()

    async def run() -> RetentionStatus:
        db = Database.for_settings(settings)
        try:
            return await retention_status(
                db,
                retention_days=settings.audit_retention_days,
                algorithm=settings.hash_algorithm,
            )
        finally:
            await db.dispose()

    status = asyncio.run(run())
    typer.echo(
        f"entries [{status.start}, {status.size}) kept, {status.start} purged; latest "
        f"checkpoint {status.checkpoint}; retention {settings.audit_retention_days} days "
        f"(entries recorded up to {status.cutoff.isoformat()} may go)"
    )
    if status.purgeable > status.start:
        typer.echo(
            f"purgeable now: [{status.start}, {status.purgeable}): "
            f"onecard audit export --upto {status.purgeable} --out FILE, then "
            f"onecard audit purge --upto {status.purgeable} --export FILE"
        )
    else:
        typer.echo("nothing to purge yet")
