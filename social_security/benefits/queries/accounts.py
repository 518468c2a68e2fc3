"""Individual accounts: balances and the medical personal account's ledger."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.benefits.queries.common import count
from social_security.benefits.schemas import AccountEntry, MedicalAccount, Paging
from social_security.models import AccountEntryRow, AccountRow
from social_security.schemes import AccountKind


async def balance_of(session: AsyncSession, citizen: str, kind: AccountKind) -> int:
    row = await session.get(AccountRow, (citizen, kind.value))
    return row.balance_fen if row is not None else 0


def entry_item(row: AccountEntryRow) -> AccountEntry:
    return AccountEntry(
        at=row.at,
        amount_fen=row.amount_fen,
        balance_after_fen=row.balance_after_fen,
        reason=row.reason,
        reference=row.reference,
    )


async def medical_account(
    *, session: AsyncSession, citizen: str, limit: int, offset: int
) -> MedicalAccount:
    """The medical personal account's balance and one page of its ledger, newest first."""
    where = [
        col(AccountEntryRow.citizen) == citizen,
        col(AccountEntryRow.kind) == AccountKind.MEDICAL.value,
    ]
    rows = (
        await session.exec(
            select(AccountEntryRow)
            .where(*where)
            .order_by(col(AccountEntryRow.at).desc(), col(AccountEntryRow.id).desc())
            .limit(limit)
            .offset(offset)
        )
    ).all()
    total = await count(session, *where)
    return MedicalAccount(
        balance_fen=await balance_of(session, citizen, AccountKind.MEDICAL),
        entries=[entry_item(row) for row in rows],
        paging=Paging.of(total=total, limit=limit, offset=offset),
    )
