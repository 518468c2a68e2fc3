"""Column types shared by every service's tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on both backends (SQLite keeps no offset; we store UTC).

    Naive datetimes are refused on the way in: a time without a zone is a bug waiting for a
    server in another zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("a naive datetime has no place in a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


def utc_column(*, nullable: bool = False, index: bool = False, **kwargs: Any) -> Any:
    """``Field(sa_column=utc_column())`` for an aware UTC timestamp column."""
    return Column(UtcDateTime, nullable=nullable, index=index, **kwargs)
