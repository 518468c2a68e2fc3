"""One-stop settlement at the counter: pre-settlement, settlement, reversal and refund.

The flow of China's national medical-insurance settlement interface (the hospital system's
pre-settlement, then settlement, then, when needed, reversal): pre-settlement adjudicates the
bill against the citizen's current accumulators and books nothing; settlement adjudicates
again, inside one transaction, and books the claim, the accumulators and the personal-account
debit together, so a crash between the two steps leaves nothing half-booked and a retry settles
exactly once.

Concurrency: the citizen's year-totals row (scheme, year) is locked before the adjudication
reads it (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the upsert that creates the row is
the transaction's first write, which takes the database's one write lock), so parallel claims
for one citizen are adjudicated one after another: the annual cap is never exceeded, the
deductible is applied once, and the personal account (locked next, always in that order) never
goes negative. Idempotency: a bill is identified by (facility, bill id); the same bill again
answers with the booked split, another bill under the same id is a conflict.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import and_, bindparam, literal
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.kit.errors import Problem
from social_security.benefits import ledger
from social_security.claims import reference
from social_security.claims.adjudication import adjudicate, check_bill
from social_security.claims.bill import Adjudication, Bill, VisitType, YearToDate
from social_security.claims.catalogue import CatalogueItem
from social_security.claims.codec import (
    adjudication_from_json,
    adjudication_to_json,
    bill_digest,
    bill_from_json,
    bill_to_json,
)
from social_security.claims.reasons import BillRefused, Reason
from social_security.claims.reference_cache import ReferenceCache
from social_security.models import AccountRow, ClaimRow, YearTotalRow
from social_security.schemes import AccountKind


@dataclass(frozen=True, slots=True)
class Counter:
    """Who settles: the card holder, tapped at a terminal of a designated facility."""

    citizen: str
    facility: str
    terminal: str
    card: str | None


@dataclass(frozen=True, slots=True)
class Settlement:
    """A booked claim and its split; ``replayed``: the bill had been settled before."""

    claim: ClaimRow
    adjudication: Adjudication
    replayed: bool = False


class ClaimConflict(Problem):
    """409: the bill id is taken by another bill, or the claim cannot change that way."""

    def __init__(self, detail: str) -> None:
        super().__init__(409, detail, code=Reason.BILL_CONFLICT.value)


class ClaimNotFound(Problem):
    def __init__(self) -> None:
        super().__init__(
            404,
            "no such claim at this facility for this card holder",
            code=Reason.CLAIM_NOT_FOUND.value,
        )


@dataclass(frozen=True, slots=True)
class _Prepared:
    bill: Bill
    scheme: str
    rules: reference.Rules
    level: int
    catalogue: dict[str, CatalogueItem]
    assistance: str | None


async def _prepare(session: AsyncSession, bill: Bill, cache: ReferenceCache | None) -> _Prepared:
    """Everything but the citizen's own balances, read before any lock (it changes rarely)."""
    source = cache or ReferenceCache(ttl=0)
    provider = await source.provider(session, bill.facility)
    if provider.kind == "pharmacy" and bill.visit_type is not VisitType.OUTPATIENT:
        raise BillRefused(
            Reason.VISIT_NOT_OFFERED, "a pharmacy settles outpatient (dispensing) bills only"
        )
    enrolment = await reference.medical_enrolment(session, bill.citizen, bill.service_date)
    rules = await source.rules_for(session, enrolment.scheme, bill.service_date)
    catalogue = await source.catalogue_for(
        session, (line.code for line in bill.lines), bill.service_date
    )
    check_bill(bill, catalogue)
    return _Prepared(
        bill=bill,
        scheme=enrolment.scheme,
        rules=rules,
        level=provider.level,
        catalogue=catalogue,
        assistance=enrolment.assistance,
    )


def _adjudicate(p: _Prepared, before: YearToDate, account_fen: int) -> Adjudication:
    return adjudicate(
        p.bill,
        rules=p.rules.rules,
        catalogue=p.catalogue,
        hospital_level=p.level,
        before=before,
        personal_account_fen=account_fen,
        assistance=p.assistance,
    )


async def presettle(
    session: AsyncSession, bill: Bill, cache: ReferenceCache | None = None
) -> Adjudication:
    """The split the bill would get now; nothing is booked or locked."""
    prepared = await _prepare(session, bill, cache)
    connection = await session.connection()
    row = (
        await connection.execute(
            _BALANCES,
            {
                "citizen": bill.citizen,
                "scheme": prepared.scheme,
                "year": bill.service_date.year,
                "kind": AccountKind.MEDICAL.value,
            },
        )
    ).one()
    *used, balance = row
    before = YearToDate(
        **{name: value or 0 for name, value in zip(_YEAR_FIELDS, used, strict=True)}
    )
    return _adjudicate(prepared, before, balance or 0)


_YEAR_FIELDS = tuple(f.name for f in fields(YearToDate))
_YEARS = YearTotalRow.__table__  # type: ignore[attr-defined]
_ACCOUNTS = AccountRow.__table__  # type: ignore[attr-defined]
# What a pre-settlement reads of the citizen, in one round trip and without the ORM (two
# Session.get calls cost more CPU than the rest of it): the year's accumulators and the
# personal account's balance, NULL where there is no row yet (nothing used, no account).
_BALANCES = select(  # type: ignore[call-overload]
    *(_YEARS.c[name] for name in _YEAR_FIELDS), _ACCOUNTS.c.balance_fen
).select_from(
    select(literal(1).label("one"))
    .subquery()
    .outerjoin(
        _YEARS,
        and_(
            _YEARS.c.citizen == bindparam("citizen"),
            _YEARS.c.scheme == bindparam("scheme"),
            _YEARS.c.year == bindparam("year"),
        ),
    )
    .outerjoin(
        _ACCOUNTS,
        and_(_ACCOUNTS.c.citizen == bindparam("citizen"), _ACCOUNTS.c.kind == bindparam("kind")),
    )
)


async def settle(
    session: AsyncSession, bill: Bill, counter: Counter, cache: ReferenceCache | None = None
) -> Settlement:
    """Book the bill (once): the claim, the accumulators and the personal-account debit, in the
    caller's transaction (the request's unit of work commits it). ``cache``: the app's memory
    of reference data (:mod:`social_security.claims.reference_cache`)."""
    prepared = await _prepare(session, bill, cache)
    totals = await _lock_year(session, bill.citizen, prepared.scheme, bill.service_date.year)
    digest = bill_digest(bill)
    existing = await _claim_of_bill(session, bill.facility, bill.bill_id)
    if existing is not None:
        return _replay(existing, digest)
    account = await _lock_account(session, bill.citizen)
    before = year_to_date(totals)
    adjudication = _adjudicate(prepared, before, account.balance_fen if account else 0)
    now = datetime.now(UTC)
    claim = ClaimRow(
        id="clm-" + uuid.uuid4().hex,
        facility=bill.facility,
        bill_id=bill.bill_id,
        bill_digest=digest,
        citizen=bill.citizen,
        scheme=prepared.scheme,
        year=bill.service_date.year,
        service_date=bill.service_date,
        status="settled",
        total_fen=adjudication.total_fen,
        in_scope_fen=adjudication.in_scope_fen,
        deductible_fen=adjudication.deductible_fen,
        pooled_fen=adjudication.pooled_fen,
        critical_fen=adjudication.critical_fen,
        assistance_fen=adjudication.assistance_fen,
        personal_account_fen=adjudication.personal_account_fen,
        cash_fen=adjudication.cash_fen,
        adjudication=adjudication_to_json(adjudication, before=before),
        bill=bill_to_json(bill),
        terminal=counter.terminal,
        card=counter.card,
        settled_at=now,
    )
    session.add(claim)
    _apply(totals, adjudication.after)
    if adjudication.personal_account_fen:
        if account is None:  # adjudicated against a balance of 0: nothing to pay from
            raise RuntimeError("a personal-account payment without an account")
        await ledger.debit_locked(
            session,
            account,
            amount_fen=adjudication.personal_account_fen,
            reason="settlement",
            reference=f"claim:{claim.id}",
            at=now,
        )
    await session.flush()
    return Settlement(claim=claim, adjudication=adjudication)


async def reverse(session: AsyncSession, claim_id: str, counter: Counter) -> Settlement:
    """Undo a settled claim (冲正): give back to the accumulators exactly what it took, and
    to the personal account what it paid. Reversing a reversed claim changes nothing."""
    claim = await _own_claim(session, claim_id, counter)
    totals = await _lock_year(session, claim.citizen, claim.scheme, claim.year)
    await session.refresh(claim, with_for_update=True)
    adjudication, before = adjudication_from_json(claim.adjudication)
    if claim.status == "reversed":
        return Settlement(claim=claim, adjudication=adjudication, replayed=True)
    now = datetime.now(UTC)
    current = year_to_date(totals)
    _apply(totals, _minus(current, _delta(adjudication.after, before)))
    if claim.personal_account_fen:
        await ledger.credit(
            session,
            citizen=claim.citizen,
            kind=AccountKind.MEDICAL,
            amount_fen=claim.personal_account_fen,
            reason="reversal",
            reference=f"reversal:{claim.id}",
            at=now,
        )
    claim.status = "reversed"
    claim.reversed_at = now
    session.add(claim)
    await session.flush()
    return Settlement(claim=claim, adjudication=adjudication)


async def refund(
    session: AsyncSession, claim_id: str, sequences: frozenset[int], counter: Counter
) -> Settlement:
    """Refund some lines of a settled claim (退费): reverse it and settle the lines kept as a
    new claim that names the one it replaces, in one transaction. With no line kept this is
    a reversal (the reversed claim is returned)."""
    claim = await _own_claim(session, claim_id, counter)
    if claim.status != "settled":
        raise ClaimConflict("only a settled claim can be refunded; this one is reversed")
    original = bill_from_json(claim.bill)
    known = {line.sequence for line in original.lines}
    unknown = sorted(sequences - known)
    if not sequences or unknown:
        raise ClaimConflict(
            f"the lines to refund must be lines of the claim (unknown: {unknown or 'none given'})"
        )
    reversed_claim = await reverse(session, claim_id, counter)
    kept = tuple(line for line in original.lines if line.sequence not in sequences)
    if not kept:
        return reversed_claim
    suffix = "-".join(str(s) for s in sorted(sequences))
    remaining = replace(original, bill_id=f"{original.bill_id}/refund-{suffix}"[:64], lines=kept)
    settled = await settle(session, remaining, counter)
    settled.claim.replaces = claim.id
    session.add(settled.claim)
    await session.flush()
    return settled


# -- locks and accumulators ----------------------------------------------------------------


async def _lock_year(session: AsyncSession, citizen: str, scheme: str, year: int) -> YearTotalRow:
    """The citizen's accumulators for the scheme and year, created if new, locked till commit.

    One statement: ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``. On PostgreSQL the
    conflict's no-op update locks the existing row as ``SELECT ... FOR UPDATE`` would, and a
    concurrent settlement's upsert of the same row waits for this transaction; on SQLite the
    statement is the transaction's first write, which takes the database's write lock."""
    upsert = _year_upsert(session.get_bind().dialect.name)
    # An ORM upsert: the row comes back as the session's YearTotalRow, refreshed (the
    # accumulators as just locked, not a copy this session loaded earlier).
    result = await session.exec(
        upsert,
        params={"citizen": citizen, "scheme": scheme, "year": year},
        execution_options={"populate_existing": True},
    )
    row: YearTotalRow = result.scalars().one()
    return row


@cache
def _year_upsert(dialect: str) -> Any:
    """The year-totals upsert for one dialect, built once (building the ORM statement cost more
    CPU than running it); the citizen, scheme and year are bound at execution."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    zeros = {f.name: 0 for f in fields(YearToDate)}
    table = YearTotalRow.__table__  # type: ignore[attr-defined]
    return (
        insert(YearTotalRow)
        .values(
            citizen=bindparam("citizen"),
            scheme=bindparam("scheme"),
            year=bindparam("year"),
            **zeros,
        )
        .on_conflict_do_update(
            index_elements=["citizen", "scheme", "year"],
            # A no-op on a non-key column: enough to lock the row, and the key's lock level
            # stays FOR NO KEY UPDATE.
            set_={"deductible_used_fen": table.c.deductible_used_fen},
        )
        .returning(YearTotalRow)
    )


# Built once, as the upsert above: the citizen is bound at execution.
_MEDICAL_ACCOUNT_FOR_UPDATE = (
    select(AccountRow)
    .where(AccountRow.citizen == bindparam("citizen"))
    .where(AccountRow.kind == AccountKind.MEDICAL.value)
    .with_for_update()
)


async def _lock_account(session: AsyncSession, citizen: str) -> AccountRow | None:
    result = await session.exec(
        _MEDICAL_ACCOUNT_FOR_UPDATE,
        params={"citizen": citizen},
        execution_options={"populate_existing": True},
    )
    return result.first()


def year_to_date(row: YearTotalRow | None) -> YearToDate:
    if row is None:
        return YearToDate()
    return YearToDate(**{f.name: getattr(row, f.name) for f in fields(YearToDate)})


def _apply(row: YearTotalRow, state: YearToDate) -> None:
    for f in fields(YearToDate):
        setattr(row, f.name, getattr(state, f.name))


def _delta(after: YearToDate, before: YearToDate) -> YearToDate:
    return YearToDate(
        **{f.name: getattr(after, f.name) - getattr(before, f.name) for f in fields(YearToDate)}
    )


def _minus(current: YearToDate, delta: YearToDate) -> YearToDate:
    return YearToDate(
        **{
            f.name: max(0, getattr(current, f.name) - getattr(delta, f.name))
            for f in fields(YearToDate)
        }
    )


# -- claims ---------------------------------------------------------------------------------


_CLAIM_OF_BILL = (
    select(ClaimRow)
    .where(ClaimRow.facility == bindparam("facility"))
    .where(ClaimRow.bill_id == bindparam("bill_id"))
)


async def _claim_of_bill(session: AsyncSession, facility: str, bill_id: str) -> ClaimRow | None:
    result = await session.exec(
        _CLAIM_OF_BILL,
        params={"facility": facility, "bill_id": bill_id},
        execution_options={"populate_existing": True},
    )
    return result.first()


def _replay(claim: ClaimRow, digest: str) -> Settlement:
    if claim.bill_digest != digest:
        raise ClaimConflict(
            f"bill {claim.bill_id} was settled with other content; a changed bill needs a new "
            "bill id (or a refund of the settled one)"
        )
    if claim.status != "settled":
        raise ClaimConflict(f"bill {claim.bill_id} was settled and then reversed")
    adjudication, _ = adjudication_from_json(claim.adjudication)
    return Settlement(claim=claim, adjudication=adjudication, replayed=True)


async def _own_claim(session: AsyncSession, claim_id: str, counter: Counter) -> ClaimRow:
    """The claim, if the counter's facility booked it for this card holder."""
    claim = await session.get(ClaimRow, claim_id)
    if claim is None or claim.facility != counter.facility or claim.citizen != counter.citizen:
        raise ClaimNotFound()
    return claim


async def claims_of(session: AsyncSession, claim_id: str, counter: Counter) -> Settlement:
    """A claim the counter may see again (its own facility's, for this card holder)."""
    claim = await _own_claim(session, claim_id, counter)
    adjudication, _ = adjudication_from_json(claim.adjudication)
    return Settlement(claim=claim, adjudication=adjudication, replayed=True)
