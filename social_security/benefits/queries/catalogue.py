"""The drug and item catalogue as a citizen looks it up."""

from __future__ import annotations

from datetime import date

from sqlalchemy import and_, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.benefits.schemas import CatalogueEntry, CatalogueMatches
from social_security.models import CatalogueItemRow


def _catalogue_entry(row: CatalogueItemRow) -> CatalogueEntry:
    return CatalogueEntry(
        code=row.code,
        name=row.name,
        kind=row.kind,
        catalogue_class=row.catalogue_class,
        price_cap_fen=row.price_cap_fen,
        effective_from=row.effective_from,
    )


async def catalogue_entry(
    *, session: AsyncSession, code: str, today: date
) -> CatalogueEntry | None:
    """The version of catalogue item ``code`` in force today, or None."""
    row = (
        await session.exec(
            select(CatalogueItemRow)
            .where(
                col(CatalogueItemRow.code) == code, col(CatalogueItemRow.effective_from) <= today
            )
            .order_by(col(CatalogueItemRow.effective_from).desc())
            .limit(1)
        )
    ).first()
    return _catalogue_entry(row) if row is not None else None


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching ``text`` literally at the start (escape character ``\\``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


async def catalogue_search(
    *, session: AsyncSession, prefix: str, limit: int, today: date
) -> CatalogueMatches:
    """Items in force today whose name starts with ``prefix``, by name, at most ``limit``."""
    in_force = (
        select(
            col(CatalogueItemRow.code).label("code"),
            func.max(CatalogueItemRow.effective_from).label("effective_from"),
        )
        .where(col(CatalogueItemRow.effective_from) <= today)
        .group_by(col(CatalogueItemRow.code))
        .subquery()
    )
    rows = (
        await session.exec(
            select(CatalogueItemRow)
            .join(
                in_force,
                and_(
                    col(CatalogueItemRow.code) == in_force.c.code,
                    col(CatalogueItemRow.effective_from) == in_force.c.effective_from,
                ),
            )
            .where(col(CatalogueItemRow.name).like(_like_prefix(prefix), escape="\\"))
            .order_by(col(CatalogueItemRow.name), col(CatalogueItemRow.code))
            .limit(limit + 1)  # one more than shown tells whether there are more
        )
    ).all()
    return CatalogueMatches(
        items=[_catalogue_entry(row) for row in rows[:limit]], truncated=len(rows) > limit
    )
