"""The social_security database (migration 0002): schemes, accounts, rules, claims.

Every amount is integer fen. Every table that belongs to one person carries ``citizen``, the
pseudonymous id of the card holder (the token's ``sub``; never the national ID number), so the
tables can later be sharded by it like the health store.

Concurrency: a settlement locks the citizen's :class:`YearTotalRow` for the scheme and year
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has one writer), so parallel claims for one
citizen are adjudicated one after another against the true remaining cap, deductible and
personal-account balance.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from services.kit.sqltypes import utc_column

_CITIZEN = 64


class ProviderRow(SQLModel, table=True):
    """A designated medical institution (定点医疗机构) and its level (1, 2 or 3), keyed by the
    facility name its terminals are registered with (the token's ``act.facility``)."""

    __tablename__ = "providers"

    facility: str = Field(sa_column=Column(String(200), primary_key=True))
    level: int = Field(sa_column=Column(Integer, nullable=False))
    kind: str = Field(sa_column=Column(String(16), nullable=False))  # hospital | pharmacy


class EnrolmentRow(SQLModel, table=True):
    """A citizen's enrolment in one scheme over a period (``end_date`` None: open)."""

    __tablename__ = "enrolments"
    __table_args__ = (Index("ix_enrolments_citizen", "citizen", "scheme"),)

    citizen: str = Field(sa_column=Column(String(_CITIZEN), primary_key=True))
    scheme: str = Field(sa_column=Column(String(32), primary_key=True))
    start_date: date = Field(sa_column=Column(Date, primary_key=True))
    end_date: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    status: str = Field(sa_column=Column(String(16), nullable=False))  # active | suspended | ended
    employer: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    # Medical assistance category (e.g. "dibao", the minimum-living-guarantee households), or None.
    assistance: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))


class ContributionRow(SQLModel, table=True):
    """One contribution: monthly (``period`` YYYY-MM) for employees, yearly (YYYY) for residents."""

    __tablename__ = "contributions"

    citizen: str = Field(sa_column=Column(String(_CITIZEN), primary_key=True))
    scheme: str = Field(sa_column=Column(String(32), primary_key=True))
    period: str = Field(sa_column=Column(String(7), primary_key=True))
    wage_base_fen: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    employer_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    personal_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    government_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    # What this contribution credited to the citizen's individual account.
    account_credit_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    paid_on: date = Field(sa_column=Column(Date, nullable=False))


class AccountRow(SQLModel, table=True):
    """An individual account's balance (``kind``: medical or pension); never negative."""

    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint("balance_fen >= 0", name="ck_accounts_balance"),)

    citizen: str = Field(sa_column=Column(String(_CITIZEN), primary_key=True))
    kind: str = Field(sa_column=Column(String(16), primary_key=True))
    balance_fen: int = Field(sa_column=Column(BigInteger, nullable=False))


class AccountEntryRow(SQLModel, table=True):
    """One movement on an individual account; ``reference`` (a contribution or a claim) makes
    each movement happen once."""

    __tablename__ = "account_entries"
    __table_args__ = (
        UniqueConstraint("citizen", "kind", "reference", name="uq_account_entries_reference"),
        Index("ix_account_entries_citizen", "citizen", "kind", "at"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    citizen: str = Field(sa_column=Column(String(_CITIZEN), nullable=False))
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    at: datetime = Field(sa_column=utc_column())
    amount_fen: int = Field(sa_column=Column(BigInteger, nullable=False))  # + credit, - debit
    balance_after_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    reason: str = Field(sa_column=Column(String(32), nullable=False))
    reference: str = Field(sa_column=Column(String(128), nullable=False))


class BenefitPaymentRow(SQLModel, table=True):
    """A benefit paid to the citizen (a monthly pension, for example)."""

    __tablename__ = "benefit_payments"

    citizen: str = Field(sa_column=Column(String(_CITIZEN), primary_key=True))
    scheme: str = Field(sa_column=Column(String(32), primary_key=True))
    period: str = Field(sa_column=Column(String(7), primary_key=True))
    amount_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    paid_on: date = Field(sa_column=Column(Date, nullable=False))


class RuleSetRow(SQLModel, table=True):
    """One version of a scheme's rules for a year, effective from a date (rules as data:
    ``document`` is the JSON of :class:`social_security.claims.rules.RuleSet`)."""

    __tablename__ = "rule_sets"
    __table_args__ = (Index("ix_rule_sets_effective", "scheme", "effective_from"),)

    scheme: str = Field(sa_column=Column(String(32), primary_key=True))
    version: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    year: int = Field(sa_column=Column(Integer, nullable=False))
    effective_from: date = Field(sa_column=Column(Date, nullable=False))
    document: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=utc_column())
    created_by: str = Field(sa_column=Column(String(64), nullable=False))


class CatalogueItemRow(SQLModel, table=True):
    """A drug, item or service in the catalogue from ``effective_from`` (class A, B or C; an
    optional price cap per unit)."""

    __tablename__ = "catalogue_items"

    code: str = Field(sa_column=Column(String(64), primary_key=True))
    effective_from: date = Field(sa_column=Column(Date, primary_key=True))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    kind: str = Field(sa_column=Column(String(16), nullable=False))  # drug | item | service
    catalogue_class: str = Field(sa_column=Column(String(1), nullable=False))
    price_cap_fen: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class YearTotalRow(SQLModel, table=True):
    """A citizen's accumulators in one medical scheme and year (see :class:`YearToDate`)."""

    __tablename__ = "year_totals"

    citizen: str = Field(sa_column=Column(String(_CITIZEN), primary_key=True))
    scheme: str = Field(sa_column=Column(String(32), primary_key=True))
    year: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    deductible_used_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    pooled_paid_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    critical_base_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    critical_paid_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    assistance_paid_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Outpatient pooling's own deductible and cap (migration 0003).
    outpatient_deductible_used_fen: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    outpatient_pooled_paid_fen: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )


class ClaimRow(SQLModel, table=True):
    """One settled (or reversed) bill: its split, and the adjudication that explains it."""

    __tablename__ = "claims"
    __table_args__ = (
        UniqueConstraint("facility", "bill_id", name="uq_claims_bill"),
        Index("ix_claims_citizen", "citizen", "settled_at"),
        CheckConstraint(
            "pooled_fen + critical_fen + assistance_fen + personal_account_fen + cash_fen"
            " = total_fen",
            name="ck_claims_split",
        ),
    )

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    facility: str = Field(sa_column=Column(String(200), nullable=False))
    bill_id: str = Field(sa_column=Column(String(64), nullable=False))
    # A digest of the bill as submitted: the same bill id with other content is a conflict.
    bill_digest: str = Field(sa_column=Column(String(64), nullable=False))
    citizen: str = Field(sa_column=Column(String(_CITIZEN), nullable=False))
    scheme: str = Field(sa_column=Column(String(32), nullable=False))
    year: int = Field(sa_column=Column(Integer, nullable=False))
    service_date: date = Field(sa_column=Column(Date, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))  # settled | reversed
    total_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    in_scope_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    deductible_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    pooled_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    critical_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    assistance_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    personal_account_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    cash_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    # The adjudication (lines, reasons, rule version) and the bill, as JSON.
    adjudication: str = Field(sa_column=Column(Text, nullable=False))
    bill: str = Field(sa_column=Column(Text, nullable=False))
    terminal: str = Field(sa_column=Column(String(64), nullable=False))
    card: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    settled_at: datetime = Field(sa_column=utc_column())
    reversed_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    # A refund re-settles the remaining lines as a new claim that names the one it replaces.
    replaces: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))


class ImportRunRow(SQLModel, table=True):
    """One bulk import of a bureau CSV file, identified by the digest of its content: how far
    it got, so that a rerun resumes after the last committed row."""

    __tablename__ = "import_runs"

    digest: str = Field(sa_column=Column(String(64), primary_key=True))
    file_name: str = Field(sa_column=Column(String(255), nullable=False))
    kind: str = Field(sa_column=Column(String(32), nullable=False))  # enrolments | contributions
    rows_done: int = Field(sa_column=Column(BigInteger, nullable=False))
    rows_failed: int = Field(sa_column=Column(BigInteger, nullable=False))
    started_at: datetime = Field(sa_column=utc_column())
    finished_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
