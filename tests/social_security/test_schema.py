"""The migrated database keeps the invariants money depends on, whatever the code does."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.models import AccountRow, ClaimRow


async def test_an_account_never_goes_negative(ss_session: AsyncSession) -> None:
    ss_session.add(AccountRow(citizen="c1", kind="medical", balance_fen=-1))
    with pytest.raises(IntegrityError):
        await ss_session.commit()


async def test_a_claims_split_adds_up_to_its_total(ss_session: AsyncSession) -> None:
    ss_session.add(
        ClaimRow(
            id="k1",
            facility="h",
            bill_id="b1",
            bill_digest="d",
            citizen="c1",
            scheme="resident_medical",
            year=2026,
            service_date=date(2026, 3, 1),
            status="settled",
            total_fen=10_000,
            in_scope_fen=10_000,
            deductible_fen=0,
            pooled_fen=5_000,
            critical_fen=0,
            assistance_fen=0,
            personal_account_fen=0,
            cash_fen=4_999,
            adjudication="{}",
            bill="{}",
            terminal="t",
            settled_at=datetime.now(UTC),
        )
    )
    with pytest.raises(IntegrityError):
        await ss_session.commit()
