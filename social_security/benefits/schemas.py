"""What the citizen's lookups send to the mobile app (``/social-security/*``, issue 6 item 5).

Every amount is an integer number of fen (0.01 yuan) in a field named ``*_fen``: money is
never a float. Where the app shows a figure as it is, a ``*_yuan`` display string goes with it
(``"¥1,234.56"``), computed from the fen field so the two never disagree.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from social_security.schemes import Scheme


def yuan(fen: int) -> str:
    """``123456`` -> ``"¥1,234.56"``: exact integer arithmetic, never a float."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}¥{whole:,}.{cents:02d}"


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


# -- paging ----------------------------------------------------------------------------------


class Paging(_Out):
    """Where this page sits in the whole list (offset paging: the app shows page numbers)."""

    total: int = Field(description="How many items the whole list holds")
    limit: int
    offset: int
    next_offset: int | None = Field(description="The offset of the next page, None on the last")

    @classmethod
    def of(cls, *, total: int, limit: int, offset: int) -> Paging:
        following = offset + limit
        return cls(
            total=total,
            limit=limit,
            offset=offset,
            next_offset=following if following < total else None,
        )


# -- enrolment -------------------------------------------------------------------------------

EnrolmentState = Literal["active", "suspended", "ended", "not_enrolled"]


class EnrolmentStatus(_Out):
    """The citizen's standing in one scheme: their latest enrolment period, if any."""

    scheme: Scheme
    status: EnrolmentState = Field(
        description="As of today: an enrolment whose end date has passed reads ended"
    )
    since: date | None = Field(description="Start of the latest enrolment period")
    until: date | None = Field(description="End of that period; None while it is open")
    employer: str | None = Field(description="For employee schemes: the contributing employer")
    assistance: str | None = Field(
        description="Medical-assistance category (e.g. dibao), which raises what the funds pay"
    )


class Enrolments(_Out):
    schemes: list[EnrolmentStatus] = Field(description="One entry per scheme, in a fixed order")


# -- contributions ---------------------------------------------------------------------------


class Contribution(_Out):
    """One contribution: monthly (YYYY-MM) for employee schemes, yearly (YYYY) for residents."""

    scheme: Scheme
    period: str = Field(examples=["2026-03", "2026"])
    wage_base_fen: int | None = Field(description="The wage it was assessed on (employees)")
    employer_fen: int
    personal_fen: int
    government_fen: int = Field(description="Government subsidy (resident schemes)")
    account_credit_fen: int = Field(description="What it credited to the individual account")
    paid_on: date

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_fen(self) -> int:
        return self.employer_fen + self.personal_fen + self.government_fen

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_yuan(self) -> str:
        return yuan(self.total_fen)


class ContributionPage(_Out):
    items: list[Contribution] = Field(description="Newest period first")
    paging: Paging


# -- benefit payments ------------------------------------------------------------------------


class BenefitPayment(_Out):
    """A benefit paid to the citizen, e.g. one month's pension."""

    scheme: Scheme
    period: str
    amount_fen: int
    paid_on: date

    @computed_field  # type: ignore[prop-decorator]
    @property
    def amount_yuan(self) -> str:
        return yuan(self.amount_fen)


class PaymentPage(_Out):
    items: list[BenefitPayment] = Field(description="Newest period first")
    paging: Paging


# -- individual accounts ---------------------------------------------------------------------


class AccountEntry(_Out):
    """One movement on an individual account (credit positive, debit negative)."""

    at: datetime
    amount_fen: int
    balance_after_fen: int
    reason: str = Field(description="Why it moved, e.g. contribution, settlement, refund")
    reference: str = Field(description="The contribution or claim that moved it")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def amount_yuan(self) -> str:
        return yuan(self.amount_fen)


class MedicalAccount(_Out):
    """The employee medical personal account: its balance and a page of its ledger."""

    balance_fen: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def balance_yuan(self) -> str:
        return yuan(self.balance_fen)

    entries: list[AccountEntry] = Field(description="Newest first")
    paging: Paging


# -- claims ----------------------------------------------------------------------------------


class ClaimSplit(_Out):
    """Who paid what of one bill. pooled + critical + assistance + personal account + cash =
    total (the database holds this as a constraint)."""

    total_fen: int
    in_scope_fen: int = Field(description="What the pooled fund considered")
    deductible_fen: int = Field(description="The part of the deductible this bill used")
    pooled_fen: int = Field(description="Paid by the basic medical insurance pooled fund")
    critical_fen: int = Field(description="Paid by critical-illness insurance")
    assistance_fen: int = Field(description="Paid by medical assistance")
    personal_account_fen: int = Field(description="Paid from the personal account")
    cash_fen: int = Field(description="Paid by the citizen in cash")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def funds_fen(self) -> int:
        """What the funds paid together (pooled, critical-illness, assistance)."""
        return self.pooled_fen + self.critical_fen + self.assistance_fen

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_yuan(self) -> str:
        return yuan(self.total_fen)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cash_yuan(self) -> str:
        return yuan(self.cash_fen)


class Claim(_Out):
    """A bill settled at a hospital or pharmacy counter with the citizen's card."""

    id: str
    facility: str
    bill_id: str = Field(description="The facility's own number for the bill")
    scheme: Scheme
    service_date: date
    status: Literal["settled", "reversed"]
    settled_at: datetime
    reversed_at: datetime | None
    replaces: str | None = Field(description="For a refund: the claim this one replaces")
    split: ClaimSplit


class ClaimPage(_Out):
    items: list[Claim] = Field(description="Newest settlement first")
    paging: Paging


# -- the medical year ------------------------------------------------------------------------


class MedicalYearScheme(_Out):
    """Year to date in one medical scheme: what the deductible and the pooled fund have used."""

    scheme: Scheme
    deductible_used_fen: int
    pooled_paid_fen: int
    critical_paid_fen: int
    assistance_paid_fen: int
    annual_pooled_cap_fen: int | None = Field(
        description="The year's pooled-fund cap from the scheme's rules; None if none published"
    )
    rule_version: int | None = Field(description="The version of the rules the cap comes from")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cap_remaining_fen(self) -> int | None:
        """What the pooled fund may still pay this year (never below zero)."""
        if self.annual_pooled_cap_fen is None:
            return None
        return max(0, self.annual_pooled_cap_fen - self.pooled_paid_fen)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cap_remaining_yuan(self) -> str | None:
        remaining = self.cap_remaining_fen
        return None if remaining is None else yuan(remaining)


class MedicalYear(_Out):
    year: int
    schemes: list[MedicalYearScheme] = Field(
        description="Each medical scheme the citizen was enrolled in or used that year"
    )


# -- the pension -----------------------------------------------------------------------------


class PensionEstimate(_Out):
    """The monthly pension if the citizen retired now at ``retirement_age`` with what is
    recorded today (no future contributions, no interest): an estimate, not an award."""

    scheme: Scheme
    retirement_age: int
    contribution_months: int = Field(description="Months of contributions counted")
    eligible: bool = Field(
        description="Whether the 15 years a monthly pension needs are reached "
        "(Social Insurance Law art. 16; State Council 2014 No. 8 art. 9)"
    )
    basic_pension_fen: int = Field(description="The pooled part (基础养老金)")
    account_pension_fen: int = Field(description="Individual account / months divisor")
    months_divisor: int = Field(description="计发月数 for the retirement age")
    average_wage_monthly_fen: int | None = Field(
        description="Employees: the average monthly wage the formula uses (计发基数)"
    )
    contribution_index_bp: int | None = Field(
        description="Employees: own wage base / average wage, averaged, in basis points"
    )
    parameters_year: int = Field(description="The year of the published parameters used")
    notes: list[str] = Field(description="Assumptions the estimate made")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def monthly_total_fen(self) -> int:
        return self.basic_pension_fen + self.account_pension_fen

    @computed_field  # type: ignore[prop-decorator]
    @property
    def monthly_total_yuan(self) -> str:
        return yuan(self.monthly_total_fen)


class Pension(_Out):
    """The pension individual account and an estimate of the monthly pension."""

    account_balance_fen: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def account_balance_yuan(self) -> str:
        return yuan(self.account_balance_fen)

    estimate: PensionEstimate | None = Field(
        description="None when the citizen is in no pension scheme"
    )


# -- the yearly rights statement (个人权益记录单) ------------------------------------------------


class SchemeContributionTotal(_Out):
    scheme: Scheme
    periods: int = Field(description="How many contributions (months, or one year)")
    employer_fen: int
    personal_fen: int
    government_fen: int
    account_credit_fen: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_fen(self) -> int:
        return self.employer_fen + self.personal_fen + self.government_fen

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_yuan(self) -> str:
        return yuan(self.total_fen)


class AccountYear(_Out):
    """One individual account over the year: its movements and its balance at year end."""

    kind: Literal["medical", "pension"]
    credited_fen: int
    debited_fen: int = Field(description="Paid out (a positive number)")
    closing_balance_fen: int | None = Field(
        description="Balance after the year's last movement; None if none that year or before"
    )
    entries: list[AccountEntry] = Field(description="In order")


class ClaimsYear(_Out):
    count: int = Field(description="Settled claims (reversed ones are listed, not counted)")
    total_fen: int
    funds_fen: int = Field(description="Pooled fund, critical-illness insurance and assistance")
    personal_account_fen: int
    cash_fen: int


class YearStatement(_Out):
    """The citizen's yearly rights statement: what was paid in, credited, paid out, claimed."""

    year: int
    contributions: list[Contribution]
    contribution_totals: list[SchemeContributionTotal]
    accounts: list[AccountYear]
    benefits: list[BenefitPayment]
    benefits_total_fen: int
    claims: list[Claim]
    claims_total: ClaimsYear


# -- the card --------------------------------------------------------------------------------


class CardSummary(_Out):
    """What the app shows of one card: enough to recognise it, nothing to misuse."""

    serial_tail: str = Field(description="The serial's last 4 characters", examples=["7897"])
    status: str = Field(examples=["active", "suspended", "expired"])
    applications: list[str] = Field(description="The applications the card is enabled for")
    valid_until: datetime = Field(description="The card certificate's expiry")


class Cards(_Out):
    cards: list[CardSummary] = Field(description="The citizen's cards, as identity lists them")


# -- the catalogue ---------------------------------------------------------------------------


class CatalogueEntry(_Out):
    """A drug, item or service of the medical-insurance catalogue, as in force today."""

    code: str
    name: str
    kind: str = Field(examples=["drug", "item", "service"])
    catalogue_class: Literal["A", "B", "C"] = Field(
        description="A fully eligible; B eligible after a first self-pay share; C not covered"
    )
    price_cap_fen: int | None = Field(description="The most the funds recognise per unit")
    effective_from: date

    @computed_field  # type: ignore[prop-decorator]
    @property
    def price_cap_yuan(self) -> str | None:
        return None if self.price_cap_fen is None else yuan(self.price_cap_fen)


class CatalogueMatches(_Out):
    items: list[CatalogueEntry] = Field(description="By name")
    truncated: bool = Field(description="More items match: type more of the name")
