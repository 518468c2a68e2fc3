"""What the lookups share: year boundaries, periods within a year, counting rows.

Year boundaries are China Standard Time (UTC+8, no daylight saving since 1991): a settlement at
00:30 on 1 January Beijing time belongs to the new year although it is still 31 December UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, func, or_
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")


def year_bounds(year: int) -> tuple[datetime, datetime]:
    """[start, end) of ``year`` in China Standard Time, as aware UTC instants."""
    start = datetime(year, 1, 1, tzinfo=CHINA_STANDARD_TIME)
    end = datetime(year + 1, 1, 1, tzinfo=CHINA_STANDARD_TIME)
    return start.astimezone(UTC), end.astimezone(UTC)


def in_year(period: Any, year: int) -> ColumnElement[bool]:
    """Periods are YYYY (residents) or YYYY-MM (employees)."""
    return or_(period == str(year), period.like(f"{year}-%"))


async def count(session: AsyncSession, *where: ColumnElement[bool]) -> int:
    total = (await session.exec(select(func.count()).where(*where))).one()
    return int(total)
