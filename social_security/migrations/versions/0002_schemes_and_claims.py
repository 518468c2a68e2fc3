"""Schemes, enrolments, contributions, accounts, rules, catalogue, year totals and claims.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Amounts are integer fen (BIGINT). The shape of each table is documented on its model in
``social_security.models``; the constraints here are the ones the data must never break: an
account is never negative, a claim's split adds up to its total, a bill is settled once per
facility, an account movement happens once per reference.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _fen(name: str, *, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "providers",
        sa.Column("facility", sa.String(200), primary_key=True),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.CheckConstraint("level IN (1, 2, 3)", name="ck_providers_level"),
        sa.CheckConstraint("kind IN ('hospital', 'pharmacy')", name="ck_providers_kind"),
    )
    op.create_table(
        "enrolments",
        sa.Column("citizen", sa.String(64), nullable=False),
        sa.Column("scheme", sa.String(32), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("employer", sa.String(200), nullable=True),
        sa.Column("assistance", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("citizen", "scheme", "start_date", name="pk_enrolments"),
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'ended')", name="ck_enrolments_status"
        ),
    )
    op.create_index("ix_enrolments_citizen", "enrolments", ["citizen", "scheme"])
    op.create_table(
        "contributions",
        sa.Column("citizen", sa.String(64), nullable=False),
        sa.Column("scheme", sa.String(32), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        _fen("wage_base_fen", nullable=True),
        _fen("employer_fen"),
        _fen("personal_fen"),
        _fen("government_fen"),
        _fen("account_credit_fen"),
        sa.Column("paid_on", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("citizen", "scheme", "period", name="pk_contributions"),
        sa.CheckConstraint(
            "employer_fen >= 0 AND personal_fen >= 0 AND government_fen >= 0"
            " AND account_credit_fen >= 0",
            name="ck_contributions_amounts",
        ),
    )
    op.create_table(
        "accounts",
        sa.Column("citizen", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        _fen("balance_fen"),
        sa.PrimaryKeyConstraint("citizen", "kind", name="pk_accounts"),
        sa.CheckConstraint("balance_fen >= 0", name="ck_accounts_balance"),
    )
    op.create_table(
        "account_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("citizen", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at", _TS, nullable=False),
        _fen("amount_fen"),
        _fen("balance_after_fen"),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.UniqueConstraint("citizen", "kind", "reference", name="uq_account_entries_reference"),
        sa.CheckConstraint("balance_after_fen >= 0", name="ck_account_entries_balance"),
    )
    op.create_index("ix_account_entries_citizen", "account_entries", ["citizen", "kind", "at"])
    op.create_table(
        "benefit_payments",
        sa.Column("citizen", sa.String(64), nullable=False),
        sa.Column("scheme", sa.String(32), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        _fen("amount_fen"),
        sa.Column("paid_on", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("citizen", "scheme", "period", name="pk_benefit_payments"),
    )
    op.create_table(
        "rule_sets",
        sa.Column("scheme", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("scheme", "version", name="pk_rule_sets"),
    )
    op.create_index("ix_rule_sets_effective", "rule_sets", ["scheme", "effective_from"])
    op.create_table(
        "catalogue_items",
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("catalogue_class", sa.String(1), nullable=False),
        _fen("price_cap_fen", nullable=True),
        sa.PrimaryKeyConstraint("code", "effective_from", name="pk_catalogue_items"),
        sa.CheckConstraint("catalogue_class IN ('A', 'B', 'C')", name="ck_catalogue_class"),
    )
    op.create_table(
        "year_totals",
        sa.Column("citizen", sa.String(64), nullable=False),
        sa.Column("scheme", sa.String(32), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False, autoincrement=False),
        _fen("deductible_used_fen"),
        _fen("pooled_paid_fen"),
        _fen("critical_base_fen"),
        _fen("critical_paid_fen"),
        _fen("assistance_paid_fen"),
        sa.PrimaryKeyConstraint("citizen", "scheme", "year", name="pk_year_totals"),
    )
    op.create_table(
        "claims",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("facility", sa.String(200), nullable=False),
        sa.Column("bill_id", sa.String(64), nullable=False),
        sa.Column("bill_digest", sa.String(64), nullable=False),
        sa.Column("citizen", sa.String(64), nullable=False),
        sa.Column("scheme", sa.String(32), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("service_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _fen("total_fen"),
        _fen("in_scope_fen"),
        _fen("deductible_fen"),
        _fen("pooled_fen"),
        _fen("critical_fen"),
        _fen("assistance_fen"),
        _fen("personal_account_fen"),
        _fen("cash_fen"),
        sa.Column("adjudication", sa.Text(), nullable=False),
        sa.Column("bill", sa.Text(), nullable=False),
        sa.Column("terminal", sa.String(64), nullable=False),
        sa.Column("card", sa.String(64), nullable=True),
        sa.Column("settled_at", _TS, nullable=False),
        sa.Column("reversed_at", _TS, nullable=True),
        sa.Column("replaces", sa.String(64), nullable=True),
        sa.UniqueConstraint("facility", "bill_id", name="uq_claims_bill"),
        sa.CheckConstraint("status IN ('settled', 'reversed')", name="ck_claims_status"),
        sa.CheckConstraint(
            "pooled_fen + critical_fen + assistance_fen + personal_account_fen + cash_fen"
            " = total_fen",
            name="ck_claims_split",
        ),
    )
    op.create_index("ix_claims_citizen", "claims", ["citizen", "settled_at"])
    op.create_table(
        "import_runs",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("rows_done", sa.BigInteger(), nullable=False),
        sa.Column("rows_failed", sa.BigInteger(), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
    )


def downgrade() -> None:
    for table in (
        "import_runs",
        "claims",
        "year_totals",
        "catalogue_items",
        "rule_sets",
        "benefit_payments",
        "account_entries",
        "accounts",
        "contributions",
        "enrolments",
        "providers",
    ):
        op.drop_table(table)
