"""Card lifecycle: physical and electronic cards, their status and their certificate.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_LIVE = "status IN ('issued', 'active', 'suspended')"


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "cards",
        sa.Column("serial", sa.String(16), nullable=False),
        sa.Column("citizen_pseudonym", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("parent_serial", sa.String(16), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("applications", sa.Text(), nullable=False),
        sa.Column("certificate_serial", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        _ts("not_after"),
        _ts("created_at"),
        _ts("activated_at", nullable=True),
        _ts("status_changed_at"),
        sa.Column("replaced_by", sa.String(16), nullable=True),
        sa.Column("held_by_parent", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("serial", name="pk_cards"),
        sa.ForeignKeyConstraint(
            ["citizen_pseudonym"], ["citizens.pseudonym"], name="fk_cards_citizen"
        ),
        sa.ForeignKeyConstraint(["parent_serial"], ["cards.serial"], name="fk_cards_parent"),
        sa.ForeignKeyConstraint(["replaced_by"], ["cards.serial"], name="fk_cards_replaced_by"),
        sa.ForeignKeyConstraint(
            ["certificate_serial"], ["certificates.serial"], name="fk_cards_certificate"
        ),
        sa.UniqueConstraint("certificate_serial", name="uq_cards_certificate_serial"),
        sa.UniqueConstraint("key_id", name="uq_cards_key_id"),
        sa.CheckConstraint(
            "status IN ('issued', 'active', 'suspended', 'revoked', 'cancelled', 'expired')",
            name="ck_cards_status",
        ),
        sa.CheckConstraint("kind IN ('physical', 'electronic')", name="ck_cards_kind"),
        sa.CheckConstraint(
            "(kind = 'physical' AND parent_serial IS NULL)"
            " OR (kind = 'electronic' AND parent_serial IS NOT NULL)",
            name="ck_cards_parent",
        ),
    )
    # At most one live card of each kind per citizen: what makes concurrent issuing safe.
    op.create_index(
        "uq_cards_citizen_kind_live",
        "cards",
        ["citizen_pseudonym", "kind"],
        unique=True,
        sqlite_where=sa.text(_LIVE),
        postgresql_where=sa.text(_LIVE),
    )
    op.create_index("ix_cards_citizen_pseudonym", "cards", ["citizen_pseudonym"])
    op.create_index("ix_cards_parent_serial", "cards", ["parent_serial"])
    op.create_index("ix_cards_status_not_after", "cards", ["status", "not_after"])
    op.create_index("ix_cards_status_changed_at", "cards", ["status_changed_at"])


def downgrade() -> None:
    op.drop_index("ix_cards_status_changed_at", table_name="cards")
    op.drop_index("ix_cards_status_not_after", table_name="cards")
    op.drop_index("ix_cards_parent_serial", table_name="cards")
    op.drop_index("ix_cards_citizen_pseudonym", table_name="cards")
    op.drop_index("uq_cards_citizen_kind_live", table_name="cards")
    op.drop_table("cards")
