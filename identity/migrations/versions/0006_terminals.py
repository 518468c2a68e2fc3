"""App sessions: the refresh tokens a session has rotated past (reuse detection).

Terminals need no table of their own: a terminal is a client of kind ``terminal`` (0004) with
its certificate in the PKI's ``certificates`` (0003).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rotated_refresh_tokens",
        # SHA-256 (hex) of a refresh token that was valid once; never the token itself.
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("sid", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name="pk_rotated_refresh_tokens"),
        sa.ForeignKeyConstraint(
            ["sid"], ["sessions.sid"], name="fk_rotated_refresh_tokens_session"
        ),
    )
    op.create_index("ix_rotated_refresh_tokens_sid", "rotated_refresh_tokens", ["sid"])


def downgrade() -> None:
    op.drop_index("ix_rotated_refresh_tokens_sid", table_name="rotated_refresh_tokens")
    op.drop_table("rotated_refresh_tokens")
