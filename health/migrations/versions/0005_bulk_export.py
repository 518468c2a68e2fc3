"""Bulk Data export jobs (FHIR Bulk Data Access v2, export.html): one row per kick-off.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bulk_export_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        # The hospital system (client id) that kicked the export off: the only one that may
        # poll it, cancel it and download its files.
        sa.Column("client_id", sa.String(64), nullable=False),
        # The client id while the job is accepted or in progress, NULL once it ended: the
        # unique index makes "one running export per client" hold under concurrent kick-offs
        # on SQLite and PostgreSQL alike (both let NULLs repeat in a unique index).
        sa.Column("active_client", sa.String(64), nullable=True, unique=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("request_url", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.String(200), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("files", sa.Text, nullable=False),
        sa.Column("transaction_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('system', 'patient', 'group')", name="ck_bulk_export_jobs_kind"
        ),
        sa.CheckConstraint(
            "status IN ('in-progress', 'completed', 'failed', 'cancelled')",
            name="ck_bulk_export_jobs_status",
        ),
    )
    # Retention: the ended jobs whose files are due for deletion.
    op.create_index("ix_bulk_export_jobs_finished_at", "bulk_export_jobs", ["finished_at"])


def downgrade() -> None:
    op.drop_table("bulk_export_jobs")
