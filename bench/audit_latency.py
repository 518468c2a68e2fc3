"""What write-ahead auditing adds to a level-3 request: p50 latency and throughput (issue 4).

One service process (:mod:`bench.audited_app`) serves the same level-3 read through two twin
routes: one records the access in the ledger with ``audit_access(..., level=3)`` and answers
only once the entry is durable (DESIGN.md "Audit and graded protection": fail closed); the
other does the same work without auditing. Both verify a real ES256 citizen token (card + PIN,
``acr`` 2) against a JWKS this process serves, check revocation in Redis and enforce the
graded-protection table, so the two differ by exactly the audit: building the entry, one
submission to the ledger shared with whatever else is queued, the ledger's group commit, the
receipt.

Method, and why:
- The ledger is the platform's own (``onecard serve audit``: uvicorn
  ``services.audit.app:create_app``), a process of its own, on the real PostgreSQL when it
  answers (``ONECARD_BENCH_POSTGRES_URL``; a schema of its own, dropped afterwards), else on
  SQLite; the report says which. Its client authenticates with an ``audit.append`` token.
- Concurrency 1 gives the latency a lone user sees (p50 and p99; the added p50 is the
  difference of the p50s, and their ratio). Concurrency 16 shows group commit at work: entries
  of concurrent requests share submissions and commits, so audited throughput stays near the
  unaudited one instead of falling to 16 / commit time.
- Each concurrency is warmed up, then measured in interleaved rounds in ABBA order, so drift of
  a shared machine hits both routes alike. The closed-loop load generator of the gateway
  benchmark (:mod:`bench.loadgen`) sends the bearer token in pre-built request bytes.
- Every non-200 is an error and no figures are reported then; afterwards the ledger must hold
  exactly one entry per audited 200, so an unaudited answer cannot pass unnoticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis
from cryptography.hazmat.primitives.asymmetric import ec
from redis.exceptions import RedisError
from rich.console import Console, JustifyMethod
from rich.table import Table
from sqlalchemy import func, text
from sqlalchemy.engine import make_url
from sqlmodel import select
from starlette.types import Receive, Scope, Send

from bench import BenchmarkError
from bench.audited_app import READ_SCOPE, TOKEN_AUDIENCE
from bench.loadgen import ConnectionPool, RoundResult, Target, percentile, run_fast
from bench.machine import MachineTimes, cpu_seconds, machine_times, usable_cpus
from services.audit.models import AuditEntry
from services.audit.settings import AuditSettings
from services.kit.database import Database
from services.kit.process import die_with_parent
from services.kit.redis import EmbeddedRedis
from services.kit.tokens import public_jwk, sign_access_token
from tests.harness import free_port, server_thread

CONCURRENCIES = (1, 16)
ROUNDS = 8  # per concurrency, ABBA
# Per route and round: 8 x 40 and 8 x 250 requests per route keep the whole run, start-up
# included, under a minute on a busy two-core machine (an audited request at concurrency 1
# waits for a durable commit, a few to a few tens of ms there).
ROUND_REQUESTS = {1: 40, 16: 250}
WARMUP_ROUNDS = 1
RECORD_PATH = "Observation/obs-7"
AUDITED = "audited"
UNAUDITED = "unaudited"

ISSUER = "http://onecard.bench"
KID = "bench-audit-latency"
CITIZEN = "cz_bench0000000000000000000001"
JWKS_PATH = "/jwks.json"
POSTGRES_URL = os.environ.get(
    "ONECARD_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ONECARD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
START_TIMEOUT = 30.0
# The ledger's access log line for each submission (services.kit.middleware).
SUBMISSION = b'"POST /audit/entries 20'
ACCESS_LOGGER = '"logger":"onecard.access"'


# --- The figures ----------------------------------------------------------------------------


@dataclass
class RouteFigures:
    """Everything measured on one route at one concurrency, summed over its rounds."""

    route: str
    concurrency: int
    requests: int = 0
    elapsed_s: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)
    # CPU seconds spent by each process while this route's rounds ran.
    cpu_s: Counter[str] = field(default_factory=Counter)
    # Submissions the ledger answered while this route's rounds ran.
    submissions: int = 0

    def add(self, result: RoundResult, cpu: dict[str, float], submissions: int) -> None:
        self.requests += result.requests
        self.elapsed_s += result.elapsed_s
        self.latencies_ns.extend(result.latencies_ns)
        self.cpu_s.update(cpu)
        self.submissions += submissions

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0

    def latency_ms(self, pct: float) -> float:
        return percentile(sorted(self.latencies_ns), pct) / 1e6

    def cpu_us_per_request(self, process: str) -> float:
        return self.cpu_s[process] / self.requests * 1e6 if self.requests else 0.0


@dataclass
class Measured:
    figures: dict[tuple[int, str], RouteFigures]
    audited_ok: int  # audited requests answered 200, warm-up and checks included
    ledger_entries: int
    other_cores: float | None
    steal_cores: float | None


# --- The processes --------------------------------------------------------------------------


class _Jwks:
    """Publishes the bench's verification key at ``/jwks.json`` (RFC 7517), as identity does
    at ``/.well-known/jwks.json``."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.body = orjson.dumps(jwks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        found = scope["path"] == JWKS_PATH
        body = self.body if found else b"{}"
        await send(
            {
                "type": "http.response.start",
                "status": 200 if found else 404,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


@dataclass
class _Child:
    """One server process of the benchmark, logging to its own file."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchmarkError(f"{self.name} was not started")
        return self.process.pid

    def spawn(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=Path(__file__).resolve().parent.parent,  # the repository: bench importable
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - sets a kernel flag only
            )

    def wait_ready(self, deadline: float) -> None:
        """Until ``/readyz`` answers 200 (its database and Redis answer), or fail saying why."""
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    break
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + "/readyz").status_code == 200:
                        return
                time.sleep(0.1)
        raise BenchmarkError(f"{self.name} did not start; its log ends with:\n{self.tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def died(self) -> str:
        """Empty while running; else how it ended, with the end of its log."""
        if self.process is None or self.process.poll() is None:
            return ""
        return f"\n{self.name} exited with code {self.process.returncode}:\n{self.tail(10)}"

    def tail(self, lines: int = 20) -> str:
        """The last lines of its log but the access lines, which say nothing of a failure."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        kept = [line for line in text.splitlines() if ACCESS_LOGGER not in line]
        return "\n".join(kept[-lines:]) or "(nothing but access lines)"


class _SubmissionCounter:
    """Counts the ledger's answered submissions from its access log, reading only what is new."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = 0
        self.partial = b""

    def new(self) -> int:
        with self.log.open("rb") as f:
            f.seek(self.offset)
            chunk = self.partial + f.read()
        self.offset += len(chunk) - len(self.partial)
        complete, _, self.partial = chunk.rpartition(b"\n")
        return complete.count(SUBMISSION)


@dataclass
class _Platform:
    ledger: _Child
    service: _Child
    ledger_settings: AuditSettings
    database: str
    redis: str
    citizen_token: str
    pids: dict[str, int]


def _answers(url: str, default_port: int) -> bool:
    parsed = make_url(url)
    try:
        socket.create_connection(
            (parsed.host or "127.0.0.1", parsed.port or default_port), timeout=1
        ).close()
    except OSError:
        return False
    return True


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return bool(client.ping())
    except RedisError:
        return False
    finally:
        client.close()


def _token(key: ec.EllipticCurvePrivateKey, **claims: Any) -> str:
    """An RFC 9068 access token as the identity service signs them (at most 300 s)."""
    now = int(time.time())
    base = {"iss": ISSUER, "exp": now + 300, "iat": now, "jti": secrets.token_urlsafe(16)}
    return sign_access_token({**base, **claims}, private_key=key, kid=KID)


def _ledger_settings(var_dir: Path) -> tuple[AuditSettings, str]:
    common: dict[str, Any] = {"var_dir": var_dir, "environment": "test", "public_url": ISSUER}
    if _answers(POSTGRES_URL, 5432):
        settings = AuditSettings(
            database_url=POSTGRES_URL.rsplit("/", 1)[0] + "/onecard_bench",
            database_schema=f"bench_{secrets.token_hex(6)}",
            **common,
        )
        return settings, "PostgreSQL (fsync on, one commit per batch)"
    # Explicitly none: a developer's ONECARD_DATABASE_URL must not be benchmarked as SQLite.
    settings = AuditSettings(database_url=None, database_schema=None, **common)
    return settings, "SQLite (PostgreSQL not reachable)"


@contextlib.contextmanager
def _platform(tmp: Path) -> Iterator[_Platform]:
    """JWKS, Redis, the ledger and the audited service, running; all stopped afterwards."""
    var_dir = tmp / "var"
    var_dir.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    ledger_settings, database = _ledger_settings(var_dir)
    with contextlib.ExitStack() as stack:
        jwks = stack.enter_context(
            server_thread(_Jwks({"keys": [public_jwk(key.public_key(), KID)]}))
        )
        pids = {"client": os.getpid()}
        if _redis_answers(REDIS_URL):
            redis_url, where_redis = REDIS_URL, f"Redis at {make_url(REDIS_URL).host}"
        else:
            embedded = EmbeddedRedis(var_dir)
            stack.callback(embedded.shutdown)
            redis_url, where_redis = embedded.url, "embedded Redis (no Redis server answers)"
            if embedded.process is not None:
                pids["redis"] = embedded.process.pid
        # A developer's ONECARD_* variables must not leak into the children: set all they use.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONECARD_")}
        env.update(
            ONECARD_ENVIRONMENT="test",
            ONECARD_VAR_DIR=str(var_dir),
            ONECARD_PUBLIC_URL=ISSUER,
            ONECARD_JWKS_URL=jwks.url + JWKS_PATH,
            ONECARD_REDIS_URL=redis_url,
            ONECARD_REDIS_PREFIX=f"onecard-bench-{secrets.token_hex(4)}:",
        )
        ledger_env = {
            **env,
            "ONECARD_DATABASE_URL_AUDIT": ledger_settings.resolved_database_url(),
        }
        if ledger_settings.database_schema:
            ledger_env["ONECARD_DATABASE_SCHEMA"] = ledger_settings.database_schema
        ledger_port = free_port()
        ledger = _Child(
            "ledger",
            [sys.executable, "-m", "services.cli", "serve", "audit", "--port", str(ledger_port)],
            ledger_env,
            ledger_port,
            tmp / "ledger.log",
        )
        if ledger_settings.database_schema:
            stack.callback(_drop_schema, ledger_settings)
        stack.callback(ledger.stop)
        ledger.spawn()

        # The service's credential for the ledger, as its platform credentials would get it.
        token_file = tmp / "audit-token"
        token_file.touch(mode=0o600)
        token_file.write_text(
            _token(
                key,
                sub="svc_bench",
                client_id="svc_bench",
                aud=[ISSUER + "/audit"],
                scope="audit.append",
                acr="3",
            )
        )
        service_port = free_port()
        service = _Child(
            "service",
            [sys.executable, "-m", "bench.audited_app", "--port", str(service_port)],
            {
                **env,
                "ONECARD_AUDIT_URL": ledger.url,
                "ONECARD_BENCH_AUDIT_TOKEN_FILE": str(token_file),
            },
            service_port,
            tmp / "service.log",
        )
        stack.callback(service.stop)  # before the ledger: its audit client flushes first
        # Both start at once (the service needs the ledger only for its first audited read).
        service.spawn()
        deadline = time.monotonic() + START_TIMEOUT
        ledger.wait_ready(deadline)
        service.wait_ready(deadline)
        pids.update(service=service.pid, ledger=ledger.pid)
        # A holder at a registration desk: card + PIN, so level 3 is met (acr 2).
        citizen_token = _token(
            key,
            sub=CITIZEN,
            client_id="term_bench",
            aud=[ISSUER + TOKEN_AUDIENCE],
            scope=READ_SCOPE,
            acr="2",
            amr=["sc", "pin"],
            act={"sub": "term_bench"},
        )
        yield _Platform(
            ledger=ledger,
            service=service,
            ledger_settings=ledger_settings,
            database=database,
            redis=where_redis,
            citizen_token=citizen_token,
            pids=pids,
        )


def _drop_schema(settings: AuditSettings) -> None:
    async def drop() -> None:
        db = Database.for_settings(settings)
        try:
            async with db.engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{db.schema}" CASCADE'))
        finally:
            await db.dispose()

    asyncio.run(drop())


# --- Measuring ------------------------------------------------------------------------------


async def _ledger_entries(db: Database) -> int:
    async with db.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(AuditEntry))
    return int(count or 0)


async def _check_routes(platform: _Platform, targets: dict[str, Target], db: Database) -> None:
    """Both routes give the very same answer, and only the audited one leaves an entry."""
    headers = dict(targets[AUDITED].headers)
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        before = await _ledger_entries(db)
        audited = await client.get(targets[AUDITED].url, headers=headers)
        after_audited = await _ledger_entries(db)
        unaudited = await client.get(targets[UNAUDITED].url, headers=headers)
        after_unaudited = await _ledger_entries(db)
    for name, answer in ((AUDITED, audited), (UNAUDITED, unaudited)):
        if answer.status_code != 200:
            raise BenchmarkError(
                f"the {name} route answered {answer.status_code}: {answer.text[:500]}"
                f"{platform.service.died()}{platform.ledger.died()}"
            )
    if audited.json() != unaudited.json():
        raise BenchmarkError("the audited and unaudited routes answer differently")
    if (after_audited - before, after_unaudited - after_audited) != (1, 0):
        raise BenchmarkError(
            f"expected one ledger entry for the audited read and none for the other, got "
            f"{after_audited - before} and {after_unaudited - after_audited}"
        )


def _stop_on_errors(platform: _Platform, concurrency: int, route: str, result: RoundResult) -> None:
    """Any answer but 200 ends the benchmark at once: figures with errors in them would
    compare a refusal with a read (and a dead ledger would make each request wait out the
    audit timeout)."""
    if result.errors:
        raise BenchmarkError(
            f"the {route} route at concurrency {concurrency} answered other than 200, so no "
            f"figures are reported: {dict(result.errors)}"
            f"{platform.service.died()}{platform.ledger.died()}"
        )


def _cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    snapshot = {}
    for name, pid in pids.items():
        seconds = cpu_seconds(pid)
        if seconds is not None:
            snapshot[name] = seconds
    return snapshot


async def _measure(platform: _Platform, targets: dict[str, Target]) -> Measured:
    figures = {
        (c, route): RouteFigures(route, c) for c in CONCURRENCIES for route in (AUDITED, UNAUDITED)
    }
    submissions = _SubmissionCounter(platform.ledger.log)
    audited_ok = 1  # the check's request
    db = Database.for_settings(platform.ledger_settings)
    try:
        await _check_routes(platform, targets, db)
        machine_before: MachineTimes | None = machine_times()
        ours_before = _cpu_snapshot(platform.pids)
        started = time.perf_counter()
        for concurrency in CONCURRENCIES:
            pools = {route: ConnectionPool(targets[route], concurrency) for route in targets}
            requests = ROUND_REQUESTS[concurrency]
            try:
                for _ in range(WARMUP_ROUNDS):
                    for route, pool in pools.items():
                        warm = await pool.run(requests)
                        _stop_on_errors(platform, concurrency, route, warm)
                        if route == AUDITED:
                            audited_ok += len(warm.latencies_ns)
                for round_number in range(ROUNDS):
                    order = [UNAUDITED, AUDITED] if round_number % 2 == 0 else [AUDITED, UNAUDITED]
                    for route in order:
                        submissions.new()
                        before = _cpu_snapshot(platform.pids)
                        result = await pools[route].run(requests)
                        after = _cpu_snapshot(platform.pids)
                        _stop_on_errors(platform, concurrency, route, result)
                        cpu = {name: after[name] - before[name] for name in after if name in before}
                        figures[concurrency, route].add(result, cpu, submissions.new())
                        if route == AUDITED:
                            audited_ok += len(result.latencies_ns)
            finally:
                for pool in pools.values():
                    pool.close()
        wall = time.perf_counter() - started
        machine_after = machine_times()
        ours = sum(_cpu_snapshot(platform.pids).values()) - sum(ours_before.values())
        entries = await _ledger_entries(db)
    finally:
        await db.dispose()
    other = steal = None
    if machine_before is not None and machine_after is not None:
        # /proc/stat counts in 10 ms ticks: a slightly negative rest is rounding, not load.
        other = max(0.0, (machine_after.busy - machine_before.busy - ours) / wall)
        steal = (machine_after.steal - machine_before.steal) / wall
    return Measured(figures, audited_ok, entries, other, steal)


def run(console: Console) -> None:
    with tempfile.TemporaryDirectory(prefix="onecard-bench-audit-latency-") as tmp:
        started = time.perf_counter()
        with _platform(Path(tmp)) as platform:
            console.print(
                f"ledger and service ready in {time.perf_counter() - started:.1f} s: the ledger "
                f"on {platform.database}, {platform.redis}"
            )
            headers = (("Authorization", f"Bearer {platform.citizen_token}"),)
            targets = {
                route: Target(
                    route,
                    "127.0.0.1",
                    platform.service.port,
                    f"{TOKEN_AUDIENCE}/{route}/{RECORD_PATH}",
                    headers,
                )
                for route in (UNAUDITED, AUDITED)
            }
            try:
                measured = run_fast(lambda: _measure(platform, targets))
            except OSError as exc:  # a server died and its port refuses connections
                why = f"lost a server while measuring: {exc}"
                raise BenchmarkError(
                    why + platform.service.died() + platform.ledger.died()
                ) from None
            database, where_redis = platform.database, platform.redis
    if measured.ledger_entries != measured.audited_ok:
        raise BenchmarkError(
            f"the ledger holds {measured.ledger_entries} entries for {measured.audited_ok} "
            "audited answers: an audited read was served without its entry, or the other "
            "route wrote one"
        )
    _report(console, measured, database=database, redis_where=where_redis)


# --- Reporting ------------------------------------------------------------------------------


def _report(console: Console, measured: Measured, *, database: str, redis_where: str) -> None:
    figures = measured.figures
    on_postgres = database.startswith("PostgreSQL")
    table = Table(
        title=f"GET {TOKEN_AUDIENCE}/<route>/{RECORD_PATH} (level 3, ES256 token, card + PIN), "
        f"{ROUNDS} interleaved rounds per concurrency; ledger on {database}",
        title_justify="left",
    )
    columns: list[tuple[str, JustifyMethod]] = [
        ("concurrency", "right"),
        ("route", "left"),
        ("requests", "right"),
        ("req/s", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("service CPU µs/req", "right"),
        ("ledger CPU µs/req", "right"),
        ("entries/POST", "right"),
    ]
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for (concurrency, route), f in figures.items():
        per_submission = (
            f"{f.requests / f.submissions:.1f}" if route == AUDITED and f.submissions else "-"
        )
        table.add_row(
            str(concurrency),
            route,
            f"{f.requests:,}",
            f"{f.rps:,.0f}",
            f"{f.latency_ms(50):.2f}",
            f"{f.latency_ms(99):.2f}",
            f"{f.cpu_us_per_request('service'):,.0f}",
            f"{f.cpu_us_per_request('ledger'):,.0f}",
            per_submission,
        )
    console.print(table)

    summary = Table(title="What auditing adds (audited vs unaudited)", title_justify="left")
    for column in ("concurrency", "p50", "p99", "throughput"):
        summary.add_column(column, justify="right")
    for concurrency in CONCURRENCIES:
        audited, plain = figures[concurrency, AUDITED], figures[concurrency, UNAUDITED]
        summary.add_row(
            str(concurrency),
            _added(audited.latency_ms(50), plain.latency_ms(50), "p50"),
            _added(audited.latency_ms(99), plain.latency_ms(99), "p99"),
            f"{audited.rps:,.0f} vs {plain.rps:,.0f} req/s ({audited.rps / plain.rps:.2f} x)",
        )
    console.print(summary)

    lone, busy = figures[1, AUDITED], figures[CONCURRENCIES[-1], AUDITED]
    lone_plain = figures[1, UNAUDITED]
    console.print(
        f"[bold]added p50 {lone.latency_ms(50) - lone_plain.latency_ms(50):.2f} ms "
        f"({lone.latency_ms(50) / lone_plain.latency_ms(50):.2f} x)[/bold] for a level-3 "
        "request at concurrency 1 (no target in issue 4)."
    )
    cores = usable_cpus()
    console.print(
        f"- The ledger holds {measured.ledger_entries:,} entries: one per audited 200 (checks "
        "and warm-up included), none from the unaudited route.\n"
        f"- Group commit: at concurrency {busy.concurrency} the audited route served "
        f"{busy.rps / lone.rps:.1f} x the requests per second it served at concurrency 1; "
        f"{busy.requests / busy.submissions if busy.submissions else 0:.1f} entries per "
        "submission to the ledger on average (the service's audit client sends what queued "
        "meanwhile together; the ledger then commits whatever submissions are queued in one "
        "transaction).\n"
        f"- Client, service, ledger ({'and PostgreSQL' if on_postgres else 'SQLite inside'}), "
        f"{redis_where} share the same {cores} CPU core{'s' if cores != 1 else ''}; CPU per "
        "request comes from /proc"
        + (" (PostgreSQL's own CPU is not counted)" if on_postgres else "")
        + ". Tokens are verified with keys from a JWKS this process serves; revocation is "
        "checked in Redis on both routes.\n"
        f"- {WARMUP_ROUNDS} warm-up round per route and concurrency first; measured rounds "
        "alternate in ABBA order. Figures are reported, not asserted."
    )
    if measured.other_cores is not None and measured.steal_cores is not None:
        busy_elsewhere = (
            f"- While measuring, the rest of the machine used {measured.other_cores:.2f} of the "
            f"{cores} cores, hypervisor steal {measured.steal_cores:.2f}"
        )
        if on_postgres:
            # The PostgreSQL server is among those processes, and its share of them cannot be
            # told apart from anybody else's load: no verdict then.
            console.print(
                f"{busy_elsewhere} (the PostgreSQL server's work for the ledger included)."
            )
        else:
            # More than a tenth of the machine busy elsewhere visibly moves the figures.
            disturbed = measured.other_cores + measured.steal_cores > 0.1 * cores
            console.print(
                busy_elsewhere
                + (
                    ": [yellow]the figures are disturbed; rerun on a quiet machine[/yellow]"
                    if disturbed
                    else "."
                )
            )


def _added(audited_ms: float, plain_ms: float, name: str) -> str:
    return f"added {name} {audited_ms - plain_ms:.2f} ms ({audited_ms / plain_ms:.2f} x)"
