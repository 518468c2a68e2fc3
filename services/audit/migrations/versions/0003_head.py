"""The ledger's head: one row holding the tree size, locked by each append batch.

Taking it with an UPDATE first thing in a batch transaction serialises appenders on both
databases (a row lock on PostgreSQL, SQLite's write lock), so the sequence stays gap-free and
unique however many ledger processes append at once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
        sa.CheckConstraint("id = 1", name="ck_audit_head_single_row"),
        sa.CheckConstraint("size >= 0", name="ck_audit_head_size"),
    )
    op.execute(
        head.insert().from_select(
            ["id", "size"],
            sa.select(sa.literal(1), sa.func.count()).select_from(sa.table("audit_entries")),
        )
    )


def downgrade() -> None:
    op.drop_table("audit_head")
