"""The only place that queries the ``citizens`` table."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from identity.citizens.models import Citizen


class DuplicateCitizen(Exception):
    """The row collides with an existing one on a unique column (``column`` names which)."""

    def __init__(self, column: str) -> None:
        super().__init__(f"a citizen with the same {column} exists")
        self.column = column


# Both backends say "unique" and name the column in a unique violation: PostgreSQL through
# the constraint ('violates unique constraint "uq_citizens_national_id_index"'), SQLite as
# "UNIQUE constraint failed: citizens.national_id_index".
_UNIQUE_COLUMNS = ("national_id_index", "pseudonym")


async def add(*, session: AsyncSession, citizen: Citizen) -> Citizen:
    """Insert ``citizen`` and flush, so a unique violation surfaces here, inside the request."""
    session.add(citizen)
    try:
        await session.flush()
    except IntegrityError as exc:
        message = str(exc.orig).lower()
        for column in _UNIQUE_COLUMNS:
            if "unique" in message and column in message:
                # Not chained: the driver's error carries the statement's parameters.
                raise DuplicateCitizen(column) from None
        raise
    return citizen


async def by_pseudonym(*, session: AsyncSession, pseudonym: str) -> Citizen | None:
    """The citizen with this pseudonymous id, if any."""
    result = await session.exec(select(Citizen).where(Citizen.pseudonym == pseudonym))
    return result.first()


async def by_national_id_index(*, session: AsyncSession, index: str) -> Citizen | None:
    """The citizen whose national ID number has this blind index, if any."""
    result = await session.exec(select(Citizen).where(Citizen.national_id_index == index))
    return result.first()
