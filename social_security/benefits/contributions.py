"""Contribution arithmetic: who pays what, and what reaches the citizen's individual account.

Rates are the national defaults the brief fixes (issue #6, item 1), in integer basis points:

* Urban employee basic medical insurance, monthly: employer 6 %, employee 2 % of the wage base.
  The personal (medical) account is credited with the employee's 2 % plus 30 % of the
  employer's share (the pre-2021 split of State Council document Guofa [1998] No. 44).
* Employee basic pension, monthly: employer 16 %, employee 8 % of the wage base; the employee's
  8 % goes to the pension individual account (Social Insurance Law 2010, art. 12 and 14).
* Urban-rural resident medical insurance, yearly: the resident's personal amount plus the
  government subsidy, both to the pooled fund (residents have no medical personal account).
* Urban-rural resident pension, yearly: the personal amount plus the government subsidy, both
  to the pension individual account (Guofa [2014] No. 8, art. 6).

Rounding rule (written once, applied everywhere here): a percentage of an amount in fen is
rounded half up to the nearest fen (四舍五入, as the bureau's contribution notices print it):
``(amount * basis_points + 5_000) // 10_000``. The 30 % account share is taken of the employer's
amount after that amount was rounded, so every figure is reproducible from the rows stored.
The wage base itself (the bureau's floor and ceiling of 60 %-300 % of the average wage) is the
bureau's to set; it arrives here already capped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from social_security.models import ContributionRow
from social_security.schemes import AccountKind, Scheme

BASIS_POINTS = 10_000

EMPLOYEE_MEDICAL_EMPLOYER_BP = 600
EMPLOYEE_MEDICAL_PERSONAL_BP = 200
# Share of the employer's medical contribution that goes to the personal account.
EMPLOYEE_MEDICAL_ACCOUNT_SHARE_BP = 3_000
EMPLOYEE_PENSION_EMPLOYER_BP = 1_600
EMPLOYEE_PENSION_PERSONAL_BP = 800


def share_fen(amount_fen: int, basis_points: int) -> int:
    """``basis_points`` of ``amount_fen``, rounded half up to the fen (the module's rule)."""
    if amount_fen < 0 or basis_points < 0:
        raise ValueError("amounts and rates are never negative")
    return (amount_fen * basis_points + BASIS_POINTS // 2) // BASIS_POINTS


@dataclass(frozen=True)
class Contribution:
    """One period's contribution, shaped like :class:`ContributionRow` without the citizen."""

    scheme: Scheme
    period: str
    wage_base_fen: int | None
    employer_fen: int
    personal_fen: int
    government_fen: int
    account_credit_fen: int

    def __post_init__(self) -> None:
        amounts = (self.employer_fen, self.personal_fen, self.government_fen)
        if min(amounts) < 0 or self.account_credit_fen < 0:
            raise ValueError("contribution amounts are never negative")
        if self.wage_base_fen is not None and self.wage_base_fen < 0:
            raise ValueError("a wage base is never negative")

    @property
    def total_fen(self) -> int:
        return self.employer_fen + self.personal_fen + self.government_fen

    @property
    def account_kind(self) -> AccountKind | None:
        return account_kind(self.scheme)

    def values(self, *, citizen: str, paid_on: date) -> dict[str, Any]:
        """The table row's columns for ``citizen`` (for bulk inserts: no ORM object)."""
        return {
            "citizen": citizen,
            "scheme": self.scheme.value,
            "period": self.period,
            "wage_base_fen": self.wage_base_fen,
            "employer_fen": self.employer_fen,
            "personal_fen": self.personal_fen,
            "government_fen": self.government_fen,
            "account_credit_fen": self.account_credit_fen,
            "paid_on": paid_on,
        }

    def row(self, *, citizen: str, paid_on: date) -> ContributionRow:
        """The table row for ``citizen``."""
        return ContributionRow(**self.values(citizen=citizen, paid_on=paid_on))


def account_kind(scheme: Scheme) -> AccountKind | None:
    """The individual account a scheme's contributions feed, if any."""
    if scheme is Scheme.EMPLOYEE_MEDICAL:
        return AccountKind.MEDICAL
    if scheme in (Scheme.EMPLOYEE_PENSION, Scheme.RESIDENT_PENSION):
        return AccountKind.PENSION
    return None  # resident medical: everything goes to the pooled fund


def account_credit_fen(
    scheme: Scheme, *, employer_fen: int, personal_fen: int, government_fen: int
) -> int:
    """What a contribution with these amounts credits to the individual account."""
    if scheme is Scheme.EMPLOYEE_MEDICAL:
        return personal_fen + share_fen(employer_fen, EMPLOYEE_MEDICAL_ACCOUNT_SHARE_BP)
    if scheme is Scheme.EMPLOYEE_PENSION:
        return personal_fen
    if scheme is Scheme.RESIDENT_PENSION:
        return personal_fen + government_fen
    return 0


def employee_medical(*, period: str, wage_base_fen: int) -> Contribution:
    """A month of employee medical insurance computed from the wage base."""
    return from_wage_base(Scheme.EMPLOYEE_MEDICAL, period=period, wage_base_fen=wage_base_fen)


def employee_pension(*, period: str, wage_base_fen: int) -> Contribution:
    """A month of employee pension computed from the wage base."""
    return from_wage_base(Scheme.EMPLOYEE_PENSION, period=period, wage_base_fen=wage_base_fen)


def from_wage_base(scheme: Scheme, *, period: str, wage_base_fen: int) -> Contribution:
    """An employee scheme's monthly contribution at the default rates."""
    if scheme is Scheme.EMPLOYEE_MEDICAL:
        employer_bp, personal_bp = EMPLOYEE_MEDICAL_EMPLOYER_BP, EMPLOYEE_MEDICAL_PERSONAL_BP
    elif scheme is Scheme.EMPLOYEE_PENSION:
        employer_bp, personal_bp = EMPLOYEE_PENSION_EMPLOYER_BP, EMPLOYEE_PENSION_PERSONAL_BP
    else:
        raise ValueError(f"{scheme} has no wage base: residents pay a yearly amount")
    employer = share_fen(wage_base_fen, employer_bp)
    personal = share_fen(wage_base_fen, personal_bp)
    return from_amounts(
        scheme,
        period=period,
        wage_base_fen=wage_base_fen,
        employer_fen=employer,
        personal_fen=personal,
        government_fen=0,
    )


def resident(scheme: Scheme, *, year: int, personal_fen: int, government_fen: int) -> Contribution:
    """A resident scheme's yearly contribution: the personal amount plus the subsidy."""
    if scheme.is_employee:
        raise ValueError(f"{scheme} is an employee scheme: contributions follow the wage base")
    return from_amounts(
        scheme,
        period=f"{year:04d}",
        wage_base_fen=None,
        employer_fen=0,
        personal_fen=personal_fen,
        government_fen=government_fen,
    )


def from_amounts(
    scheme: Scheme,
    *,
    period: str,
    wage_base_fen: int | None,
    employer_fen: int,
    personal_fen: int,
    government_fen: int,
) -> Contribution:
    """A contribution whose amounts the bureau states (they win over the default rates)."""
    return Contribution(
        scheme=scheme,
        period=period,
        wage_base_fen=wage_base_fen,
        employer_fen=employer_fen,
        personal_fen=personal_fen,
        government_fen=government_fen,
        account_credit_fen=account_credit_fen(
            scheme,
            employer_fen=employer_fen,
            personal_fen=personal_fen,
            government_fen=government_fen,
        ),
    )


def contribution_reference(scheme: Scheme, period: str) -> str:
    """The account-entry reference of a contribution's credit: one credit per period."""
    return f"contribution:{scheme.value}:{period}"
