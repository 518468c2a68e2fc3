"""The export itself: an asyncio task in the health process, started by the kick-off.

It pages through the store in primary-key order (bounded memory whatever its size), keeps the
records the hospital may read (:mod:`health.access`: what it wrote, records in no patient's
compartment, and the ordinary records of patients who consented to it; sensitive ones only
when the consent names their labels; never under break-glass, which is for one emergency, not
for bulk copies), and streams them to one NDJSON file per type (ndjson.org; export.html#file-
request). Every page renews the job's heartbeat and checks it was not cancelled.

Before the job is marked complete, the export is written to the audit ledger, one entry per
patient (action R, detail ``$export``): at level 3 the ledger confirms each, or the job fails
and its files are deleted, so no file is ever served unaudited.

A job that stops with its process (shutdown or crash) is marked failed, not resumed: the
client kicks off again. At shutdown that happens at once; after a crash, once its heartbeat is
older than ``STALE_AFTER`` (:func:`health.bulk.service.sweep`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import orjson
from fastapi import FastAPI, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from health import access, consent
from health.bulk import repository
from health.bulk.models import COMPLETED, FAILED
from health.bulk.parameters import ExportParameters
from health.citizens import citizens_of
from health.store.models import ResourceRow
from services.kit.app import Runtime
from services.kit.audit import audit_access
from services.kit.context import current_request_id
from services.kit.database import Database
from services.kit.errors import Problem
from services.kit.protection import ProtectionPolicy
from services.kit.sqltypes import utcnow
from services.kit.tokens import AccessToken

log = logging.getLogger(__name__)

# A running export renews its heartbeat with every page (a few per second); one silent this
# long died with its process.
STALE_AFTER = timedelta(minutes=2)
# Patients per query for a Group's members (bounded query size on both backends).
MEMBERS_PER_QUERY = 500
# Patients per batch of ledger entries.
AUDIT_BATCH = 500


@dataclass(slots=True)
class Export:
    """One export's inputs (fixed at kick-off)."""

    job_id: str
    request: Request
    token: AccessToken
    params: ExportParameters
    # None: every patient's compartment and records in none (system); () with
    # compartment_only: every patient (Patient level); else these patients (Group level).
    patients: tuple[str, ...] | None
    compartment_only: bool
    directory: Path
    consented: frozenset[str]
    policy: ProtectionPolicy


@dataclass(slots=True)
class _Output:
    """The files being written and what went into them."""

    directory: Path
    handles: dict[str, IO[bytes]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    # (patient key, type) -> highest level exported, for the ledger.
    touched: dict[tuple[str | None, str], int] = field(default_factory=dict)

    def write(self, lines: dict[str, list[bytes]]) -> None:
        for resource_type, items in lines.items():
            handle = self.handles.get(resource_type)
            if handle is None:
                handle = self.handles[resource_type] = open(  # noqa: SIM115 - closed in close()
                    self.directory / file_name(resource_type), "wb"
                )
            handle.writelines(items)
            self.counts[resource_type] = self.counts.get(resource_type, 0) + len(items)

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def file_name(resource_type: str) -> str:
    return f"{resource_type}.ndjson"


class Exports:
    """The export tasks this process runs (``app.state.bulk_exports``)."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, runtime: Runtime, export: Export) -> None:
        task = asyncio.get_running_loop().create_task(
            _run(runtime, export), name=f"bulk-export-{export.job_id}"
        )
        self.tasks[export.job_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(export.job_id, None))

    async def stop(self, job_id: str) -> None:
        """Stop a job's task in this process, if it runs here, and wait for it."""
        task = self.tasks.get(job_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def stop_all(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def exports_of(app: FastAPI) -> Exports:
    exports: Exports | None = getattr(app.state, "bulk_exports", None)
    if exports is None:
        exports = app.state.bulk_exports = Exports()
    return exports


async def shutdown(app: FastAPI) -> None:
    """The health app's shutdown hook: running exports end as failed (see module docstring)."""
    await exports_of(app).stop_all()


def _database(runtime: Runtime) -> Database:
    if runtime.db is None:
        raise RuntimeError("the health service owns a database")
    return runtime.db


async def _run(runtime: Runtime, export: Export) -> None:
    db = _database(runtime)
    output = _Output(export.directory)
    completed = False
    try:
        await asyncio.to_thread(export.directory.mkdir, parents=True, exist_ok=True)
        if not await _copy(runtime, export, output):
            return  # cancelled by the client; its files are removed below
        output.close()
        await _audit(runtime, export, output)
        files = [
            {"type": t, "file": file_name(t), "count": n} for t, n in sorted(output.counts.items())
        ]
        async with db.unit_of_work() as session:
            completed = await repository.end_job(
                session,
                job_id=export.job_id,
                status=COMPLETED,
                now=utcnow(),
                files=orjson.dumps(files).decode(),
            )
        if completed:
            log.info("bulk.export.completed", extra={"job": export.job_id, "count": output.total})
    except asyncio.CancelledError:
        # Cancelled by the client (the job already says so: this changes nothing) or by the
        # shutdown of the process.
        await _end(db, export.job_id, "the server stopped during the export: kick off again")
        raise
    except Problem as exc:  # the audit ledger did not confirm: nothing may be served
        await _end(db, export.job_id, exc.detail, status=503)
    except Exception:
        log.exception("bulk.export.failed", extra={"job": export.job_id})
        request_id = current_request_id()
        await _end(db, export.job_id, f"the export failed unexpectedly (request id {request_id})")
    finally:
        output.close()
        if not completed:
            shutil.rmtree(export.directory, ignore_errors=True)


async def _end(db: Database, job_id: str, error: str, *, status: int = 500) -> None:
    try:
        async with db.unit_of_work() as session:
            await repository.end_job(
                session, job_id=job_id, status=FAILED, now=utcnow(), error=f"{status} {error}"[:500]
            )
    except Exception:
        # The database is unreachable: the job's heartbeat stops, and the next sweep ends it.
        log.exception("bulk.export.unrecorded_failure", extra={"job": job_id})


async def _copy(runtime: Runtime, export: Export, output: _Output) -> bool:
    """Write every record the export covers; False if the job was cancelled meanwhile."""
    db = _database(runtime)
    readable = _TypeScopes(export.token)
    permissions: dict[str, consent.Permission] = {}
    patients = export.patients
    chunks: list[Sequence[str] | None]
    if patients is None or (export.compartment_only and not patients):
        chunks = [None]
    else:
        chunks = [
            patients[i : i + MEMBERS_PER_QUERY] for i in range(0, len(patients), MEMBERS_PER_QUERY)
        ]
    readable_by = (
        (export.token.client_id, export.consented)
        if len(export.consented) <= repository.MAX_CONSENTED_IN_QUERY
        else None
    )
    for chunk in chunks:
        after: tuple[str, str] | None = None
        while True:
            async with db.unit_of_work() as session:
                rows = await repository.records_page(
                    session,
                    after=after,
                    types=export.params.types,
                    since=export.params.since,
                    patients=chunk,
                    compartment_only=export.compartment_only,
                    readable_by=readable_by,
                )
                lines: dict[str, list[bytes]] = {}
                for row in rows:
                    if not readable(row.resource_type):
                        continue
                    level = await _level_if_readable(session, export, row, permissions)
                    if level is None:
                        continue
                    lines.setdefault(row.resource_type, []).append(_line(row.content))
                    key = (row.patient_key, row.resource_type)
                    output.touched[key] = max(level, output.touched.get(key, 0))
            # Written in the loop's thread: a page is small and the OS buffers it, and a write
            # cannot then race the clean-up of a cancelled job.
            output.write(lines)
            async with db.unit_of_work() as session:
                running = await repository.touch(
                    session,
                    job_id=export.job_id,
                    progress=f"{output.total} resources exported",
                    now=utcnow(),
                )
            if not running:
                return False
            if len(rows) < repository.PAGE_SIZE:
                break
            after = (rows[-1].resource_type, rows[-1].id)
    return True


class _TypeScopes:
    """Which types the token may read (SMART v2 ``.r`` in any context), asked once per type."""

    def __init__(self, token: AccessToken) -> None:
        self.token = token
        self.known: dict[str, bool] = {}

    def __call__(self, resource_type: str) -> bool:
        allowed = self.known.get(resource_type)
        if allowed is None:
            try:
                access.check_read(self.token, resource_type)
                allowed = True
            except Problem:
                allowed = False
            self.known[resource_type] = allowed
        return allowed


async def _level_if_readable(
    session: AsyncSession,
    export: Export,
    row: ResourceRow,
    permissions: dict[str, consent.Permission],
) -> int | None:
    """The record's protection level if the hospital may export it, else None."""
    resource: dict[str, Any] = orjson.loads(row.content) if '"security"' in row.content else {}
    level = access.level_of(export.policy, row.resource_type, resource)
    client_id = export.token.client_id
    if row.patient_key is None or row.author == client_id:
        return level
    if row.patient_key not in export.consented:
        return None
    if level < 4:
        return level
    permission = permissions.get(row.patient_key)
    if permission is None:
        permission = permissions[row.patient_key] = await consent.permission(
            session, patient_key=row.patient_key, client_id=client_id
        )
    labels = [
        (label.get("system"), label.get("code", ""))
        for label in (resource.get("meta") or {}).get("security") or []
    ]
    return level if permission.covers(labels, True) else None


def _line(content: str) -> bytes:
    # NDJSON: one resource per line. The store writes compact JSON; a stored document with a
    # line break (never written by this store, but cheap to guard) is re-serialized.
    if "\n" in content:
        return orjson.dumps(orjson.loads(content)) + b"\n"
    return content.encode() + b"\n"


async def _audit(runtime: Runtime, export: Export, output: _Output) -> None:
    """One ledger entry per patient whose records went into the files (and one for records
    in no patient's compartment), before any file can be downloaded."""
    db = _database(runtime)
    levels: dict[str | None, int] = {}
    types: dict[str | None, set[str]] = {}
    for (patient_key, resource_type), level in output.touched.items():
        levels[patient_key] = max(level, levels.get(patient_key, 0))
        types.setdefault(patient_key, set()).add(resource_type)
    keys = list(levels)
    for start in range(0, len(keys), AUDIT_BATCH):
        batch = keys[start : start + AUDIT_BATCH]
        async with db.unit_of_work() as session:
            citizens = await citizens_of(session, {key for key in batch if key is not None})
            # Auditing a large export takes a while too: keep the heartbeat going.
            await repository.touch(
                session,
                job_id=export.job_id,
                progress=f"{output.total} resources exported, auditing",
                now=utcnow(),
            )
        await asyncio.gather(
            *(
                audit_access(
                    export.request,
                    action="R",
                    entity_type=_entity_type(types[key]),
                    citizen=citizens.get(key) if key is not None else None,
                    level=levels[key],
                    purpose=access.TREATMENT,
                    detail="$export",
                    token=export.token,
                )
                for key in batch
            )
        )


def _entity_type(types: set[str]) -> str:
    # As health.auditing does for a request that touched several types of one patient.
    return next(iter(types)) if len(types) == 1 else "Bundle"
