"""The graded-protection policy the security administrator sets, every version kept.

A new policy is a new row; none is ever changed or removed (triggers, as for the entries), so
the history of who set which levels when stays readable beside the ledger entry each change
also leaves.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_REFUSAL = "protection policy versions are append-only"
_PG_FUNCTION = f"""
CREATE FUNCTION protection_policies_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{_REFUSAL} (% refused)', TG_OP USING ERRCODE = '42501';
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "protection_policies",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("set_by", sa.String(128), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER protection_policies_append_only BEFORE UPDATE OR DELETE "
            "ON protection_policies FOR EACH ROW "
            "EXECUTE FUNCTION protection_policies_append_only()"
        )
        op.execute(
            "CREATE TRIGGER protection_policies_no_truncate BEFORE TRUNCATE "
            "ON protection_policies FOR EACH STATEMENT "
            "EXECUTE FUNCTION protection_policies_append_only()"
        )
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER protection_policies_no_{operation.lower()} "
                f"BEFORE {operation} ON protection_policies "
                f"BEGIN SELECT RAISE(ABORT, '{_REFUSAL} ({operation} refused)'); END"
            )


def downgrade() -> None:
    op.drop_table("protection_policies")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS protection_policies_append_only()")
