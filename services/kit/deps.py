"""FastAPI dependencies, so routes read like sentences (``session: SessionDep``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, Response
from sqlmodel.ext.asyncio.session import AsyncSession

from services.kit.app import Runtime, app_runtime
from services.kit.database import Database
from services.kit.redis import RedisConnection


async def get_runtime(request: Request) -> Runtime:
    return app_runtime(request)


def _database(request: Request) -> Database:
    db = app_runtime(request).db
    if db is None:
        raise RuntimeError("this service owns no database")
    return db


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    # A context manager, not a nested generator: the route's exception must reach it so the
    # transaction is rolled back and the connection returned now, not when GC finds it.
    async with _database(request).unit_of_work() as session:
        yield session


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _database(request).reader() as session:
        yield session


async def no_store(response: Response) -> None:
    """For routes that answer with personal data: no cache on the way may keep a copy (RFC 9111
    section 5.2.2.5). A router takes it as ``dependencies=[Depends(no_store)]``."""
    response.headers["Cache-Control"] = "no-store"


async def get_redis(request: Request) -> RedisConnection:
    return app_runtime(request).redis


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
# scope="function": the session commits when the route returns, BEFORE the response is sent,
# so a failed commit becomes an error response instead of following a 201 already on the wire.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
# For routes that only read (Database.reader: no BEGIN and COMMIT around their statements).
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
RedisDep = Annotated[RedisConnection, Depends(get_redis)]
