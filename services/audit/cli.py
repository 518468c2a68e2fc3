"""``onecard audit ...``: the auditor's commands (read the audit database from settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="The audit ledger.")


@app.callback()
def audit() -> None:
    """The audit ledger: verify its integrity from its database."""


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
    verdict = "OK" if report.ok else f"{len(report.findings)} problem(s)"
    typer.echo(
        f"{verdict}: {report.entries} entries, {report.checkpoints} checkpoints, "
        f"{report.seconds:.2f} s, {report.entries_per_second:,.0f} entries/s"
    )
    if not report.ok:
        raise typer.Exit(1)
