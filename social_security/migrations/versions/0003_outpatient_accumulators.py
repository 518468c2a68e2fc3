"""Outpatient pooling's own accumulators: its deductible used and what it paid this year.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Outpatient pooling has a deductible and an annual cap of its own (the scheme's rules,
``outpatient``); the inpatient deductible and the year's cap on all pooled payments stay in
``deductible_used_fen`` and ``pooled_paid_fen``. Existing rows start at 0.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = ("outpatient_deductible_used_fen", "outpatient_pooled_paid_fen")


def upgrade() -> None:
    with op.batch_alter_table("year_totals") as table:
        for name in _COLUMNS:
            table.add_column(sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("year_totals") as table:
        for name in _COLUMNS:
            table.drop_column(name)
