"""Keeping card status true everywhere: the expiry sweep and rebuilding the Redis statuses.

Redis holds only what may be rebuilt (DESIGN.md); an embedded Redis keeps nothing across a
restart. So the identity service republishes card statuses when it starts, and sweeps
periodically: cards past their notAfter become ``expired`` in the database and in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI

from identity.cards import service
from services.kit.app import Runtime
from services.kit.database import Database
from services.kit.redis import RedisConnection
from services.kit.revocation import Revocations

log = logging.getLogger(__name__)

SWEEP_SECONDS = 60.0
# At start-up, republish every card changed this recently on top of the issued and suspended
# ones: enough to cover any token that may still be live (300 s) with a wide margin.
RESTART_LOOKBACK = timedelta(hours=24)


async def sweep(db: Database, redis: RedisConnection, *, since: datetime) -> tuple[int, int]:
    """Expire overdue cards and republish statuses; (expired, published) counts."""
    outbox = service.StatusOutbox()
    now = datetime.now(UTC)
    async with db.unit_of_work() as session:
        expired = await service.expire_cards(session=session, outbox=outbox, now=now)
        published = await service.republish(session=session, outbox=outbox, since=since)
    await outbox.publish(Revocations(redis))  # after the commit: the database is the truth
    return len(expired), published


async def install_card_upkeep(app: FastAPI) -> None:
    """Start-up hook: republish now, then sweep every minute in the background."""
    runtime: Runtime = app.state.runtime
    db, redis = runtime.db, runtime.redis
    if db is None:
        raise RuntimeError("card upkeep needs the identity database")
    expired, published = await sweep(db, redis, since=datetime.now(UTC) - RESTART_LOOKBACK)
    log.info("card statuses republished", extra={"expired": expired, "published": published})

    async def periodically() -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await sweep(
                    db, redis, since=datetime.now(UTC) - timedelta(seconds=SWEEP_SECONDS * 2)
                )
            except Exception:  # the next sweep retries; a failure must not end the loop
                log.exception("card sweep failed")

    app.state.card_upkeep = asyncio.create_task(periodically())


async def uninstall_card_upkeep(app: FastAPI) -> None:
    task: asyncio.Task[None] | None = getattr(app.state, "card_upkeep", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
