"""Individual accounts (medical personal account, pension individual account): credits and debits.

Every movement is an :class:`AccountEntryRow` beside the :class:`AccountRow` balance it changed,
written in the caller's transaction (this module flushes, never commits: CONTRIBUTING.md
"one request, one unit of work").

* Once per reference: ``reference`` (``contribution:<scheme>:<period>``, ``claim:<id>``, ...) is
  unique per account (``uq_account_entries_reference``). Posting a reference again changes
  nothing and returns the entry already there; the same reference with another amount is a
  :class:`ReferenceConflict`, because silently keeping either amount would hide a bug.
* Never below zero: a debit larger than the balance raises :class:`InsufficientBalance` and
  writes nothing (the ``ck_accounts_balance`` CHECK is the database's second line of defence).
* Concurrency: the account row is locked before its balance is read, ``SELECT ... FOR UPDATE``
  on PostgreSQL. SQLite has one writer; a write statement is issued first so that the write
  lock is held before anything is read (the same order as ``identity.pki.repository``).
  Accounts are locked in (citizen, kind) order, so two batches never wait on each other in a
  cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.kit.sqltypes import utcnow
from social_security.models import AccountEntryRow, AccountRow
from social_security.schemes import AccountKind

# Keys per statement: well under the bound-parameter limits of SQLite (32766) and asyncpg (32767).
_KEYS_PER_QUERY = 1_000
_REASON_MAX = 32
_REFERENCE_MAX = 128
_CITIZEN_MAX = 64


class LedgerError(ValueError):
    """A movement the ledger refuses; nothing was written."""


class InsufficientBalance(LedgerError):
    """A debit larger than the account's balance."""

    def __init__(self, *, kind: str, balance_fen: int, amount_fen: int) -> None:
        super().__init__(
            f"the {kind} account holds {balance_fen} fen; a debit of {amount_fen} fen would "
            "take it below zero"
        )
        self.balance_fen = balance_fen
        self.amount_fen = amount_fen


class ReferenceConflict(LedgerError):
    """The reference was already posted with another amount."""

    def __init__(self, *, reference: str, posted_fen: int, requested_fen: int) -> None:
        super().__init__(
            f"reference {reference!r} was already posted as {posted_fen} fen, not "
            f"{requested_fen} fen"
        )


@dataclass(frozen=True)
class Movement:
    """One movement to post: ``amount_fen`` positive for a credit, negative for a debit."""

    citizen: str
    kind: AccountKind
    amount_fen: int
    reason: str
    reference: str

    def __post_init__(self) -> None:
        if self.amount_fen == 0:
            raise LedgerError("a movement of 0 fen is not a movement")
        if not 0 < len(self.citizen) <= _CITIZEN_MAX:
            raise LedgerError(f"a citizen id has 1 to {_CITIZEN_MAX} characters")
        if not 0 < len(self.reason) <= _REASON_MAX:
            raise LedgerError(f"a reason has 1 to {_REASON_MAX} characters")
        if not 0 < len(self.reference) <= _REFERENCE_MAX:
            raise LedgerError(f"a reference has 1 to {_REFERENCE_MAX} characters")

    @property
    def account(self) -> tuple[str, str]:
        return (self.citizen, self.kind.value)


async def credit(
    session: AsyncSession,
    *,
    citizen: str,
    kind: AccountKind,
    amount_fen: int,
    reason: str,
    reference: str,
    at: datetime | None = None,
) -> AccountEntryRow:
    """Add ``amount_fen`` (> 0) to the account, opening it at 0 if it does not exist yet."""
    if amount_fen <= 0:
        raise LedgerError("a credit is a positive number of fen")
    movement = Movement(citizen, kind, amount_fen, reason, reference)
    return await _post_one(session, movement, at)


async def debit(
    session: AsyncSession,
    *,
    citizen: str,
    kind: AccountKind,
    amount_fen: int,
    reason: str,
    reference: str,
    at: datetime | None = None,
) -> AccountEntryRow:
    """Take ``amount_fen`` (> 0) from the account; :class:`InsufficientBalance` if it has less.

    The entry records ``-amount_fen``."""
    if amount_fen <= 0:
        raise LedgerError("a debit is a positive number of fen")
    movement = Movement(citizen, kind, -amount_fen, reason, reference)
    return await _post_one(session, movement, at)


async def debit_locked(
    session: AsyncSession,
    account: AccountRow,
    *,
    amount_fen: int,
    reason: str,
    reference: str,
    at: datetime,
) -> None:
    """Take ``amount_fen`` (> 0) from an account the caller locked in this transaction
    (``SELECT ... FOR UPDATE``, as a settlement does before it reads the balance), under a
    reference new by construction (``claim:<new claim id>``).

    The settlement's path: :func:`debit` would lock the account again and look the reference
    up, three statements the caller already did or cannot need; ``uq_account_entries_reference``
    still refuses a reference posted twice, and :class:`InsufficientBalance` still refuses a
    debit larger than the balance, before anything is written."""
    if amount_fen <= 0:
        raise LedgerError("a debit is a positive number of fen")
    movement = Movement(account.citizen, AccountKind(account.kind), -amount_fen, reason, reference)
    after = account.balance_fen - amount_fen
    if after < 0:
        raise InsufficientBalance(
            kind=account.kind, balance_fen=account.balance_fen, amount_fen=amount_fen
        )
    account.balance_fen = after
    session.add(account)
    connection = await session.connection()
    await connection.execute(
        _NEW_ENTRY,
        {
            "citizen": movement.citizen,
            "kind": movement.kind.value,
            "at": at,
            "amount_fen": movement.amount_fen,
            "balance_after_fen": after,
            "reason": movement.reason,
            "reference": movement.reference,
        },
    )


# Built once (a Core statement, its values bound at execution): building an ORM insert per
# settlement cost more CPU than the database's work on it.
_NEW_ENTRY = insert(AccountEntryRow.__table__)  # type: ignore[attr-defined]


async def balance(session: AsyncSession, *, citizen: str, kind: AccountKind) -> int:
    """The account's balance in fen (0 when it was never opened); no lock taken."""
    result = await session.exec(
        select(col(AccountRow.balance_fen)).where(
            col(AccountRow.citizen) == citizen, col(AccountRow.kind) == kind.value
        )
    )
    return result.one_or_none() or 0


@dataclass(frozen=True)
class Posted:
    """What became of one movement: ``new`` False when its reference had been posted before
    (and nothing changed)."""

    movement: Movement
    new: bool


async def post(
    session: AsyncSession, movements: Sequence[Movement], *, at: datetime | None = None
) -> list[Posted]:
    """Post movements in one go (the bulk importer's path; ``credit``/``debit`` post one).

    Returns what became of each movement, in order. All or nothing: if one movement is
    refused, the error is raised before any balance or entry was written (at most an account
    about to be credited was opened at 0). Entries are inserted with one executemany, without
    building an ORM object per entry (an import posts millions).
    """
    if not movements:
        return []
    when = at or utcnow()
    accounts = await _lock_accounts(
        session,
        keys=sorted({m.account for m in movements}),
        opening={m.account for m in movements if m.amount_fen > 0},
    )
    posted = await _posted_entries(session, movements)
    balances = {key: account.balance_fen for key, account in accounts.items()}
    results: list[Posted] = []
    rows: list[dict[str, Any]] = []
    for movement in movements:
        key = (movement.citizen, movement.kind.value, movement.reference)
        posted_fen = posted.get(key)
        if posted_fen is not None:
            if posted_fen != movement.amount_fen:
                raise ReferenceConflict(
                    reference=movement.reference,
                    posted_fen=posted_fen,
                    requested_fen=movement.amount_fen,
                )
            results.append(Posted(movement, new=False))
            continue
        after = balances.get(movement.account, 0) + movement.amount_fen
        if after < 0:
            raise InsufficientBalance(
                kind=movement.kind.value,
                balance_fen=balances.get(movement.account, 0),
                amount_fen=-movement.amount_fen,
            )
        balances[movement.account] = after
        posted[key] = movement.amount_fen
        results.append(Posted(movement, new=True))
        rows.append(
            {
                "citizen": movement.citizen,
                "kind": movement.kind.value,
                "at": when,
                "amount_fen": movement.amount_fen,
                "balance_after_fen": after,
                "reason": movement.reason,
                "reference": movement.reference,
            }
        )
    # Only now, with every movement accepted, does anything change.
    for account_key, account in accounts.items():
        account.balance_fen = balances[account_key]
    await session.flush()
    for start in range(0, len(rows), _KEYS_PER_QUERY):
        await session.exec(insert(AccountEntryRow), params=rows[start : start + _KEYS_PER_QUERY])
    return results


async def _post_one(
    session: AsyncSession, movement: Movement, at: datetime | None
) -> AccountEntryRow:
    await post(session, [movement], at=at)
    result = await session.exec(
        select(AccountEntryRow).where(
            col(AccountEntryRow.citizen) == movement.citizen,
            col(AccountEntryRow.kind) == movement.kind.value,
            col(AccountEntryRow.reference) == movement.reference,
        )
    )
    return result.one()


async def _lock_accounts(
    session: AsyncSession, *, keys: list[tuple[str, str]], opening: set[tuple[str, str]]
) -> dict[tuple[str, str], AccountRow]:
    """Lock the accounts (opening at 0 those about to be credited); keyed by (citizen, kind)."""
    dialect = session.get_bind().dialect.name
    to_open = [{"citizen": c, "kind": k, "balance_fen": 0} for c, k in keys if (c, k) in opening]
    if to_open:
        # INSERT ... ON CONFLICT DO NOTHING: a concurrent opener of the same account waits on
        # ours (PostgreSQL) instead of failing on the primary key; on SQLite it is the write
        # that takes the database's write lock.
        insert = (postgresql if dialect == "postgresql" else sqlite).insert(AccountRow)
        for start in range(0, len(to_open), _KEYS_PER_QUERY):
            await session.exec(
                insert.on_conflict_do_nothing(index_elements=["citizen", "kind"]),
                params=to_open[start : start + _KEYS_PER_QUERY],
            )
    elif dialect == "sqlite":
        # Debits only: a no-op UPDATE takes SQLite's write lock before the balance is read.
        citizen, kind = keys[0]
        await session.exec(
            update(AccountRow)
            .where(col(AccountRow.citizen) == citizen, col(AccountRow.kind) == kind)
            .values(balance_fen=col(AccountRow.balance_fen))
        )
    accounts: dict[tuple[str, str], AccountRow] = {}
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        result = await session.exec(
            select(AccountRow)
            .where(
                tuple_(col(AccountRow.citizen), col(AccountRow.kind)).in_(
                    keys[start : start + _KEYS_PER_QUERY]
                )
            )
            .order_by(col(AccountRow.citizen), col(AccountRow.kind))
            .with_for_update()
            # The balance must be the one just locked, not a copy this session loaded earlier.
            .execution_options(populate_existing=True)
        )
        accounts.update({(a.citizen, a.kind): a for a in result.all()})
    return accounts


async def _posted_entries(
    session: AsyncSession, movements: Iterable[Movement]
) -> dict[tuple[str, str, str], int]:
    """The amounts of the entries already posted under these movements' references.

    Asked as ``citizen IN (...) AND kind IN (...) AND reference IN (...)`` and narrowed here:
    a batch holds few distinct references (one per contribution period), and PostgreSQL
    plans this as one pass over the unique index, where a row-value IN list of the same
    length was an order of magnitude slower."""
    wanted = {(m.citizen, m.kind.value, m.reference) for m in movements}
    citizens = sorted({c for c, _, _ in wanted})
    kinds = sorted({k for _, k, _ in wanted})
    references = sorted({r for _, _, r in wanted})
    found: dict[tuple[str, str, str], int] = {}
    for start in range(0, len(citizens), _KEYS_PER_QUERY):
        for ref_start in range(0, len(references), _KEYS_PER_QUERY):
            result = await session.exec(
                select(
                    col(AccountEntryRow.citizen),
                    col(AccountEntryRow.kind),
                    col(AccountEntryRow.reference),
                    col(AccountEntryRow.amount_fen),
                ).where(
                    col(AccountEntryRow.citizen).in_(citizens[start : start + _KEYS_PER_QUERY]),
                    col(AccountEntryRow.kind).in_(kinds),
                    col(AccountEntryRow.reference).in_(
                        references[ref_start : ref_start + _KEYS_PER_QUERY]
                    ),
                )
            )
            found.update(
                {(c, k, r): amount for c, k, r, amount in result.all() if (c, k, r) in wanted}
            )
    return found
