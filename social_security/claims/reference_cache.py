"""A short-lived, per-app memory of the reference data settlements read on every bill.

A provider's level, the rules in effect for a scheme on a date and the catalogue's entries
change a few times a year, yet each settlement read them (four queries and a rules document
parsed) before booking. They are kept here for ``ttl`` seconds: a rules version published for
a date already begun, or a provider re-graded, is used by every settlement within that time.
Nothing citizen-specific is kept (enrolments, year totals and accounts are always read in the
settlement's own transaction), and only plain values, never ORM rows (a row outlives neither
its session nor a rollback). One cache per app, never per module: apps with different
databases share a process in the tests.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import date
from typing import Any, TypeVar

from fastapi import Request
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.claims import reference
from social_security.claims.catalogue import CatalogueItem

T = TypeVar("T")
TTL_SECONDS = 30.0
MAX_ENTRIES = 10_000


class ReferenceCache:
    def __init__(self, ttl: float = TTL_SECONDS) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[Any, ...], tuple[float, Any]] = {}

    async def _get(self, key: tuple[Any, ...], load: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        held = self._entries.get(key)
        if held is not None and held[0] > now:
            value: T = held[1]
            return value
        value = await load()  # a refusal (BillRefused) is not kept: it is raised each time
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (now + self.ttl, value)
        return value

    async def provider(self, session: AsyncSession, facility: str) -> reference.Provider:
        return await self._get(
            ("provider", facility), lambda: reference.provider(session, facility)
        )

    async def rules_for(self, session: AsyncSession, scheme: str, on: date) -> reference.Rules:
        return await self._get(
            ("rules", scheme, on), lambda: reference.rules_for(session, scheme, on)
        )

    async def catalogue_for(
        self, session: AsyncSession, codes: Iterable[str], on: date
    ) -> dict[str, CatalogueItem]:
        wanted = sorted(set(codes))
        missing = [c for c in wanted if not self._fresh(("item", c, on))]
        if missing:
            found = await reference.catalogue_for(session, missing, on)
            expires = time.monotonic() + self.ttl
            for code in missing:  # an unknown code is remembered as unknown, for ttl too
                self._entries[("item", code, on)] = (expires, found.get(code))
        items = {c: self._entries[("item", c, on)][1] for c in wanted}
        return {c: item for c, item in items.items() if item is not None}

    def _fresh(self, key: tuple[Any, ...]) -> bool:
        held = self._entries.get(key)
        return held is not None and held[0] > time.monotonic()


def reference_cache(request: Request) -> ReferenceCache:
    """The app's cache, made on first use."""
    cache: ReferenceCache | None = getattr(request.app.state, "reference_cache", None)
    if cache is None:
        cache = request.app.state.reference_cache = ReferenceCache()
    return cache
