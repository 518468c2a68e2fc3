"""Contribution arithmetic, in integer fen, as the bureau's contribution notice prints it."""

from __future__ import annotations

from datetime import date

import pytest

from social_security.benefits import contributions
from social_security.benefits.contributions import share_fen
from social_security.schemes import AccountKind, Scheme

YUAN = 100  # fen


def test_worked_example_employee_medical_on_a_wage_of_10000_yuan() -> None:
    month = contributions.employee_medical(period="2026-03", wage_base_fen=10_000 * YUAN)
    assert month.employer_fen == 600 * YUAN
    assert month.personal_fen == 200 * YUAN
    # 200 (employee's 2 %) + 30 % of the employer's 600.
    assert month.account_credit_fen == 380 * YUAN
    assert month.government_fen == 0
    assert month.account_kind is AccountKind.MEDICAL


def test_employee_pension_credits_only_the_employees_eight_percent() -> None:
    month = contributions.employee_pension(period="2026-03", wage_base_fen=8_000 * YUAN)
    assert (month.employer_fen, month.personal_fen) == (1_280 * YUAN, 640 * YUAN)
    assert month.account_credit_fen == 640 * YUAN
    assert month.account_kind is AccountKind.PENSION


def test_shares_round_half_up_to_the_fen() -> None:
    # 2 % of 1,234.25 yuan is 24.685 yuan: 2468.5 fen rounds up to 2469.
    month = contributions.employee_medical(period="2026-01", wage_base_fen=123_425)
    assert month.personal_fen == 2_469
    # 6 % is 7405.5 fen -> 7406; the account gets 30 % of the rounded 7406 (2221.8 -> 2222).
    assert month.employer_fen == 7_406
    assert month.account_credit_fen == 2_469 + 2_222
    assert share_fen(1, 4_999) == 0
    assert share_fen(1, 5_000) == 1


def test_resident_medical_has_no_personal_account() -> None:
    year = contributions.resident(
        Scheme.RESIDENT_MEDICAL, year=2026, personal_fen=400 * YUAN, government_fen=670 * YUAN
    )
    assert year.period == "2026"
    assert year.total_fen == 1_070 * YUAN
    assert year.account_credit_fen == 0
    assert year.account_kind is None


def test_resident_pension_credits_personal_amount_and_subsidy() -> None:
    year = contributions.resident(
        Scheme.RESIDENT_PENSION, year=2026, personal_fen=500 * YUAN, government_fen=60 * YUAN
    )
    assert year.account_credit_fen == 560 * YUAN
    assert year.account_kind is AccountKind.PENSION


def test_amounts_stated_by_the_bureau_win_over_the_default_rates() -> None:
    stated = contributions.from_amounts(
        Scheme.EMPLOYEE_MEDICAL,
        period="2026-02",
        wage_base_fen=500_000,
        employer_fen=40_000,  # a city at 8 %
        personal_fen=10_000,
        government_fen=0,
    )
    assert stated.account_credit_fen == 10_000 + 12_000


def test_the_row_carries_every_amount() -> None:
    month = contributions.employee_medical(period="2026-03", wage_base_fen=10_000 * YUAN)
    row = month.row(citizen="cz_a", paid_on=date(2026, 3, 15))
    assert (row.scheme, row.period, row.wage_base_fen) == ("employee_medical", "2026-03", 1_000_000)
    assert (row.employer_fen, row.personal_fen, row.account_credit_fen) == (60_000, 20_000, 38_000)


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        contributions.employee_medical(period="2026-03", wage_base_fen=-1)
    with pytest.raises(ValueError, match="no wage base"):
        contributions.from_wage_base(Scheme.RESIDENT_MEDICAL, period="2026", wage_base_fen=1)
    with pytest.raises(ValueError, match="employee scheme"):
        contributions.resident(Scheme.EMPLOYEE_PENSION, year=2026, personal_fen=1, government_fen=0)
