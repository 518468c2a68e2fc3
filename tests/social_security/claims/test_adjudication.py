"""The adjudication engine (social_security/claims/adjudication.py): the split of a bill, in fen,
explained line by line, in the order of issue #6 item 3."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import date
from typing import Any

import pytest

from social_security.claims.adjudication import adjudicate, check_bill
from social_security.claims.bill import Adjudication, Bill, BillLine, VisitType, YearToDate
from social_security.claims.catalogue import CatalogueItem, default_catalogue
from social_security.claims.reasons import REFUSALS, BillRefused, Reason
from social_security.claims.rules import RuleSet, default_rule_set
from social_security.schemes import Scheme

CATALOGUE = default_catalogue().by_code()
RESIDENT = default_rule_set(Scheme.RESIDENT_MEDICAL)
EMPLOYEE = default_rule_set(Scheme.EMPLOYEE_MEDICAL)
YUAN = 100  # fen


def bill(
    *lines: tuple[str, int, int], visit: VisitType = VisitType.INPATIENT, bill_id: str = "B1"
) -> Bill:
    """A bill from (code, quantity, unit price in fen) triples, numbered from 1."""
    return Bill(
        bill_id=bill_id,
        facility="Provincial People's Hospital",
        citizen="c-test",
        visit_type=visit,
        service_date=date(2026, 3, 14),
        lines=tuple(
            BillLine(sequence=n, code=code, quantity=quantity, unit_price_fen=price)
            for n, (code, quantity, price) in enumerate(lines, start=1)
        ),
    )


def settle(
    the_bill: Bill,
    *,
    rules: RuleSet = RESIDENT,
    level: int = 3,
    before: YearToDate | None = None,
    balance: int = 0,
    assistance: str | None = None,
    catalogue: Mapping[str, CatalogueItem] = CATALOGUE,
) -> Adjudication:
    return adjudicate(
        the_bill,
        rules=rules,
        catalogue=catalogue,
        hospital_level=level,
        before=before or YearToDate(),
        personal_account_fen=balance,
        assistance=assistance,
    )


def assert_adds_up(result: Adjudication) -> None:
    parts = (
        result.pooled_fen,
        result.critical_fen,
        result.assistance_fen,
        result.personal_account_fen,
        result.cash_fen,
    )
    assert sum(parts) == result.total_fen
    assert all(part >= 0 for part in parts)
    assert (
        result.excluded_fen + result.over_cap_fen + result.first_self_pay_fen + result.in_scope_fen
        == result.total_fen
    )


# --- the worked case of issue #6 ---------------------------------------------------------


def test_the_worked_case_of_issue_6() -> None:
    """Total 300,000 yuan, 270,000 in scope; 100,000 of the 130,000 pooled cap remains, so
    basic insurance pays 100,000; critical-illness insurance pays 45,000 (50% of 10,000 to
    100,000) + 42,000 (60% of 100,000 to 170,000) = 87,000; together 187,000."""
    stay = bill(
        ("HC01", 1, 1_200_000),  # Class C: robotic instrument set, all excluded
        ("FC03", 10, 30_000),  # Class C: VIP ward service
        ("HB01", 2, 400_000),  # Class B stent above its 800-yuan cap
        ("FB04", 1, 350_000),  # Class B PCI at its cap
        ("XB09", 20, 160_000),  # Class B trastuzumab at its cap
        ("XB07", 10, 40_000),  # Class B albumin above its 360-yuan cap
        ("FA02", 37, 24_000),  # Class A ICU bed days
        ("FA09", 37, 600_000),  # Class A ECMO days
        ("FA01", 20, 6_000),  # Class A general ward bed days
        ("FA03", 43, 3_000),  # Class A grade I nursing
        ("XC02", 59, 7_000),  # Class C cordyceps
    )
    # Earlier this year the pooled fund paid 30,000 yuan and the deductible was met. As in the
    # issue, the critical-illness base counts from this bill.
    before = YearToDate(deductible_used_fen=1_200 * YUAN, pooled_paid_fen=30_000 * YUAN)

    result = settle(stay, rules=RESIDENT, level=3, before=before)

    assert result.total_fen == 300_000 * YUAN
    assert result.in_scope_fen == 270_000 * YUAN
    assert result.excluded_fen + result.over_cap_fen + result.first_self_pay_fen == 30_000 * YUAN
    assert result.deductible_fen == 0
    assert result.pooled_fen == 100_000 * YUAN
    assert result.critical_fen == (45_000 + 42_000) * YUAN
    assert result.fund_fen == 187_000 * YUAN
    assert result.cash_fen == 113_000 * YUAN
    assert_adds_up(result)
    assert result.reasons == (
        Reason.DEDUCTIBLE_MET,
        Reason.POOLED_RATIO,
        Reason.POOLED_CAP_REACHED,
        Reason.CRITICAL_DEDUCTIBLE,
        Reason.CRITICAL_BAND,
        Reason.CASH,
    )
    assert result.after == YearToDate(
        deductible_used_fen=1_200 * YUAN,
        pooled_paid_fen=130_000 * YUAN,  # the cap, exactly
        critical_base_fen=170_000 * YUAN,
        critical_paid_fen=87_000 * YUAN,
    )
    by_line = {line.code: line for line in result.lines}
    assert by_line["HC01"].reasons == (Reason.CLASS_C,)
    assert by_line["HC01"].excluded_fen == 1_200_000
    assert by_line["FC03"].reasons == (Reason.CLASS_C,)
    assert by_line["HB01"].reasons == (
        Reason.CLASS_B,
        Reason.OVER_PRICE_CAP,
        Reason.CLASS_B_FIRST_SELF_PAY,
    )
    assert (by_line["HB01"].over_cap_fen, by_line["HB01"].first_self_pay_fen) == (640_000, 16_000)
    assert by_line["HB01"].in_scope_fen == 144_000
    assert by_line["FB04"].reasons == (Reason.CLASS_B, Reason.CLASS_B_FIRST_SELF_PAY)
    assert by_line["XB09"].first_self_pay_fen == 320_000
    assert by_line["XB07"].reasons == (
        Reason.CLASS_B,
        Reason.OVER_PRICE_CAP,
        Reason.CLASS_B_FIRST_SELF_PAY,
    )
    assert by_line["FA09"].reasons == (Reason.CLASS_A,)
    assert by_line["FA09"].in_scope_fen == 37 * 600_000
    assert by_line["XC02"].catalogue_class == "C"


def test_critical_illness_bands_split_as_the_issue_says() -> None:
    """The year's in-scope self-pay reaches 100,000 yuan: 50% of the 90,000 above the 10,000
    deductible is 45,000; 70,000 more at 60% is 42,000."""
    before = YearToDate(pooled_paid_fen=RESIDENT.annual_pooled_cap_fen)  # nothing pooled left
    small = settle(bill(("FA09", 1, 600_000)), before=before)
    assert small.critical_fen == 0  # 6,000 yuan: under the critical-illness deductible
    assert Reason.CRITICAL_DEDUCTIBLE in small.reasons
    assert Reason.CRITICAL_BAND not in small.reasons

    first = settle(bill(("FA09", 16, 600_000), ("FA05", 50, 8_000)), before=before)
    assert first.in_scope_fen == 100_000 * YUAN
    assert first.critical_fen == 45_000 * YUAN
    second = settle(bill(("FA09", 11, 600_000), ("FA05", 50, 8_000)), before=first.after)
    assert second.in_scope_fen == 70_000 * YUAN
    assert second.critical_fen == 42_000 * YUAN
    assert Reason.CRITICAL_DEDUCTIBLE not in second.reasons


def test_critical_illness_pays_the_same_however_the_year_is_cut_into_bills() -> None:
    full = YearToDate(pooled_paid_fen=RESIDENT.annual_pooled_cap_fen)
    one = settle(bill(("FA09", 1, 600_000), ("FA05", 1, 7_777)), before=full)
    at_once = settle(bill(("FA09", 30, 600_000), ("FA05", 30, 7_777)), before=full)
    state = full
    paid = 0
    for _ in range(30):
        piece = settle(bill(("FA09", 1, 600_000), ("FA05", 1, 7_777)), before=state)
        paid += piece.critical_fen
        state = piece.after
    assert one.critical_fen == 0
    assert paid == at_once.critical_fen > 0  # rounding never drifts by a fen
    assert state.critical_base_fen == at_once.after.critical_base_fen


def test_critical_illness_stops_at_its_cap() -> None:
    terms = RESIDENT.critical_illness
    assert terms is not None
    before = YearToDate(
        pooled_paid_fen=RESIDENT.annual_pooled_cap_fen,
        critical_base_fen=200_000 * YUAN,
        critical_paid_fen=terms.annual_cap_fen - 1_000,
    )
    result = settle(bill(("FA09", 2, 600_000)), before=before)
    assert result.critical_fen == 1_000
    assert Reason.CRITICAL_CAP_REACHED in result.reasons
    assert result.after.critical_paid_fen == terms.annual_cap_fen


# --- the deductible and the cap ---------------------------------------------------------


def test_the_deductible_is_applied_once_across_bills() -> None:
    # Resident scheme, level 2 hospital: deductible 600 yuan, then 75%.
    first = settle(bill(("FA01", 5, 6_000), ("FA03", 5, 2_000)), level=2)
    assert first.in_scope_fen == 40_000
    assert first.deductible_fen == 40_000
    assert first.pooled_fen == 0
    assert first.reasons == (Reason.DEDUCTIBLE, Reason.CRITICAL_DEDUCTIBLE, Reason.CASH)

    again = bill(("FA01", 10, 6_000), ("FA05", 5, 8_000), bill_id="B2")
    second = settle(again, level=2, before=first.after)
    assert second.in_scope_fen == 100_000
    assert second.deductible_fen == 20_000  # what remained of the 600 yuan
    assert second.pooled_fen == 60_000  # 75% of 800 yuan
    assert second.after.deductible_used_fen == 60_000

    third = settle(bill(("FA01", 1, 6_000), bill_id="B3"), level=2, before=second.after)
    assert third.deductible_fen == 0
    assert third.pooled_fen == 4_500
    assert Reason.DEDUCTIBLE_MET in third.reasons


def test_a_bill_near_the_cap_gets_only_what_remains() -> None:
    cap = RESIDENT.annual_pooled_cap_fen
    before = YearToDate(deductible_used_fen=120_000, pooled_paid_fen=cap - 5_000)
    result = settle(bill(("FA01", 10, 6_000)), level=3, before=before)
    assert result.pooled_fen == 5_000  # 65% of 600 yuan would be 390 yuan
    assert Reason.POOLED_CAP_REACHED in result.reasons
    assert result.after.pooled_paid_fen == cap
    assert result.cash_fen == 60_000 - 5_000
    following = settle(bill(("FA01", 1, 6_000), bill_id="B2"), level=3, before=result.after)
    assert following.pooled_fen == 0
    assert Reason.POOLED_CAP_REACHED in following.reasons
    assert Reason.POOLED_RATIO not in following.reasons


def test_lower_level_hospitals_reimburse_more() -> None:
    stay = bill(("FA01", 100, 6_000))  # 6,000 yuan in scope
    paid = {level: settle(stay, level=level).pooled_fen for level in (1, 2, 3)}
    assert paid == {
        1: (600_000 - 30_000) * 85 // 100,
        2: 540_000 * 75 // 100,
        3: 480_000 * 65 // 100,
    }


def test_outpatient_bills_use_outpatient_pooling() -> None:
    visit = bill(("XA02", 4, 2_000), ("FA04", 1, 2_500), visit=VisitType.OUTPATIENT)
    below = settle(visit)
    assert below.deductible_fen == 10_500  # under the 300-yuan outpatient deductible
    assert below.pooled_fen == 0
    met = settle(visit, before=YearToDate(outpatient_deductible_used_fen=30_000))
    assert met.pooled_fen == 10_500 // 2  # 50%
    assert met.after.outpatient_pooled_paid_fen == met.after.pooled_paid_fen == 10_500 // 2
    # The inpatient deductible is another one: having met it does not meet the outpatient's.
    inpatient_met = settle(visit, before=YearToDate(deductible_used_fen=120_000))
    assert inpatient_met.deductible_fen == 10_500
    assert inpatient_met.after.deductible_used_fen == 120_000
    no_pooling = RESIDENT.model_copy(update={"outpatient": None})
    refused = settle(
        visit, rules=no_pooling, before=YearToDate(outpatient_deductible_used_fen=30_000)
    )
    assert refused.pooled_fen == 0
    assert Reason.OUTPATIENT_NOT_POOLED in refused.reasons


def test_the_outpatient_pool_has_a_cap_of_its_own() -> None:
    visit = bill(("FA05", 2, 8_000), visit=VisitType.OUTPATIENT)
    almost = YearToDate(
        outpatient_deductible_used_fen=30_000,
        outpatient_pooled_paid_fen=300_000 - 1_000,  # 10 yuan left of the 3,000-yuan pool
        pooled_paid_fen=300_000 - 1_000,
    )
    capped = settle(visit, before=almost)
    assert capped.pooled_fen == 1_000
    assert Reason.POOLED_CAP_REACHED in capped.reasons
    assert capped.after.outpatient_pooled_paid_fen == 300_000
    # Inpatient care is held only to the year's cap, whatever the outpatient pool used.
    stay = settle(bill(("FA01", 30, 6_000)), level=1, before=almost)
    assert stay.pooled_fen > 0


# --- lines and rounding -----------------------------------------------------------------


def test_rounding_favours_no_fund_and_loses_no_fen() -> None:
    met = YearToDate(deductible_used_fen=30_000)
    result = settle(bill(("XB04", 1, 7), ("XA02", 1, 333)), level=1, before=met)
    class_b, class_a = result.lines
    assert (class_b.first_self_pay_fen, class_b.in_scope_fen) == (1, 6)  # 10% of 7, rounded up
    assert class_a.in_scope_fen == 333
    assert result.pooled_fen == 339 * 85 // 100  # 288.15 fen -> 288
    assert result.cash_fen == 340 - 288
    assert_adds_up(result)


def test_a_code_off_the_catalogue_is_paid_by_the_patient() -> None:
    result = settle(bill(("ZZ99", 2, 5_000), ("FA01", 1, 6_000)), level=1)
    off, _ = result.lines
    assert off.catalogue_class is None
    assert off.reasons == (Reason.OFF_CATALOGUE,)
    assert off.excluded_fen == 10_000
    assert result.in_scope_fen == 6_000


# --- assistance and the personal account ------------------------------------------------


def test_medical_assistance_pays_its_share_of_what_remains() -> None:
    met = YearToDate(deductible_used_fen=120_000)
    plain = settle(bill(("FA01", 10, 6_000), ("XC01", 1, 3_000)), level=3, before=met)
    helped = settle(
        bill(("FA01", 10, 6_000), ("XC01", 1, 3_000)), level=3, before=met, assistance="dibao"
    )
    self_pay = 60_000 - plain.pooled_fen  # 35% of 600 yuan
    assert helped.assistance_fen == self_pay * 70 // 100  # dibao: 70% of in-scope self-pay
    assert helped.cash_fen == plain.cash_fen - helped.assistance_fen  # not the Class C line
    assert Reason.ASSISTANCE in helped.reasons
    assert helped.after.assistance_paid_fen == helped.assistance_fen

    unknown = settle(bill(("FA01", 10, 6_000)), before=met, assistance="martian")
    assert unknown.assistance_fen == 0
    assert Reason.ASSISTANCE_CATEGORY_UNKNOWN in unknown.reasons

    dibao = RESIDENT.assistance_for("dibao")
    assert dibao is not None
    nearly = YearToDate(deductible_used_fen=120_000, assistance_paid_fen=dibao.annual_cap_fen - 7)
    capped = settle(bill(("FA01", 10, 6_000)), before=nearly, assistance="dibao")
    assert capped.assistance_fen == 7
    assert Reason.ASSISTANCE_CAP_REACHED in capped.reasons


def test_the_personal_account_never_pays_more_than_its_balance() -> None:
    met = YearToDate(deductible_used_fen=80_000)
    visit = bill(("FA01", 10, 6_000), ("XB04", 1, 10_000), ("XC01", 1, 3_000))
    rich = settle(visit, rules=EMPLOYEE, level=3, before=met, balance=10_000_000)
    # The employee account pays in-scope self-pay and Class B first self-pay, not Class C.
    assert rich.personal_account_fen == 60_000 + 9_000 - rich.pooled_fen + 1_000
    assert rich.cash_fen == 3_000
    assert rich.reasons[-2:] == (Reason.PERSONAL_ACCOUNT, Reason.CASH)

    poor = settle(visit, rules=EMPLOYEE, level=3, before=met, balance=2_345)
    assert poor.personal_account_fen == 2_345
    assert Reason.PERSONAL_ACCOUNT_EXHAUSTED in poor.reasons
    assert_adds_up(poor)

    empty = settle(visit, rules=EMPLOYEE, level=3, before=met, balance=0)
    assert empty.personal_account_fen == 0
    assert empty.cash_fen == poor.cash_fen + 2_345


def test_residents_have_no_personal_account() -> None:
    result = settle(bill(("FA01", 10, 6_000)), rules=RESIDENT, balance=1_000_000)
    assert result.personal_account_fen == 0
    assert Reason.PERSONAL_ACCOUNT not in result.reasons


def test_impossible_state_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="level"):
        settle(bill(("FA01", 1, 6_000)), level=4)
    with pytest.raises(ValueError, match="personal account"):
        settle(bill(("FA01", 1, 6_000)), rules=EMPLOYEE, balance=-1)
    with pytest.raises(ValueError, match="pooled_paid_fen"):
        settle(bill(("FA01", 1, 6_000)), before=YearToDate(pooled_paid_fen=-5))


# --- bad input --------------------------------------------------------------------------


def raw_bill(*lines: tuple[Any, Any, Any, Any]) -> Bill:
    """A bill as untyped JSON might build it: (sequence, code, quantity, unit price)."""
    return Bill(
        bill_id="BAD",
        facility="Provincial People's Hospital",
        citizen="c-test",
        visit_type=VisitType.INPATIENT,
        service_date=date(2026, 3, 14),
        lines=tuple(
            BillLine(sequence=s, code=c, quantity=q, unit_price_fen=p) for s, c, q, p in lines
        ),
    )


@pytest.mark.parametrize(
    ("the_bill", "code", "line", "says"),
    [
        (raw_bill(), Reason.EMPTY_BILL, None, "no lines"),
        (raw_bill((1, "FA01", 1, 6_000), (2, "NOPE", 1, 5)), Reason.UNKNOWN_CODE, 2, "'NOPE'"),
        (raw_bill((1, "FA01", -2, 6_000)), Reason.NEGATIVE_AMOUNT, 1, "quantity -2"),
        (raw_bill((1, "FA01", 1, 6_000), (3, "XA02", 1, -1)), Reason.NEGATIVE_AMOUNT, 3, "price"),
        (raw_bill((1, "FA01", 0, 6_000)), Reason.ZERO_QUANTITY, 1, "quantity is 0"),
        (raw_bill((1, "FA01", 1.5, 6_000)), Reason.NOT_INTEGER, 1, "1.5"),
        (raw_bill((1, "FA01", 1, 60.0)), Reason.NOT_INTEGER, 1, "unit_price_fen 60.0"),
        (raw_bill((1, "FA01", True, 6_000)), Reason.NOT_INTEGER, 1, "True"),
        (raw_bill((1, "FA01", 1, 6_000), (1, "XA02", 1, 5)), Reason.DUPLICATE_LINE, 1, "twice"),
        (raw_bill((0, "FA01", 1, 6_000)), Reason.BAD_SEQUENCE, 0, "sequence 0"),
        (raw_bill((1, "FA01", 10**6, 10**6)), Reason.AMOUNT_TOO_LARGE, 1, "exceeds"),
    ],
)
def test_bad_bills_are_refused_naming_the_line(
    the_bill: Bill, code: Reason, line: int | None, says: str
) -> None:
    with pytest.raises(BillRefused) as refused:
        check_bill(the_bill, CATALOGUE)
    assert refused.value.code is code
    assert refused.value.line == line
    assert says in refused.value.detail
    if code is not Reason.UNKNOWN_CODE:  # adjudicate bills an unknown code to the patient
        with pytest.raises(BillRefused) as again:
            settle(the_bill)
        assert again.value.code is code


def test_a_good_bill_passes_the_checks() -> None:
    check_bill(bill(("FA01", 3, 6_000), ("XA01", 1, 0)), CATALOGUE)


def test_every_reason_has_a_text_and_only_refusals_refuse() -> None:
    for reason in Reason:
        assert reason.text.endswith(".")
    assert Reason.NOT_ENROLLED.is_refusal
    assert not Reason.CASH.is_refusal
    assert {Reason.CARD_NOT_ENABLED, Reason.OUTSIDE_COVERAGE, Reason.NO_RULES} <= REFUSALS
    with pytest.raises(ValueError, match="explains"):
        BillRefused(Reason.CASH, "not a refusal")


# --- properties -------------------------------------------------------------------------

CODES = [*sorted(CATALOGUE), "OFF1"]  # OFF1: a code off the catalogue


def check_invariants(
    the_bill: Bill,
    rules: RuleSet,
    level: int,
    before: YearToDate,
    balance: int,
    assistance: str | None,
) -> None:
    """Whatever the bill and the year so far: the split adds up, nothing is negative, no fund
    passes its cap, the personal account stays within its balance."""
    result = settle(
        the_bill, rules=rules, level=level, before=before, balance=balance, assistance=assistance
    )
    assert_adds_up(result)
    cap_left = max(0, rules.annual_pooled_cap_fen - before.pooled_paid_fen)
    assert result.pooled_fen <= cap_left
    assert result.after.pooled_paid_fen == before.pooled_paid_fen + result.pooled_fen
    assert result.pooled_fen + result.critical_fen + result.assistance_fen <= result.in_scope_fen
    assert result.personal_account_fen <= balance
    if rules.personal_account is None:
        assert result.personal_account_fen == 0
    if rules.critical_illness is not None:
        critical_left = max(0, rules.critical_illness.annual_cap_fen - before.critical_paid_fen)
        assert result.critical_fen <= critical_left
    deductible = rules.level(level).deductible_fen
    if the_bill.visit_type is VisitType.INPATIENT:
        assert result.after.deductible_used_fen <= max(deductible, before.deductible_used_fen)
    assert sum(line.amount_fen for line in result.lines) == result.total_fen


def random_case(rng: random.Random) -> tuple[Bill, RuleSet, int, YearToDate, int, str | None]:
    rules = rng.choice([RESIDENT, EMPLOYEE])
    cap = rules.annual_pooled_cap_fen
    lines = tuple(
        BillLine(
            sequence=n,
            code=rng.choice(CODES),
            quantity=rng.randint(1, 50),
            unit_price_fen=rng.choice([0, 1, 7, rng.randint(0, 2_000_000)]),
        )
        for n in range(1, rng.randint(1, 12) + 1)
    )
    the_bill = Bill(
        bill_id="R",
        facility="F",
        citizen="c",
        visit_type=rng.choice(list(VisitType)),
        service_date=date(2026, 5, 1),
        lines=lines,
    )
    before = YearToDate(
        deductible_used_fen=rng.randint(0, 150_000),
        pooled_paid_fen=rng.choice([0, cap - rng.randint(0, 50_000), cap, rng.randint(0, cap)]),
        critical_base_fen=rng.randint(0, 30_000_000),
        critical_paid_fen=rng.randint(0, 40_000_000),
        assistance_paid_fen=rng.randint(0, 15_000_000),
    )
    return (
        the_bill,
        rules,
        rng.randint(1, 3),
        before,
        rng.choice([0, 1, rng.randint(0, 5_000_000)]),
        rng.choice([None, "tekun", "dibao", "dibian", "unknown"]),
    )


def test_the_split_always_adds_up_on_random_bills() -> None:
    """A seeded sweep (reproducible, no extra dependency) of the invariants."""
    rng = random.Random(20260314)
    for _ in range(500):
        check_invariants(*random_case(rng))


# The type-ignores below matter only while hypothesis is missing from the environment.
try:
    from hypothesis import given, settings  # type: ignore[import-not-found, unused-ignore]
    from hypothesis import strategies as st  # type: ignore[import-not-found, unused-ignore]
except ModuleNotFoundError:  # not yet in requirements.lock: the seeded sweep above still runs
    pass
else:

    @st.composite  # type: ignore[untyped-decorator, unused-ignore]
    def cases(draw: st.DrawFn) -> tuple[Bill, RuleSet, int, YearToDate, int, str | None]:
        rules = draw(st.sampled_from([RESIDENT, EMPLOYEE]))
        cap = rules.annual_pooled_cap_fen
        lines = draw(
            st.lists(
                st.tuples(st.sampled_from(CODES), st.integers(1, 50), st.integers(0, 2_000_000)),
                min_size=1,
                max_size=12,
            )
        )
        the_bill = bill(*lines, visit=draw(st.sampled_from(list(VisitType))))
        before = YearToDate(
            deductible_used_fen=draw(st.integers(0, 150_000)),
            pooled_paid_fen=draw(st.one_of(st.integers(0, cap), st.integers(cap - 50_000, cap))),
            critical_base_fen=draw(st.integers(0, 30_000_000)),
            critical_paid_fen=draw(st.integers(0, 40_000_000)),
            assistance_paid_fen=draw(st.integers(0, 15_000_000)),
        )
        return (
            the_bill,
            rules,
            draw(st.integers(1, 3)),
            before,
            draw(st.integers(0, 5_000_000)),
            draw(st.sampled_from([None, "tekun", "dibao", "dibian", "unknown"])),
        )

    # database=None: hypothesis keeps no example database on disk (tests share no files).
    @settings(max_examples=300, deadline=None, database=None)  # type: ignore[untyped-decorator, unused-ignore]
    @given(case=cases())  # type: ignore[untyped-decorator, unused-ignore]
    def test_the_split_always_adds_up_hypothesis(
        case: tuple[Bill, RuleSet, int, YearToDate, int, str | None],
    ) -> None:
        check_invariants(*case)
