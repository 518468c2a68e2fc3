"""Citizens: the registry, with the national ID number only encrypted and blind-indexed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "citizens",
        # INTEGER (not BIGINT) so that SQLite makes it the rowid; SERIAL on PostgreSQL.
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pseudonym", sa.String(29), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        # FieldCipher v1: version | algorithm | key id | nonce | ciphertext || tag.
        sa.Column("national_id_ciphertext", sa.LargeBinary(), nullable=False),
        # HMAC-SHA256 blind index, hex; unique, which is what refuses a second registration.
        sa.Column("national_id_index", sa.String(64), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("sex", sa.String(6), nullable=False),
        sa.Column("phone", sa.String(16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_citizens"),
        sa.UniqueConstraint("pseudonym", name="uq_citizens_pseudonym"),
        sa.UniqueConstraint("national_id_index", name="uq_citizens_national_id_index"),
        sa.CheckConstraint("sex IN ('male', 'female')", name="ck_citizens_sex"),
    )


def downgrade() -> None:
    op.drop_table("citizens")
