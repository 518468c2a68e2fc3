"""Break-glass grants: a clinician's emergency access to one patient's records, for a while.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "break_glass_grants",
        sa.Column("id", sa.String(32), primary_key=True),
        # The hospital system (client id) the access was granted to, and who asked.
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("patient_key", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    # The access check: is there a grant for this hospital and patient that has not expired?
    op.create_index(
        "ix_break_glass_client_patient",
        "break_glass_grants",
        ["client_id", "patient_key", "expires_at"],
    )


def downgrade() -> None:
    op.drop_table("break_glass_grants")
