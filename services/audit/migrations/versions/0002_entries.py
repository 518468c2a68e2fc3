"""Audit entries: append-only, refused UPDATE, DELETE and TRUNCATE even for the table's owner.

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

_REFUSAL = "audit entries are append-only"

# PostgreSQL: one function for row and statement triggers; SQLSTATE 42501 insufficient_privilege.
_PG_FUNCTION = f"""
CREATE FUNCTION audit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{_REFUSAL} (% refused)', TG_OP USING ERRCODE = '42501';
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        # The leaf index in the Merkle tree (RFC 9162 section 2.1), assigned in order from 0.
        sa.Column("seq", sa.BigInteger(), nullable=False, autoincrement=False),
        # The submitter's id for the entry: a retried submission finds its first copy.
        sa.Column("entry_id", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        # The canonical JSON bytes of the AuditEvent-shaped record: exactly what is hashed.
        sa.Column("record", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        # Whose data was touched (pseudonymous citizen id): the citizen's access log reads by it.
        sa.Column("citizen", sa.String(64), nullable=True),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_entries"),
        sa.UniqueConstraint("entry_id", name="uq_audit_entries_entry_id"),
        sa.CheckConstraint("seq >= 0", name="ck_audit_entries_seq"),
        sa.CheckConstraint("level BETWEEN 1 AND 5", name="ck_audit_entries_level"),
    )
    op.create_index("ix_audit_entries_citizen_seq", "audit_entries", ["citizen", "seq"])

    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER audit_entries_no_change BEFORE UPDATE OR DELETE ON audit_entries "
            "FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only()"
        )
    else:
        # SQLite has no TRUNCATE; DELETE without WHERE is covered by the row trigger.
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_entries_no_{action.lower()} BEFORE {action} "
                f"ON audit_entries BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END"
            )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_entries_no_truncate ON audit_entries")
        op.execute("DROP TRIGGER audit_entries_no_change ON audit_entries")
        op.execute("DROP FUNCTION audit_entries_append_only()")
    op.drop_index("ix_audit_entries_citizen_seq", table_name="audit_entries")
    op.drop_table("audit_entries")
