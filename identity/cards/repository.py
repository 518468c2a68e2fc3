"""The only place that queries the ``cards`` table. Flushes, never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from identity.cards.models import LIVE, Card, CardKind


class DuplicateCard(Exception):
    """An insert collides with a unique rule; ``rule`` says which ("live" or "key")."""

    def __init__(self, rule: str) -> None:
        super().__init__(f"a card breaking the {rule} rule exists")
        self.rule = rule


async def get(session: AsyncSession, *, serial: str) -> Card | None:
    return await session.get(Card, serial)


async def lock(session: AsyncSession, *, serial: str) -> Card | None:
    """The card, read after taking its write lock, or None.

    The no-op UPDATE comes first, as in the PKI: it takes the row lock on PostgreSQL and the
    database write lock on SQLite (whose SELECT ... FOR UPDATE does nothing), so a transition
    is judged on the status as it is now, not as it was before a concurrent change committed.
    """
    await session.exec(
        update(Card).where(col(Card.serial) == serial).values(status=col(Card.status))
    )
    result = await session.exec(
        select(Card)
        .where(col(Card.serial) == serial)
        .execution_options(populate_existing=True)
        .with_for_update()
    )
    return result.first()


async def live_children(session: AsyncSession, *, parent_serial: str) -> Sequence[Card]:
    """The live e-cards following a physical card, locked (the parent's lock is held)."""
    result = await session.exec(
        select(Card)
        .where(col(Card.parent_serial) == parent_serial, col(Card.status).in_(LIVE))
        .order_by(col(Card.created_at))
        .execution_options(populate_existing=True)
        .with_for_update()
    )
    return result.all()


async def live_card(session: AsyncSession, *, citizen: str, kind: CardKind) -> Card | None:
    """The citizen's live card of this kind; the partial unique index allows one at most."""
    result = await session.exec(
        select(Card).where(
            col(Card.citizen_pseudonym) == citizen,
            col(Card.kind) == kind,
            col(Card.status).in_(LIVE),
        )
    )
    return result.first()


async def of_citizen(session: AsyncSession, *, citizen: str) -> Sequence[Card]:
    """Every card the citizen ever had, newest first."""
    result = await session.exec(
        select(Card)
        .where(col(Card.citizen_pseudonym) == citizen)
        .order_by(col(Card.created_at).desc(), col(Card.serial))
    )
    return result.all()


async def with_key(session: AsyncSession, *, key_id: str) -> Card | None:
    result = await session.exec(select(Card).where(col(Card.key_id) == key_id))
    return result.first()


async def add(session: AsyncSession, card: Card) -> Card:
    """Insert and flush, so a unique violation surfaces here, inside the request."""
    session.add(card)
    try:
        await session.flush()
    except IntegrityError as exc:
        # PostgreSQL names the constraint ('... unique constraint "uq_cards_key_id"'); SQLite
        # names the columns ("UNIQUE constraint failed: cards.key_id", and for the partial
        # index "cards.citizen_pseudonym, cards.kind").
        message = str(exc.orig).lower()
        if "unique" in message or "duplicate" in message:
            if "key_id" in message:
                raise DuplicateCard("key") from None
            if "citizen" in message:
                raise DuplicateCard("live") from None
        raise
    return card


async def save(session: AsyncSession, card: Card) -> None:
    session.add(card)
    await session.flush()


async def due_for_expiry(session: AsyncSession, *, now: datetime, limit: int) -> Sequence[Card]:
    """Live cards past their notAfter, physical cards first (their e-cards follow them)."""
    result = await session.exec(
        select(Card)
        .where(col(Card.status).in_(LIVE), col(Card.not_after) <= now)
        .order_by(col(Card.kind).desc(), col(Card.not_after))
        .limit(limit)
    )
    return result.all()


async def to_publish(session: AsyncSession, *, changed_since: datetime) -> Sequence[Card]:
    """Cards whose status the services' cache must hold: every issued or suspended card, and
    every card whose status changed since ``changed_since`` (it may need clearing)."""
    result = await session.exec(
        select(Card).where(
            or_(
                col(Card.status).in_(("issued", "suspended")),
                col(Card.status_changed_at) >= changed_since,
            )
        )
    )
    return result.all()
