"""One-stop settlement at the counter (issue #6, item 4), through the service's routes, on both
backends: pre-settlement books nothing, settlement books once, reversal and refund give back
exactly what was taken, bad bills are refused with a reason and change nothing, and parallel
claims for one citizen never pass the cap, the deductible or the personal account."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.models import (
    AccountEntryRow,
    AccountRow,
    ClaimRow,
    EnrolmentRow,
    ProviderRow,
    YearTotalRow,
)
from tests.social_security.conftest import HOSPITAL, counter_auth

SETTLE = "/insurance/settlements"
ZHANG, LI = "cz_zhang", "cz_li"
DAY = date(2026, 11, 20)


async def _province(session: AsyncSession, *, account_fen: int = 0) -> None:
    """A level-3 hospital; Zhang an employee with a personal account, Li a resident."""
    session.add(ProviderRow(facility=HOSPITAL, level=3, kind="hospital"))
    session.add(
        EnrolmentRow(
            citizen=ZHANG, scheme="employee_medical", start_date=date(2020, 1, 1), status="active"
        )
    )
    session.add(
        EnrolmentRow(
            citizen=LI,
            scheme="resident_medical",
            start_date=date(2026, 1, 1),
            end_date=date(2026, 12, 31),
            status="active",
        )
    )
    if account_fen:
        session.add(AccountRow(citizen=ZHANG, kind="medical", balance_fen=account_fen))
    await session.commit()


def bill(
    bill_id: str, *lines: tuple[str, int, int], visit: str = "inpatient", on: date = DAY
) -> dict[str, Any]:
    return {
        "bill_id": bill_id,
        "visit_type": visit,
        "service_date": on.isoformat(),
        "lines": [
            {"sequence": i, "code": code, "quantity": qty, "unit_price_fen": price}
            for i, (code, qty, price) in enumerate(lines, start=1)
        ],
    }


# A stay: 20 bed days and 2 ICU days (Class A), a CT scan (Class B, 10% first self-pay), an
# appendectomy (Class A), a VIP ward day (Class C): 3,900 yuan.
STAY = (
    ("FA01", 20, 6_000),
    ("FA02", 2, 24_000),
    ("FB01", 1, 22_000),
    ("FA07", 1, 150_000),
    ("FC03", 1, 50_000),
)


async def _booked(session: AsyncSession) -> tuple[int, int, int]:
    claims = await session.scalar(select(func.count()).select_from(ClaimRow))
    entries = await session.scalar(select(func.count()).select_from(AccountEntryRow))
    totals = await session.scalar(
        select(func.count()).select_from(YearTotalRow).where(col(YearTotalRow.pooled_paid_fen) > 0)
    )
    return claims or 0, entries or 0, totals or 0


async def test_presettle_books_nothing_and_settle_books_the_same_split_once(
    ss: httpx.AsyncClient, ss_session: AsyncSession
) -> None:
    await _province(ss_session)
    body = bill("B-1001", *STAY)
    preview = await ss.post(f"{SETTLE}/preview", json=body, headers=counter_auth(LI))
    assert preview.status_code == 200, preview.text
    assert preview.json()["claim_id"] is None
    assert await _booked(ss_session) == (0, 0, 0)

    settled = await ss.post(SETTLE, json=body, headers=counter_auth(LI))
    assert settled.status_code == 201, settled.text
    split = settled.json()["split"]
    assert split == preview.json()["split"]
    assert sum(v for k, v in split.items() if k != "total_fen") == split["total_fen"] == 390_000
    assert split["pooled_fen"] > 0
    assert split["cash_fen"] >= 50_000
    lines = {line["code"]: line for line in settled.json()["lines"]}
    assert "CLASS_C" in lines["FC03"]["reasons"]
    assert lines["FB01"]["first_self_pay_fen"] == 2_200

    again = await ss.post(SETTLE, json=body, headers=counter_auth(LI))
    assert again.status_code == 200
    assert again.json()["claim_id"] == settled.json()["claim_id"]
    assert again.json()["split"] == split
    ss_session.expire_all()
    assert (await _booked(ss_session))[0] == 1
    totals = await ss_session.get(YearTotalRow, (LI, "resident_medical", 2026))
    assert totals is not None
    assert totals.pooled_paid_fen == split["pooled_fen"]

    # The next bill's pre-settlement counts what this year has used already (the deductible
    # is taken once) and the personal account as it is now: settling gives the same split.
    second = bill("B-1002", *STAY)
    previewed = await ss.post(f"{SETTLE}/preview", json=second, headers=counter_auth(LI))
    assert previewed.status_code == 200, previewed.text
    assert previewed.json()["deductible_fen"] == 0 < settled.json()["deductible_fen"]
    booked = await ss.post(SETTLE, json=second, headers=counter_auth(LI))
    assert booked.json()["split"] == previewed.json()["split"]


async def test_the_same_bill_id_with_other_lines_is_a_conflict(
    ss: httpx.AsyncClient, ss_session: AsyncSession
) -> None:
    await _province(ss_session)
    assert (
        await ss.post(SETTLE, json=bill("B-7", *STAY), headers=counter_auth(LI))
    ).status_code == 201
    changed = await ss.post(SETTLE, json=bill("B-7", ("FA01", 3, 6_000)), headers=counter_auth(LI))
    assert changed.status_code == 409
    assert changed.json()["code"] == "BILL_CONFLICT"
    assert changed.headers["content-type"].startswith("application/problem+json")


async def test_the_personal_account_pays_and_a_reversal_gives_everything_back(
    ss: httpx.AsyncClient, ss_session: AsyncSession
) -> None:
    await _province(ss_session, account_fen=10_000)
    settled = await ss.post(SETTLE, json=bill("B-9", *STAY), headers=counter_auth(ZHANG))
    assert settled.status_code == 201, settled.text
    split = settled.json()["split"]
    assert split["personal_account_fen"] == 10_000  # all of it, never more
    account = await ss_session.get(AccountRow, (ZHANG, "medical"))
    assert account is not None
    assert account.balance_fen == 0

    claim_id = settled.json()["claim_id"]
    reversed_ = await ss.post(f"{SETTLE}/{claim_id}/reversal", headers=counter_auth(ZHANG))
    assert reversed_.status_code == 200, reversed_.text
    assert reversed_.json()["status"] == "reversed"
    ss_session.expire_all()
    account = await ss_session.get(AccountRow, (ZHANG, "medical"))
    totals = await ss_session.get(YearTotalRow, (ZHANG, "employee_medical", 2026))
    assert account is not None
    assert account.balance_fen == 10_000
    assert totals is not None
    assert (totals.pooled_paid_fen, totals.deductible_used_fen) == (0, 0)
    # Twice is once; and the bill id stays taken.
    assert (
        await ss.post(f"{SETTLE}/{claim_id}/reversal", headers=counter_auth(ZHANG))
    ).status_code == 200
    assert (
        await ss.post(SETTLE, json=bill("B-9", *STAY), headers=counter_auth(ZHANG))
    ).status_code == 409


async def test_a_refund_resettles_the_lines_kept(
    ss: httpx.AsyncClient, ss_session: AsyncSession
) -> None:
    await _province(ss_session)
    settled = await ss.post(SETTLE, json=bill("B-11", *STAY), headers=counter_auth(LI))
    claim_id = settled.json()["claim_id"]
    refund = await ss.post(
        f"{SETTLE}/{claim_id}/refund", json={"lines": [5]}, headers=counter_auth(LI)
    )
    assert refund.status_code == 200, refund.text
    assert refund.json()["replaces"] == claim_id
    assert refund.json()["split"]["total_fen"] == 340_000
    old = await ss.get(f"{SETTLE}/{claim_id}", headers=counter_auth(LI))
    assert old.json()["status"] == "reversed"
    ss_session.expire_all()
    totals = await ss_session.get(YearTotalRow, (LI, "resident_medical", 2026))
    assert totals is not None
    assert totals.pooled_paid_fen == refund.json()["split"]["pooled_fen"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ({"sequence": 1, "code": "FA01", "quantity": 1, "unit_price_fen": 60.5}, "NOT_INTEGER"),
        ({"sequence": 1, "code": "FA01", "quantity": 1, "unit_price_fen": "6000"}, "NOT_INTEGER"),
        ({"sequence": 1, "code": "FA01", "quantity": 1.5, "unit_price_fen": 6000}, "NOT_INTEGER"),
        (
            {"sequence": 1, "code": "FA01", "quantity": 1, "unit_price_fen": -6000},
            "NEGATIVE_AMOUNT",
        ),
        ({"sequence": 1, "code": "NOPE", "quantity": 1, "unit_price_fen": 6000}, "UNKNOWN_CODE"),
    ],
)
async def test_a_bad_line_is_refused_with_its_reason_and_nothing_is_booked(
    ss: httpx.AsyncClient, ss_session: AsyncSession, line: dict[str, Any], reason: str
) -> None:
    await _province(ss_session)
    body = bill("B-20", ("FA01", 1, 6_000))
    body["lines"].append({**line, "sequence": 2})
    response = await ss.post(SETTLE, json=body, headers=counter_auth(LI))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == reason
    assert response.json()["line"] == 2
    assert await _booked(ss_session) == (0, 0, 0)


async def test_who_and_when_are_checked_before_anything_is_booked(
    ss: httpx.AsyncClient, ss_session: AsyncSession
) -> None:
    await _province(ss_session)
    stranger = await ss.post(SETTLE, json=bill("B-30", *STAY), headers=counter_auth("cz_nobody"))
    assert (stranger.status_code, stranger.json()["code"]) == (422, "NOT_ENROLLED")
    late = await ss.post(
        SETTLE, json=bill("B-31", *STAY, on=date(2027, 1, 3)), headers=counter_auth(LI)
    )
    assert (late.status_code, late.json().get("code")) == (422, "OUTSIDE_COVERAGE"), late.text
    elsewhere = await ss.post(
        SETTLE, json=bill("B-32", *STAY), headers=counter_auth(LI, facility="Back-street Clinic")
    )
    assert (elsewhere.status_code, elsewhere.json()["code"]) == (422, "PROVIDER_NOT_DESIGNATED")
    pharmacy = "Yongkang Road Pharmacy"
    ss_session.add(ProviderRow(facility=pharmacy, level=1, kind="pharmacy"))
    ss_session.add(
        EnrolmentRow(
            citizen="cz_paused",
            scheme="resident_medical",
            start_date=date(2026, 1, 1),
            status="suspended",
        )
    )
    await ss_session.commit()
    at_pharmacy = await ss.post(
        SETTLE,
        json=bill("B-34", *STAY),
        headers=counter_auth(LI, facility=pharmacy, purpose="pharmacy"),
    )
    assert (at_pharmacy.status_code, at_pharmacy.json()["code"]) == (422, "VISIT_NOT_OFFERED")
    paused = await ss.post(SETTLE, json=bill("B-35", *STAY), headers=counter_auth("cz_paused"))
    assert (paused.status_code, paused.json()["code"]) == (422, "ENROLMENT_SUSPENDED")
    desk = await ss.post(
        SETTLE, json=bill("B-33", *STAY), headers=counter_auth(LI, purpose="registration_desk")
    )
    assert (desk.status_code, desk.json()["code"]) == (403, "CARD_NOT_ENABLED")
    assert await _booked(ss_session) == (0, 0, 0)


async def test_a_failure_inside_settlement_books_nothing_and_a_retry_settles_once(
    ss: httpx.AsyncClient, ss_session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service dying between pre-settlement and settlement: pre-settlement booked nothing,
    and a settlement that fails half-way (here after the claim row and the accumulators were
    written, at the personal-account debit) is rolled back as a whole."""
    from social_security.benefits import ledger

    await _province(ss_session, account_fen=5_000)
    body = bill("B-40", *STAY)
    assert (
        await ss.post(f"{SETTLE}/preview", json=body, headers=counter_auth(ZHANG))
    ).status_code == 200

    async def crash(*args: Any, **kwargs: Any) -> None:
        raise ConnectionResetError("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(ledger, "debit_locked", crash)
        crashed = await ss.post(SETTLE, json=body, headers=counter_auth(ZHANG))
    assert crashed.status_code == 500  # the unit of work rolled back
    assert await _booked(ss_session) == (0, 0, 0)

    retried = await asyncio.gather(
        *(ss.post(SETTLE, json=body, headers=counter_auth(ZHANG)) for _ in range(5))
    )
    assert sorted(r.status_code for r in retried) == [200, 200, 200, 200, 201]
    assert len({r.json()["claim_id"] for r in retried}) == 1
    ss_session.expire_all()
    account = await ss_session.get(AccountRow, (ZHANG, "medical"))
    assert account is not None
    assert account.balance_fen == 0
    assert (await _booked(ss_session))[:2] == (1, 1)


async def test_fifty_parallel_claims_near_the_cap_never_overpay(
    ss: httpx.AsyncClient, ss_session: AsyncSession
) -> None:
    """Issue #6: parallel claims for one citizen never exceed the annual cap, the deductible
    is applied once, the personal account never goes negative."""
    await _province(ss_session, account_fen=30_000)
    cap = 30_000_000  # employee_medical 2026: the pooled fund's annual cap (fen)
    ss_session.add(
        YearTotalRow(
            citizen=ZHANG,
            scheme="employee_medical",
            year=2026,
            deductible_used_fen=0,
            pooled_paid_fen=cap - 500_000,
            critical_base_fen=0,
            critical_paid_fen=0,
            assistance_paid_fen=0,
        )
    )
    await ss_session.commit()
    bills = [bill(f"P-{i}", ("FA01", 10, 6_000), ("FA04", 4, 2_500)) for i in range(50)]
    answers = await asyncio.gather(
        *(ss.post(SETTLE, json=b, headers=counter_auth(ZHANG)) for b in bills)
    )
    assert [a.status_code for a in answers] == [201] * 50, [
        a.text for a in answers if a.status_code != 201
    ][:2]
    pooled = sum(a.json()["split"]["pooled_fen"] for a in answers)
    from_account = sum(a.json()["split"]["personal_account_fen"] for a in answers)
    deductible = sum(a.json()["deductible_fen"] for a in answers)
    ss_session.expire_all()
    totals = await ss_session.get(YearTotalRow, (ZHANG, "employee_medical", 2026))
    account = await ss_session.get(AccountRow, (ZHANG, "medical"))
    assert totals is not None
    assert account is not None
    assert pooled == 500_000 == totals.pooled_paid_fen - (cap - 500_000)  # exactly the rest
    assert totals.pooled_paid_fen == cap
    assert deductible == totals.deductible_used_fen  # applied once, across all claims
    assert from_account == 30_000
    assert account.balance_fen == 0
