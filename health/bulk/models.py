"""The export jobs table (migration 0005)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, String, Text
from sqlmodel import Field, SQLModel

from services.kit.sqltypes import utc_column

# export.html#bulk-data-status-request: a job is in progress, then complete or in error; a
# client's DELETE cancels it.
IN_PROGRESS = "in-progress"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"

SYSTEM = "system"
PATIENT = "patient"
GROUP = "group"


class ExportJob(SQLModel, table=True):
    """One ``$export`` kick-off and what became of it."""

    __tablename__ = "bulk_export_jobs"

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    client_id: str = Field(sa_column=Column(String(64), nullable=False))
    # client_id while the job runs, None once it ended (a unique index: one running job each).
    active_client: str | None = Field(
        default=None, sa_column=Column(String(64), nullable=True, unique=True)
    )
    kind: str = Field(sa_column=Column(String(8), nullable=False))
    # The kick-off parameters (health.bulk.parameters.ExportParameters as JSON).
    params: str = Field(sa_column=Column(Text, nullable=False))
    # The kick-off URL, echoed in the manifest's ``request``.
    request_url: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    progress: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    error: str | None = Field(default=None, sa_column=Column(String(500), nullable=True))
    # The output files as JSON: [{"type": ..., "file": ..., "count": ...}].
    files: str = Field(sa_column=Column(Text, nullable=False))
    transaction_time: datetime = Field(sa_column=utc_column())
    created_at: datetime = Field(sa_column=utc_column())
    # Written by the running export every few seconds: a job whose heartbeat stopped died with
    # the process that ran it.
    heartbeat_at: datetime = Field(sa_column=utc_column())
    finished_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
