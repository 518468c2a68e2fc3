"""Individual accounts: once per reference, never below zero, safe under parallel debits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.benefits import ledger
from social_security.benefits.ledger import InsufficientBalance, ReferenceConflict
from social_security.models import AccountEntryRow
from social_security.schemes import AccountKind

MEDICAL = AccountKind.MEDICAL


async def _entries(session: AsyncSession, citizen: str) -> list[AccountEntryRow]:
    result = await session.exec(
        select(AccountEntryRow)
        .where(col(AccountEntryRow.citizen) == citizen)
        .order_by(col(AccountEntryRow.id))
    )
    return list(result.all())


async def test_credit_opens_the_account_and_debit_takes_from_it(ss_session: AsyncSession) -> None:
    at = datetime(2026, 3, 1, 8, tzinfo=UTC)
    await ledger.credit(
        ss_session,
        citizen="cz_a",
        kind=MEDICAL,
        amount_fen=38_000,
        reason="contribution",
        reference="contribution:employee_medical:2026-02",
        at=at,
    )
    entry = await ledger.debit(
        ss_session,
        citizen="cz_a",
        kind=MEDICAL,
        amount_fen=12_345,
        reason="claim",
        reference="claim:k1",
    )
    await ss_session.commit()
    assert (entry.amount_fen, entry.balance_after_fen) == (-12_345, 25_655)
    assert await ledger.balance(ss_session, citizen="cz_a", kind=MEDICAL) == 25_655
    assert await ledger.balance(ss_session, citizen="cz_a", kind=AccountKind.PENSION) == 0
    assert [e.reference for e in await _entries(ss_session, "cz_a")] == [
        "contribution:employee_medical:2026-02",
        "claim:k1",
    ]


async def test_the_same_reference_moves_money_once(ss_session: AsyncSession) -> None:
    args: dict[str, Any] = {"citizen": "cz_b", "kind": MEDICAL, "reason": "r", "reference": "r1"}
    first = await ledger.credit(ss_session, amount_fen=500, **args)
    await ss_session.commit()
    again = await ledger.credit(ss_session, amount_fen=500, **args)
    await ss_session.commit()
    assert again.id == first.id
    assert await ledger.balance(ss_session, citizen="cz_b", kind=MEDICAL) == 500
    with pytest.raises(ReferenceConflict, match="already posted as 500 fen"):
        await ledger.credit(ss_session, amount_fen=600, **args)
    assert len(await _entries(ss_session, "cz_b")) == 1


async def test_a_debit_never_takes_an_account_below_zero(ss_session: AsyncSession) -> None:
    await ledger.credit(
        ss_session, citizen="cz_c", kind=MEDICAL, amount_fen=100, reason="r", reference="c1"
    )
    with pytest.raises(InsufficientBalance, match="holds 100 fen"):
        await ledger.debit(
            ss_session, citizen="cz_c", kind=MEDICAL, amount_fen=101, reason="claim", reference="d1"
        )
    with pytest.raises(InsufficientBalance, match="holds 0 fen"):
        await ledger.debit(
            ss_session, citizen="cz_none", kind=MEDICAL, amount_fen=1, reason="claim", reference="d"
        )
    # The refused debits wrote nothing; the transaction is still usable.
    await ss_session.commit()
    assert await ledger.balance(ss_session, citizen="cz_c", kind=MEDICAL) == 100
    assert len(await _entries(ss_session, "cz_c")) == 1


async def test_zero_and_negative_amounts_are_refused(ss_session: AsyncSession) -> None:
    args: dict[str, Any] = {"citizen": "cz_d", "kind": MEDICAL, "reason": "r", "reference": "x"}
    for amount in (0, -5):
        with pytest.raises(ledger.LedgerError):
            await ledger.credit(ss_session, amount_fen=amount, **args)
        with pytest.raises(ledger.LedgerError):
            await ledger.debit(ss_session, amount_fen=amount, **args)
    assert await ledger.balance(ss_session, citizen="cz_d", kind=MEDICAL) == 0


async def test_a_batch_is_all_or_nothing(ss_session: AsyncSession) -> None:
    batch = [
        ledger.Movement("cz_e", MEDICAL, 300, "contribution", "m1"),
        ledger.Movement("cz_e", MEDICAL, -200, "claim", "m2"),
        ledger.Movement("cz_e", MEDICAL, -200, "claim", "m3"),
    ]
    with pytest.raises(InsufficientBalance):
        await ledger.post(ss_session, batch)
    await ss_session.commit()
    assert await _entries(ss_session, "cz_e") == []
    posted = await ledger.post(ss_session, batch[:2])
    await ss_session.commit()
    assert [p.new for p in posted] == [True, True]
    assert [e.balance_after_fen for e in await _entries(ss_session, "cz_e")] == [300, 100]
    again = await ledger.post(ss_session, batch[:2])
    assert [p.new for p in again] == [False, False]
    assert await ledger.balance(ss_session, citizen="cz_e", kind=MEDICAL) == 100


async def test_twenty_parallel_debits_never_overdraw(
    ss_app: FastAPI, ss_session: AsyncSession
) -> None:
    """Each debit in its own session and transaction, as twenty counters at once would."""
    await ledger.credit(
        ss_session, citizen="cz_p", kind=MEDICAL, amount_fen=10 * 700, reason="r", reference="top"
    )
    await ss_session.commit()
    sessionmaker = ss_app.state.runtime.db.sessionmaker

    async def one_debit(n: int) -> bool:
        async with sessionmaker() as session:
            try:
                await ledger.debit(
                    session,
                    citizen="cz_p",
                    kind=MEDICAL,
                    amount_fen=700,
                    reason="claim",
                    reference=f"claim:{n}",
                )
                await session.commit()
            except InsufficientBalance:
                await session.rollback()
                return False
        return True

    outcomes = await asyncio.gather(*(one_debit(n) for n in range(20)))
    assert outcomes.count(True) == 10
    ss_session.expire_all()
    assert await ledger.balance(ss_session, citizen="cz_p", kind=MEDICAL) == 0
    entries = await _entries(ss_session, "cz_p")
    assert [e.balance_after_fen for e in entries] == [7_000 - 700 * i for i in range(11)]


async def test_a_debit_of_a_locked_account_moves_money_once_and_never_below_zero(
    ss_session: AsyncSession,
) -> None:
    """The settlement's path: the account locked by the caller, the reference new."""
    from social_security.models import AccountRow

    at = datetime(2026, 3, 1, 8, tzinfo=UTC)
    await ledger.credit(
        ss_session, citizen="cz_l", kind=MEDICAL, amount_fen=1_000, reason="seed", reference="s"
    )
    account = await ss_session.get(AccountRow, ("cz_l", MEDICAL.value))
    assert account is not None
    with pytest.raises(InsufficientBalance):
        await ledger.debit_locked(
            ss_session, account, amount_fen=1_001, reason="settlement", reference="claim:a", at=at
        )
    await ledger.debit_locked(
        ss_session, account, amount_fen=400, reason="settlement", reference="claim:a", at=at
    )
    await ss_session.commit()
    assert await ledger.balance(ss_session, citizen="cz_l", kind=MEDICAL) == 600
    entries = await _entries(ss_session, "cz_l")
    assert [(e.reference, e.amount_fen, e.balance_after_fen) for e in entries] == [
        ("s", 1_000, 1_000),
        ("claim:a", -400, 600),
    ]
