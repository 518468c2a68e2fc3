"""Token server: signing keys, registered clients, app sessions, revoked tokens.

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

_LIVE = "status IN ('current', 'next')"


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        # Encrypted PKCS#8 PEM; never the clear key.
        sa.Column("private_key_pem", sa.Text(), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        _ts("created_at"),
        _ts("activated_at", nullable=True),
        _ts("retired_at", nullable=True),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
        sa.CheckConstraint(
            "status IN ('current', 'next', 'retired')", name="ck_signing_keys_status"
        ),
    )
    # One current and one next key: what makes concurrent start-ups and rotations safe.
    op.create_index(
        "uq_signing_keys_live_status",
        "signing_keys",
        ["status"],
        unique=True,
        sqlite_where=sa.text(_LIVE),
        postgresql_where=sa.text(_LIVE),
    )

    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("jwk", sa.JSON(), nullable=False),
        sa.Column("allowed_scopes", sa.Text(), nullable=False),
        sa.Column("facility", sa.String(200), nullable=True),
        sa.Column("purpose", sa.String(40), nullable=True),
        sa.Column("certificate_serial", sa.String(64), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("client_id", name="pk_clients"),
        sa.CheckConstraint("kind IN ('hospital', 'terminal', 'admin')", name="ck_clients_kind"),
    )

    op.create_table(
        "sessions",
        sa.Column("sid", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("card_serial", sa.String(64), nullable=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("acr", sa.String(4), nullable=False),
        sa.Column("amr", sa.String(64), nullable=False),
        # SHA-256 of the one refresh token valid now; the token itself is never stored.
        sa.Column("refresh_token_hash", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False, server_default="0"),
        _ts("created_at"),
        _ts("expires_at"),
        _ts("ended_at", nullable=True),
        sa.Column("end_reason", sa.String(40), nullable=True),
        sa.PrimaryKeyConstraint("sid", name="pk_sessions"),
        sa.UniqueConstraint("refresh_token_hash", name="uq_sessions_refresh_token_hash"),
    )
    op.create_index("ix_sessions_subject", "sessions", ["subject"])

    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(64), nullable=False),
        _ts("expires_at"),
        _ts("revoked_at"),
        sa.PrimaryKeyConstraint("jti", name="pk_revoked_tokens"),
    )
    op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_table("revoked_tokens")
    op.drop_index("ix_sessions_subject", table_name="sessions")
    op.drop_table("sessions")
    op.drop_table("clients")
    op.drop_index("uq_signing_keys_live_status", table_name="signing_keys")
    op.drop_table("signing_keys")
