"""A monthly pension estimate from what the pension scheme has recorded (issue 6 item 5).

Employees (企业职工基本养老保险), State Council 2005 No. 38 (国发〔2005〕38号) art. 6::

    basic pension   = (average local wage + indexed own wage) / 2 x years of contribution x 1%
    indexed own wage = average local wage x the average contribution index
    account pension = individual account balance / months divisor (计发月数, by retirement age)

Urban-rural residents (城乡居民基本养老保险), State Council 2014 No. 8 (国发〔2014〕8号) art. 8:
the government's basic pension plus the individual account balance / 139.

Both need 15 years of contributions for a monthly pension (Social Insurance Law 2010 art. 16;
国发〔2014〕8号 art. 9); the estimate says whether they are reached.

The estimate is "if you retired now": the account as it stands and the months recorded, no
future contributions or interest; the parameters are the latest published in the tables below.
Every amount is integer fen; each division is rounded once, half up, where it is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from social_security.schemes import Scheme

# 计发月数: months the individual account is paid over, by age at retirement (the table
# attached to 国发〔2005〕38号). The residents' scheme always divides by 139
# (国发〔2014〕8号 art. 8).
MONTHS_DIVISOR_BY_AGE: Mapping[int, int] = MappingProxyType(
    {
        40: 233, 41: 230, 42: 226, 43: 223, 44: 220, 45: 216, 46: 212, 47: 207, 48: 204,
        49: 199, 50: 195, 51: 190, 52: 185, 53: 180, 54: 175, 55: 170, 56: 164, 57: 158,
        58: 152, 59: 145, 60: 139, 61: 132, 62: 125, 63: 117, 64: 109, 65: 101, 66: 93,
        67: 84, 68: 75, 69: 65, 70: 56,
    }
)  # fmt: skip
RESIDENT_MONTHS_DIVISOR = 139

# The average wage the employee formula starts from (计发基数), yearly, in fen. A province
# publishes its own; until one is configured this uses the national average annual wage of
# employed persons in urban non-private units (National Bureau of Statistics, statistical
# communiqués on average wages, published each May for the year before).
AVERAGE_ANNUAL_WAGE_FEN: Mapping[int, int] = MappingProxyType(
    {
        2021: 10_683_700,  # 106,837 yuan
        2022: 11_402_900,  # 114,029 yuan
        2023: 12_069_800,  # 120,698 yuan
        2024: 12_411_000,  # 124,110 yuan
    }
)

# The national minimum monthly basic pension of the residents' scheme, in fen (国发〔2014〕8号
# art. 8 and the raises announced in the government work reports; provinces may add to it).
RESIDENT_BASIC_PENSION_FEN: Mapping[int, int] = MappingProxyType(
    {
        2014: 7_000,
        2018: 8_800,
        2023: 10_300,
        2024: 12_300,
        2025: 14_300,
    }
)

MINIMUM_CONTRIBUTION_MONTHS = 15 * 12
# A contribution base lies between 60% and 300% of the average wage (人社部发〔2019〕35号 on
# the contribution base), so the index of one month does too.
INDEX_FLOOR_BP, INDEX_CEILING_BP = 6_000, 30_000
ONE_BP = 10_000


def divide_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half up (both non-negative): the one rounding rule
    of these estimates, as bureaus round a pension to the fen."""
    return (2 * numerator + denominator) // (2 * denominator)


def latest_at_or_before(table: Mapping[int, int], year: int) -> tuple[int, int]:
    """``(year, value)`` of the newest entry not after ``year``; the oldest if all are later."""
    known = [y for y in table if y <= year]
    chosen = max(known) if known else min(table)
    return chosen, table[chosen]


@dataclass(frozen=True, slots=True)
class MonthBase:
    """One month's contribution: its period's year and the wage it was assessed on (fen)."""

    year: int
    wage_base_fen: int | None


@dataclass(frozen=True, slots=True)
class Estimate:
    scheme: Scheme
    retirement_age: int
    contribution_months: int
    eligible: bool
    basic_pension_fen: int
    account_pension_fen: int
    months_divisor: int
    average_wage_monthly_fen: int | None
    contribution_index_bp: int | None
    parameters_year: int
    notes: tuple[str, ...]


def contribution_index_bp(months: Iterable[MonthBase]) -> int | None:
    """The average contribution index (平均缴费指数) in basis points: each month's wage base
    over the average wage of the year before (the base a year's contributions are set
    against), bounded to 60%-300%, averaged. None when no month records a wage base."""
    indices = []
    for month in months:
        if month.wage_base_fen is None:
            continue
        _, annual = latest_at_or_before(AVERAGE_ANNUAL_WAGE_FEN, month.year - 1)
        index = divide_half_up(month.wage_base_fen * 12 * ONE_BP, annual)
        indices.append(min(max(index, INDEX_FLOOR_BP), INDEX_CEILING_BP))
    if not indices:
        return None
    return divide_half_up(sum(indices), len(indices))


def employee_estimate(
    *,
    account_balance_fen: int,
    months: list[MonthBase],
    retirement_age: int,
    this_year: int,
) -> Estimate:
    """国发〔2005〕38号 art. 6 for an employee retiring now at ``retirement_age``."""
    divisor = MONTHS_DIVISOR_BY_AGE[retirement_age]
    # The base of the year before: the latest a bureau can have published.
    parameters_year, annual_wage = latest_at_or_before(AVERAGE_ANNUAL_WAGE_FEN, this_year - 1)
    notes = [f"average wage of {parameters_year} (national figure until the province's is set)"]
    index = contribution_index_bp(months)
    if index is None:
        index = ONE_BP
        notes.append("no wage base recorded: contribution index taken as 100%")
    count = len(months)
    # (W + W x index) / 2 x (months / 12) x 1%, with W = annual / 12, as one fraction:
    # annual x (1 + index_bp / 10000) x months / (12 x 2 x 12 x 100).
    basic = divide_half_up(annual_wage * (ONE_BP + index) * count, 12 * 2 * 12 * 100 * ONE_BP)
    return Estimate(
        scheme=Scheme.EMPLOYEE_PENSION,
        retirement_age=retirement_age,
        contribution_months=count,
        eligible=count >= MINIMUM_CONTRIBUTION_MONTHS,
        basic_pension_fen=basic,
        account_pension_fen=divide_half_up(account_balance_fen, divisor),
        months_divisor=divisor,
        average_wage_monthly_fen=divide_half_up(annual_wage, 12),
        contribution_index_bp=index,
        parameters_year=parameters_year,
        notes=tuple(notes),
    )


def resident_estimate(
    *, account_balance_fen: int, contribution_years: int, retirement_age: int, this_year: int
) -> Estimate:
    """国发〔2014〕8号 art. 8: the basic pension plus the account over 139 months."""
    parameters_year, basic = latest_at_or_before(RESIDENT_BASIC_PENSION_FEN, this_year)
    return Estimate(
        scheme=Scheme.RESIDENT_PENSION,
        retirement_age=retirement_age,
        contribution_months=contribution_years * 12,
        eligible=contribution_years * 12 >= MINIMUM_CONTRIBUTION_MONTHS,
        basic_pension_fen=basic,
        account_pension_fen=divide_half_up(account_balance_fen, RESIDENT_MONTHS_DIVISOR),
        months_divisor=RESIDENT_MONTHS_DIVISOR,
        average_wage_monthly_fen=None,
        contribution_index_bp=None,
        parameters_year=parameters_year,
        notes=(
            f"national minimum basic pension of {parameters_year}; the province may add to it",
            "residents draw the pension from age 60",
        ),
    )
