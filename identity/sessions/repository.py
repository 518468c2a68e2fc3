"""The only place that queries app sessions. Flushes, never commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from identity.sessions.models import RotatedRefreshToken
from identity.tokens.models import Session


async def add(session: AsyncSession, row: Session | RotatedRefreshToken) -> None:
    session.add(row)
    await session.flush()


async def get(session: AsyncSession, sid: str) -> Session | None:
    return await session.get(Session, sid)


async def by_refresh_hash(session: AsyncSession, token_hash: str) -> Session | None:
    """The session whose current refresh token has this hash (unique index)."""
    result = await session.exec(
        select(Session).where(col(Session.refresh_token_hash) == token_hash)
    )
    return result.first()


async def rotated(session: AsyncSession, token_hash: str) -> RotatedRefreshToken | None:
    return await session.get(RotatedRefreshToken, token_hash)


async def rotate(
    session: AsyncSession, *, sid: str, old_hash: str, new_hash: str, generation: int
) -> bool:
    """Compare-and-set the current refresh token: False if another request rotated it first
    (or the session ended meanwhile). The UPDATE takes the row lock, so of two concurrent
    refreshes with one token exactly one wins."""
    result = await session.exec(
        update(Session)
        .where(
            col(Session.sid) == sid,
            col(Session.refresh_token_hash) == old_hash,
            col(Session.ended_at).is_(None),
        )
        .values(refresh_token_hash=new_hash, generation=generation)
        .execution_options(synchronize_session=False)
    )
    await session.flush()
    return result.rowcount == 1


async def end(session: AsyncSession, *, sid: str, reason: str, at: datetime) -> bool:
    """End the session if it is still live; False when it had ended already."""
    result = await session.exec(
        update(Session)
        .where(col(Session.sid) == sid, col(Session.ended_at).is_(None))
        .values(ended_at=at, end_reason=reason)
        .execution_options(synchronize_session=False)
    )
    await session.flush()
    return result.rowcount == 1
