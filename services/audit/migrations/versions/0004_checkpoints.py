"""Signed checkpoints and the ledger's checkpoint-signing key.

``audit_checkpoint_keys`` holds the ledger's EC P-256 key, its private half as encrypted
PKCS#8; the single-slot primary key makes creating it on first start race-safe (the second
process's insert fails and it reads the winner's key). ``audit_checkpoints`` holds one signed
tree head per size, with the compact frontier at that size so the next checkpoint extends it
without rereading a leaf. Checkpoints are append-only like the entries (triggers).

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


_REFUSAL = "audit checkpoints are append-only"

# As for the entries (0002): refused even for the table's owner, SQLSTATE 42501.
_PG_FUNCTION = f"""
CREATE FUNCTION audit_checkpoints_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{_REFUSAL} (% refused)', TG_OP USING ERRCODE = '42501';
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "audit_checkpoint_keys",
        # One signing key at a time (slot 1); rotation would add slots.
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),  # SPKI PEM
        sa.Column("private_key", sa.Text(), nullable=False),  # encrypted PKCS#8 PEM
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("slot", name="pk_audit_checkpoint_keys"),
        sa.UniqueConstraint("key_id", name="uq_audit_checkpoint_keys_key_id"),
        sa.CheckConstraint("slot = 1", name="ck_audit_checkpoint_keys_slot"),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signed", sa.Text(), nullable=False),  # SignedCheckpoint JSON
        sa.Column("key_id", sa.String(32), nullable=False),
        # CompactTree.to_bytes() at this size: where the next checkpoint resumes.
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("size", name="pk_audit_checkpoints"),
        sa.CheckConstraint("size > 0", name="ck_audit_checkpoints_size"),
    )
    # A deleted checkpoint would take its evidence with it; an edited one fails its signature.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER audit_checkpoints_no_change BEFORE UPDATE OR DELETE "
            "ON audit_checkpoints FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoints_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_checkpoints_no_{action.lower()} BEFORE {action} "
                f"ON audit_checkpoints BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_checkpoints_no_truncate ON audit_checkpoints")
        op.execute("DROP TRIGGER audit_checkpoints_no_change ON audit_checkpoints")
        op.execute("DROP FUNCTION audit_checkpoints_append_only()")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_checkpoint_keys")
