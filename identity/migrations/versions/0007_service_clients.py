"""Platform services as registered clients (kind ``service``: they append to the audit ledger).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_OLD = "kind IN ('hospital', 'terminal', 'admin')"
_NEW = "kind IN ('hospital', 'terminal', 'admin', 'service')"


def upgrade() -> None:
    # batch mode: SQLite cannot alter a constraint in place, so Alembic copies the table.
    with op.batch_alter_table("clients") as batch:
        batch.drop_constraint("ck_clients_kind", type_="check")
        batch.create_check_constraint("ck_clients_kind", _NEW)


def downgrade() -> None:
    op.execute("DELETE FROM clients WHERE kind = 'service'")
    with op.batch_alter_table("clients") as batch:
        batch.drop_constraint("ck_clients_kind", type_="check")
        batch.create_check_constraint("ck_clients_kind", _OLD)
