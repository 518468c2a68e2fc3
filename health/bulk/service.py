"""The rules of ``$export``: who may kick off what, one running job per client, retention.

Bulk Data Access v2 export.html: a kick-off answers 202 with the status URL; the status URL
answers 202 while the job runs, 200 with the manifest once it is complete, an OperationOutcome
if it failed, and 404 after a DELETE cancelled it (or its files passed retention).
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from health import access
from health.bulk import repository
from health.bulk.exporter import STALE_AFTER, Export, Exports
from health.bulk.models import CANCELLED, FAILED, GROUP, IN_PROGRESS, PATIENT, ExportJob
from health.bulk.parameters import ExportParameters
from health.fhir.references import reference_target
from health.store.versions import Version
from services.kit.app import Runtime
from services.kit.database import Database
from services.kit.errors import Problem
from services.kit.protection import ProtectionPolicy, policy_of
from services.kit.sqltypes import utcnow
from services.kit.tokens import AccessToken

# export.html#bulk-data-status-request: how long a client should wait between polls.
RETRY_AFTER_SECONDS = 2


def directory_of(runtime: Runtime, job_id: str) -> Path:
    return Path(runtime.settings.var_dir) / "bulk" / job_id


async def kick_off(
    *,
    session: AsyncSession,
    runtime: Runtime,
    exports: Exports,
    request: Request,
    token: AccessToken,
    kind: str,
    params: ExportParameters,
    request_url: str,
    group_id: str | None = None,
) -> ExportJob:
    """Start an export job; 403, 404 or 429 when it may not start."""
    if token.sub != token.client_id:
        # Bulk Data is for backend services (SMART Backend Services): a hospital's system,
        # never a person's token from a terminal or app.
        raise Problem(403, "$export is for a hospital's backend system (client credentials)")
    for resource_type in params.types or ():
        access.check_read(token, resource_type)
    await sweep(runtime=runtime, exports=exports)
    patients: tuple[str, ...] | None = None
    if kind == PATIENT:
        patients = ()
    reader = await access.reader_of(session, token)
    if kind == GROUP:
        access.check_read(token, "Group")
        patients = await _members(session, reader, group_id or "", policy_of(request))
    consented, _glass = await access.readable_patients(session, reader)
    job = await _create_job(
        runtime=runtime, token=token, kind=kind, params=params, request_url=request_url
    )
    exports.start(
        runtime,
        Export(
            job_id=job.id,
            request=request,
            token=token,
            params=params,
            patients=patients,
            compartment_only=kind == PATIENT,
            directory=directory_of(runtime, job.id),
            consented=frozenset(consented),
            policy=policy_of(request),
        ),
    )
    return job


async def _create_job(
    *, runtime: Runtime, token: AccessToken, kind: str, params: ExportParameters, request_url: str
) -> ExportJob:
    # Its own unit of work, committed before the export task starts, so the task always finds
    # its job; the unique active_client index refuses a second running job even when two
    # kick-offs race.
    db = _db(runtime)
    now = utcnow()
    job = ExportJob(
        id=uuid.uuid4().hex,
        client_id=token.client_id,
        active_client=token.client_id,
        kind=kind,
        params=params.to_json(),
        request_url=request_url,
        status=IN_PROGRESS,
        progress="accepted",
        files="[]",
        transaction_time=now,
        created_at=now,
        heartbeat_at=now,
    )
    try:
        async with db.unit_of_work() as session:
            running = await repository.active_job(session, token.client_id)
            if running is not None:
                raise _too_many()
            session.add(job)
            await session.flush()
    except IntegrityError:
        raise _too_many() from None
    return job


def _too_many() -> Problem:
    # export.html: a server may limit concurrent exports; 429 with Retry-After (RFC 6585).
    return Problem(
        429,
        "this client already has an export running: poll its status URL until it completes, "
        "or cancel it (DELETE on the status URL), before kicking off another",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS * 5)},
    )


async def _members(
    session: AsyncSession, reader: access.Reader, group_id: str, policy: ProtectionPolicy
) -> tuple[str, ...]:
    """The Patient ids of a Group's active members (Group.member.entity, FHIR R4 group.html)."""
    row = await repository.group_content(session, group_id)
    if row is None:
        raise Problem(404, f"Group/{group_id} is not known")
    # A Group is in its members' compartments: reading it follows the same rules as any record.
    version = Version.of(row)
    await access.check_may_read(
        session, reader, version, level=access.record_level(policy, version)
    )
    group: dict[str, Any] = orjson.loads(row.content)
    members: list[str] = []
    for member in group.get("member") or []:
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        reference = (member.get("entity") or {}).get("reference")
        parsed = reference_target(reference)
        if parsed is not None and parsed[0] == "Patient":
            members.append(parsed[1])
    return tuple(dict.fromkeys(members))


async def job_of(session: AsyncSession, *, job_id: str, client_id: str) -> ExportJob:
    """The client's own job; 404 for another client's (its existence is not disclosed)."""
    job = await repository.get_job(session, job_id)
    if job is None or job.client_id != client_id or job.status == CANCELLED:
        raise Problem(404, f"no export job {job_id} (unknown, cancelled or past retention)")
    return job


def _db(runtime: Runtime) -> Database:
    if runtime.db is None:
        raise RuntimeError("the health service owns a database")
    return runtime.db


async def cancel(*, runtime: Runtime, exports: Exports, job: ExportJob) -> None:
    """export.html#bulk-data-delete-request: stop the job and delete its files."""
    # Committed before the task is stopped: the task's own last write must not wait on it.
    async with _db(runtime).unit_of_work() as session:
        if not await repository.end_job(session, job_id=job.id, status=CANCELLED, now=utcnow()):
            await repository.mark_cancelled(session, job.id)
    await exports.stop(job.id)
    await asyncio.to_thread(shutil.rmtree, directory_of(runtime, job.id), True)


async def sweep(*, runtime: Runtime, exports: Exports) -> None:
    """End the jobs whose process died, and delete the files past retention."""
    now = utcnow()
    settings: Any = runtime.settings
    retention = timedelta(seconds=settings.bulk_retention_seconds)
    async with _db(runtime).unit_of_work() as session:
        stale = [
            job
            for job in await repository.stale_jobs(session, before=now - STALE_AFTER)
            # A job running here is alive, only slow to write its heartbeat.
            if job.id not in exports.tasks
        ]
        for job in stale:
            await repository.end_job(
                session,
                job_id=job.id,
                status=FAILED,
                now=now,
                error="503 the server stopped during the export: kick off again",
            )
        expired: Sequence[ExportJob] = await repository.expired_jobs(
            session, before=now - retention
        )
        for job in expired:
            await repository.delete_job(session, job.id)
    for job in [*stale, *expired]:
        await asyncio.to_thread(shutil.rmtree, directory_of(runtime, job.id), True)


def expires_at(runtime: Runtime, job: ExportJob) -> datetime | None:
    """When a finished job's files will be deleted."""
    if job.finished_at is None:
        return None
    settings: Any = runtime.settings
    return job.finished_at + timedelta(seconds=settings.bulk_retention_seconds)


def failure(job: ExportJob) -> Problem:
    """The error a failed job answers with (export.html#response---error-status-1)."""
    status, _, detail = (job.error or "500 the export failed").partition(" ")
    code = int(status) if status.isdigit() else 500
    return Problem(code, detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def output_files(job: ExportJob) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = orjson.loads(job.files)
    return files
