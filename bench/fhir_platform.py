"""The whole platform as ``onecard up`` starts it, for the FHIR store's benchmarks (issue 5).

Every service is started by the real launcher (:class:`services.launcher.Launcher`), each its
own process: gateway, identity, health, social security and the audit ledger. On PostgreSQL and
the machine's Redis when both answer (databases ``onecard_bench_<hex>_<service>`` of this run's
own, dropped afterwards; a Redis key prefix of its own), else on the embedded default (SQLite
files and an embedded Redis under a temporary var dir). A hospital's backend client is
registered as the demo does it (``identity.clients.bootstrap.add_client``) and gets its token
with ``client_credentials`` (SMART Backend Services), through the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
from redis.exceptions import RedisError
from sqlalchemy import func, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import select

from bench import BenchmarkError
from identity.clients.bootstrap import add_client
from identity.clients.models import ClientKind
from identity.settings import IdentitySettings
from services.audit.models import AuditEntry
from services.audit.settings import AuditSettings
from services.kit import topology
from services.kit.credentials import ClientCredentials
from services.kit.database import Database
from services.kit.settings import database_per_service
from services.launcher import Launcher, LaunchError
from tests.harness import free_port_block

POSTGRES_URL = os.environ.get(
    "ONECARD_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ONECARD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
HOSPITAL_SCOPE = "system/*.cruds"
# Far above what 8 connections offer: the gateway's limits are checked on every request but
# never refuse one (a 429 would be counted as an error).
UNTHROTTLED = "1000000"
RATE_LIMITS = (
    "ONECARD_RATE_LIMIT_PER_SECOND",
    "ONECARD_RATE_LIMIT_BURST",
    "ONECARD_RATE_LIMIT_PER_ADDRESS_PER_SECOND",
    "ONECARD_RATE_LIMIT_PER_ADDRESS_BURST",
)
# The ledger's access-log line for each answered submission (services.kit.middleware).
SUBMISSION = b'"POST /audit/entries 20'


@dataclass(frozen=True)
class Ledger:
    """The audit ledger's counters at one moment; subtract two to get a measurement's."""

    submissions: int
    entries: int

    def __sub__(self, other: Ledger) -> Ledger:
        return Ledger(self.submissions - other.submissions, self.entries - other.entries)

    def per_submission(self) -> str:
        return f"{self.entries / self.submissions:.1f}" if self.submissions else "-"


@dataclass
class Platform:
    launcher: Launcher
    # Where the data lives, said in the report: "PostgreSQL + Redis at ..." or the default.
    where: str
    # The hospital's backend client (its private key and tokens are never printed).
    hospital: ClientCredentials
    # Database names to drop afterwards (none on the embedded default).
    postgres_databases: list[str]
    # The health service's own database (sync URL form: ``postgresql://`` or ``sqlite://``).
    health_database_url: str

    def hospital_token(self) -> str:
        """A fresh ``client_credentials`` token (each phase gets its own: they are short-lived)."""
        return asyncio.run(_fetch_token(self.hospital, self.gateway))

    @property
    def gateway(self) -> str:
        return self.launcher.children["gateway"].url

    @property
    def gateway_port(self) -> int:
        return self.launcher.children["gateway"].port

    def ledger_submissions(self) -> int:
        """Submissions the ledger answered so far, from its access log."""
        try:
            return self.launcher.log_path("audit").read_bytes().count(SUBMISSION)
        except OSError:
            return 0

    def ledger(self) -> Ledger:
        """What the ledger holds and was sent so far (read in this process's settings, which
        are the platform's while it runs)."""
        return Ledger(self.ledger_submissions(), asyncio.run(_ledger_entries()))

    def casualties(self) -> str:
        """Which services died, with the end of their logs, to say why a run failed."""
        lines = []
        for name, child in self.launcher.children.items():
            if child.process is not None and child.process.poll() is not None:
                lines.append(
                    f"\n{name} exited with code {child.process.returncode}; its log ends with:\n"
                    f"{self.launcher.tail(name, 10)}"
                )
        return "".join(lines)


def servers_answer() -> bool:
    """PostgreSQL and Redis both answer (then the platform runs on them)."""
    parsed = make_url(POSTGRES_URL)
    try:
        socket.create_connection(
            (parsed.host or "127.0.0.1", parsed.port or 5432), timeout=1
        ).close()
    except OSError:
        return False
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return bool(client.ping())
    except RedisError:
        return False
    finally:
        client.close()


async def drop_databases(names: list[str]) -> None:
    engine = create_async_engine(
        make_url(POSTGRES_URL).set(drivername="postgresql+asyncpg"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            for name in names:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


@contextlib.contextmanager
def platform(
    var_dir: Path,
    *,
    ready_timeout: float = 90.0,
    prepare: Callable[[str], None] | None = None,
    hospital_client_id: str | None = None,
) -> Iterator[Platform]:
    """Every service running, a hospital client and its token; all stopped (and dropped).

    ``prepare`` is called with the health service's database URL before any service starts
    (e.g. to put a ready-made store there); the health service then only migrates it.
    ``hospital_client_id``: the hospital client's id, when such a store names it as author.
    """
    environment = dict.fromkeys(RATE_LIMITS, UNTHROTTLED)
    environment["ONECARD_REDIS_PREFIX"] = f"onecard-bench-{secrets.token_hex(4)}:"
    database_url = redis_url = None
    databases: list[str] = []
    if servers_answer():
        base = f"onecard_bench_{secrets.token_hex(4)}"
        database_url = (
            make_url(POSTGRES_URL).set(database=base).render_as_string(hide_password=False)
        )
        redis_url = REDIS_URL
        databases = [f"{base}_{s.name}" for s in topology.SERVICES if s.has_database]
        where = (
            f"PostgreSQL at {make_url(POSTGRES_URL).host} (databases {base}_*, dropped "
            f"afterwards) + Redis at {make_url(REDIS_URL).host}"
        )
    else:
        where = "the embedded default (SQLite + embedded Redis): PostgreSQL or Redis not reachable"
    launcher = Launcher(
        port=free_port_block(len(topology.ALL)),
        var_dir=var_dir,
        database_url=database_url,
        redis_url=redis_url,
        restart=False,  # a crash during a benchmark is an error to report, not to hide
        environment=environment,
    )
    health_url = (
        database_per_service(database_url, "health")
        if database_url
        else f"sqlite:///{var_dir.resolve() / 'data' / 'health.db'}"
    )
    # Settings read in this process (the identity database for add_client) must be the
    # platform's; restored afterwards.
    saved = dict(os.environ)
    try:
        if prepare is not None:
            prepare(health_url)
        try:
            launcher.start(ready_timeout=ready_timeout)
        except LaunchError as exc:
            raise BenchmarkError(f"could not start the platform: {exc}") from None
        os.environ.update(launcher.environment())
        hospital = asyncio.run(_hospital(launcher.children["gateway"].url, hospital_client_id))
        yield Platform(launcher, where, hospital, databases, health_url)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        launcher.stop()
        if databases:
            asyncio.run(drop_databases(databases))


async def _ledger_entries() -> int:
    db = Database.for_settings(AuditSettings())
    try:
        async with db.sessionmaker() as session:
            count = await session.scalar(select(func.count()).select_from(AuditEntry))
    finally:
        await db.dispose()
    return int(count or 0)


async def _hospital(base_url: str, client_id: str | None = None) -> ClientCredentials:
    db = Database.for_settings(IdentitySettings())
    try:
        return await add_client(
            db,
            name="Bench Hospital",
            kind=ClientKind.HOSPITAL,
            scopes=[HOSPITAL_SCOPE],
            base_url=base_url,
            client_id=client_id,
        )
    finally:
        await db.dispose()


async def _fetch_token(hospital: ClientCredentials, base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=30, trust_env=False) as http:
        try:
            return await hospital.fetch_token(http, HOSPITAL_SCOPE)
        except RuntimeError as exc:
            raise BenchmarkError(f"the hospital client got no token: {exc}") from None
