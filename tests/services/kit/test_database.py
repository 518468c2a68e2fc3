"""Each service's database: created on first start, one unit of work per request."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from services.kit.database import Database
from services.kit.settings import to_async_url
from tests.conftest import POSTGRES_URL, Backend, _drop_databases


@pytest.mark.servers
@pytest.mark.parametrize("backend", ["servers"], indirect=True)
async def test_concurrent_starts_create_a_postgres_database_once(backend: Backend) -> None:
    name = f"onecard_race_{uuid.uuid4().hex[:12]}"
    url = make_url(to_async_url(POSTGRES_URL)).set(database=name)
    databases = [Database(url.render_as_string(hide_password=False)) for _ in range(4)]
    try:
        await asyncio.gather(*(db.ensure_exists() for db in databases))
        await databases[0].ping()
    finally:
        await asyncio.gather(*(db.dispose() for db in databases))
        await _drop_databases([name])


async def test_the_request_session_commits_on_success_and_rolls_back_on_error(
    backend: Backend, tmp_path: object
) -> None:
    if backend.database_url is None:
        url = f"sqlite+aiosqlite:///{tmp_path}/unit.db"
    else:
        url = to_async_url(backend.database_url.rsplit("/", 1)[0] + "/postgres")
    db = Database(url)
    table = f"t_{uuid.uuid4().hex[:12]}"
    try:
        await db.ensure_exists()
        async with db.engine.begin() as conn:
            await conn.execute(text(f"CREATE TABLE {table} (v INTEGER)"))

        async def request(value: int, *, fail: bool) -> None:
            async with db.unit_of_work() as session:
                await session.exec(text(f"INSERT INTO {table} VALUES ({value})"))  # type: ignore[call-overload]
                if fail:
                    raise RuntimeError("the request failed")

        await request(1, fail=False)
        with pytest.raises(RuntimeError):
            await request(2, fail=True)
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        async with db.engine.connect() as conn:
            rows = (await conn.execute(text(f"SELECT v FROM {table}"))).scalars().all()
        assert rows == [1]
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await db.dispose()


@pytest.mark.servers
@pytest.mark.parametrize("backend", ["servers"], indirect=True)
async def test_a_pooled_connection_the_server_ended_is_replaced_before_use(
    backend: Backend,
) -> None:
    """PostgreSQL restarting (or an administrator ending a backend) while a connection idles
    in the pool: the next request gets a fresh connection, not an error."""
    db, admin = Database(to_async_url(POSTGRES_URL)), Database(to_async_url(POSTGRES_URL))
    try:
        async with db.engine.connect() as conn:
            first = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with admin.engine.connect() as other:
            await other.execute(text(f"SELECT pg_terminate_backend({first})"))
            await other.commit()
        await asyncio.sleep(0.2)  # the FATAL message and the close reach the idle connection
        async with db.unit_of_work() as session:
            result = await session.exec(text("SELECT pg_backend_pid()"))  # type: ignore[call-overload]
            second = result.scalar_one()
        assert second != first
    finally:
        await asyncio.gather(db.dispose(), admin.dispose())


@pytest.mark.servers
@pytest.mark.parametrize("backend", ["servers"], indirect=True)
async def test_a_reader_runs_each_statement_on_its_own_and_leaves_the_pool_as_it_found_it(
    backend: Backend,
) -> None:
    """A read-only request's session sends no BEGIN: each statement is its own transaction
    (PostgreSQL's now() is the transaction's start). The connection goes back to the pool in
    its usual mode, so the next unit of work is one transaction again."""
    db = Database(to_async_url(POSTGRES_URL), pool_size=1)
    statement = text("SELECT now(), pg_backend_pid()")
    try:
        async with db.reader() as session:
            connection = await session.connection()
            first = (await connection.execute(statement)).one()
            await asyncio.sleep(0.01)
            second = (await connection.execute(statement)).one()
        assert second[0] > first[0]
        async with db.unit_of_work() as session:
            connection = await session.connection()
            third = (await connection.execute(statement)).one()
            await asyncio.sleep(0.01)
            fourth = (await connection.execute(statement)).one()
        assert third[1] == first[1]  # the same pooled connection
        assert fourth[0] == third[0]
    finally:
        await db.dispose()
