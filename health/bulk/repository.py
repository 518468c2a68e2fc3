"""The only place the bulk package queries: export jobs, and the records an export reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from health.bulk.models import CANCELLED, IN_PROGRESS, ExportJob
from health.store.models import ResourceRow

# Rows read per query while exporting: memory stays bounded whatever the store's size.
PAGE_SIZE = 500
# Up to this many consenting patients are named in the query itself (bounded query size).
MAX_CONSENTED_IN_QUERY = 500


async def get_job(session: AsyncSession, job_id: str) -> ExportJob | None:
    return await session.get(ExportJob, job_id)


async def active_job(session: AsyncSession, client_id: str) -> ExportJob | None:
    """The client's running export, if any."""
    return (
        await session.exec(select(ExportJob).where(col(ExportJob.active_client) == client_id))
    ).first()


async def touch(session: AsyncSession, *, job_id: str, progress: str, now: datetime) -> bool:
    """Record progress and a heartbeat; False when the job is no longer running (cancelled)."""
    result = await session.exec(
        update(ExportJob)
        .where(col(ExportJob.id) == job_id, col(ExportJob.status) == IN_PROGRESS)
        .values(progress=progress, heartbeat_at=now)
    )
    return bool(result.rowcount)


async def end_job(
    session: AsyncSession,
    *,
    job_id: str,
    status: str,
    now: datetime,
    files: str | None = None,
    error: str | None = None,
) -> bool:
    """End a running job (completed, failed or cancelled); False if it had already ended."""
    values: dict[str, object] = {
        "status": status,
        "active_client": None,
        "finished_at": now,
        "heartbeat_at": now,
        "progress": None,
        "error": error,
    }
    if files is not None:
        values["files"] = files
    result = await session.exec(
        update(ExportJob)
        .where(col(ExportJob.id) == job_id, col(ExportJob.status) == IN_PROGRESS)
        .values(**values)
    )
    return bool(result.rowcount)


async def mark_cancelled(session: AsyncSession, job_id: str) -> None:
    """An ended job the client is done with: its status URL answers 404 from now on."""
    await session.exec(
        update(ExportJob).where(col(ExportJob.id) == job_id).values(status=CANCELLED)
    )


async def stale_jobs(session: AsyncSession, *, before: datetime) -> Sequence[ExportJob]:
    """Running jobs whose heartbeat stopped before ``before``."""
    return (
        await session.exec(
            select(ExportJob).where(
                col(ExportJob.status) == IN_PROGRESS, col(ExportJob.heartbeat_at) < before
            )
        )
    ).all()


async def expired_jobs(session: AsyncSession, *, before: datetime) -> Sequence[ExportJob]:
    """Jobs that ended before ``before``: their files are past retention."""
    return (
        await session.exec(
            select(ExportJob).where(
                col(ExportJob.finished_at).is_not(None), col(ExportJob.finished_at) < before
            )
        )
    ).all()


async def delete_job(session: AsyncSession, job_id: str) -> None:
    job = await session.get(ExportJob, job_id)
    if job is not None:
        await session.delete(job)


async def records_page(
    session: AsyncSession,
    *,
    after: tuple[str, str] | None,
    types: Sequence[str] | None,
    since: datetime | None,
    patients: Sequence[str] | None,
    compartment_only: bool,
    readable_by: tuple[str, frozenset[str]] | None = None,
) -> Sequence[ResourceRow]:
    """The next page of current, not deleted records, in (type, id) order after ``after``.

    Keyset paging on the primary key: every page is an index range scan, however deep.
    """
    query = select(ResourceRow).where(col(ResourceRow.deleted).is_(False))
    if types is not None:
        query = query.where(col(ResourceRow.resource_type).in_(types))
    if since is not None:
        # export.html: "resources will be included in the response if their state has changed
        # after the supplied time"; the instant itself is included too, so a client that passes
        # the previous manifest's transactionTime misses nothing.
        query = query.where(col(ResourceRow.last_updated) >= since)
    if patients is not None:
        query = query.where(col(ResourceRow.patient_key).in_(patients))
    elif compartment_only:
        query = query.where(col(ResourceRow.patient_key).is_not(None))
    if readable_by is not None:
        # A first cut in the database of what the hospital may read (its own records, those in
        # no compartment, those of the patients who consented); the exporter decides per record.
        client_id, consented = readable_by
        readable = (col(ResourceRow.author) == client_id) | col(ResourceRow.patient_key).is_(None)
        if consented:
            readable = readable | col(ResourceRow.patient_key).in_(sorted(consented))
        query = query.where(readable)
    if after is not None:
        after_type, after_id = after
        query = query.where(
            (col(ResourceRow.resource_type) > after_type)
            | ((col(ResourceRow.resource_type) == after_type) & (col(ResourceRow.id) > after_id))
        )
    query = query.order_by(col(ResourceRow.resource_type), col(ResourceRow.id)).limit(PAGE_SIZE)
    return (await session.exec(query)).all()


async def group_content(session: AsyncSession, group_id: str) -> ResourceRow | None:
    """The current Group ``group_id`` (None if it does not exist or was deleted)."""
    row = await session.get(ResourceRow, ("Group", group_id))
    if row is None or row.deleted:
        return None
    return row
