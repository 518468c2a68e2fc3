"""Terminal authentications per second through the gateway (issue 3).

One flow is what a card tap costs the platform: the terminal asks for a challenge, the card
signs it, the terminal posts the answer and receives the holder's token; two requests through
the gateway to the identity service, each carrying the terminal's bearer token (verified by the
gateway and again by identity), a nonce written and consumed in Redis, the card's chain,
status (database and Redis) and signature checked, and a token signed.

Method: gateway, identity and the audit ledger started by the real launcher on the newcomer
default (SQLite and an embedded Redis), 8 registered terminals and 16 activated virtual cards
made through the real API, then 16 concurrent workers tap cards without PIN (the PIN is
checked on the card: its scrypt would only measure the simulated card) for at least 3,000
flows after a warm-up. The load generator, the card simulator, the gateway and identity share
this machine's cores.
Target: >= 1,000 flows/s.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from bench import BenchmarkError
from bench.machine import cpu_seconds
from identity.clients.bootstrap import add_client
from identity.clients.models import ClientKind
from identity.demo import DemoCitizen, citizen_with_card
from identity.settings import IdentitySettings
from identity.simulators.card import VirtualCard
from identity.simulators.terminal import VirtualTerminal, register, tap
from services.kit.database import Database
from services.launcher import Launcher, LaunchError
from tests.harness import free_port_block

CONCURRENCY = 16
FLOWS = 3_200
WARMUP_FLOWS = 200
TERMINALS = 8
CARDS = 16
TARGET = 1_000.0
UNTHROTTLED = "1000000"


async def province(
    base_url: str,
    var_dir: Path,
    *,
    facility: str = "Bench Hospital",
    purpose: str = "registration_desk",
    terminals: int = TERMINALS,
    cards: int = CARDS,
) -> tuple[list[VirtualTerminal], list[VirtualCard], list[str]]:
    """Terminals and activated cards (and the card holders' pseudonyms), made through the real
    API like the demo province."""
    db = Database.for_settings(IdentitySettings())
    try:
        admin = await add_client(
            db,
            name="bench admin",
            kind=ClientKind.ADMIN,
            scopes=["citizen.manage", "card.manage", "terminal.manage"],
            base_url=base_url,
        )
    finally:
        await db.dispose()
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        token = await admin.fetch_token(http)
        auth = {"Authorization": f"Bearer {token}"}
        made = []
        for i in range(terminals):
            registered = await register(
                http,
                admin_token=token,
                facility=facility,
                purpose=purpose,
                base_url=base_url,
                name=f"{purpose}-{i}",
            )
            made.append(VirtualTerminal(registered.credentials))
        holders, pseudonyms = [], []
        for i in range(cards):
            person = DemoCitizen(
                f"bench-{i}", f"测试{i}", "330106", _birth(i), 100 + i, f"1380000{i:04d}"
            )
            _name, pseudonym, _serial = await citizen_with_card(
                http, auth, person, var_dir / "bench-cards"
            )
            holders.append(VirtualCard.load(var_dir / "bench-cards" / f"{person.slug}.card"))
            pseudonyms.append(pseudonym)
    return made, holders, pseudonyms


def _birth(i: int) -> date:
    return date(1980 + i % 20, 1 + i % 12, 1 + i % 28)


async def _tap_many(
    base_url: str, terminals: list[VirtualTerminal], cards: list[VirtualCard], flows: int
) -> tuple[float, list[float], int]:
    """``flows`` taps by CONCURRENCY workers; (seconds, latencies, errors)."""
    latencies: list[float] = []
    errors = 0
    first_error: list[str] = []
    remaining = flows
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)

    async def worker(index: int, http: httpx.AsyncClient) -> None:
        nonlocal remaining, errors
        terminal = terminals[index % len(terminals)]
        card = cards[index % len(cards)]
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            try:
                result = await tap(http, terminal=terminal, card=card)
            except Exception as exc:  # counted, reported, and the run is failed below
                errors += 1
                first_error.append(repr(exc)[:300])
                continue
            if result.claims.get("acr") != "1":
                errors += 1
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(i, http) for i in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    if first_error:
        raise BenchmarkError(f"{errors} of {flows} flows failed; first: {first_error[0]}")
    return elapsed, latencies, errors


def run(console: Console) -> None:
    with tempfile.TemporaryDirectory(prefix="onecard-bench-") as tmp:
        var_dir = Path(tmp) / "var"
        launcher = Launcher(
            port=free_port_block(5),
            var_dir=var_dir,
            # The ledger too: registering citizens is level-3 data, audited before it is answered.
            only=["gateway", "identity", "audit"],
            restart=False,
            environment={
                "ONECARD_RATE_LIMIT_PER_SECOND": UNTHROTTLED,
                "ONECARD_RATE_LIMIT_BURST": UNTHROTTLED,
                "ONECARD_RATE_LIMIT_PER_ADDRESS_PER_SECOND": UNTHROTTLED,
                "ONECARD_RATE_LIMIT_PER_ADDRESS_BURST": UNTHROTTLED,
            },
        )
        try:
            launcher.start(ready_timeout=60)
        except LaunchError as exc:
            raise BenchmarkError(str(exc)) from exc
        saved = dict(os.environ)
        try:
            os.environ.update(launcher.environment())
            base_url = launcher.children["gateway"].url
            terminals, cards, _ = asyncio.run(province(base_url, var_dir))
            asyncio.run(_tap_many(base_url, terminals, cards, WARMUP_FLOWS))
            pids = {name: c.process.pid for name, c in launcher.children.items() if c.process}
            cpu_before = {n: cpu_seconds(p) or 0.0 for n, p in pids.items()}
            own_before = time.process_time()
            elapsed, latencies, errors = asyncio.run(_tap_many(base_url, terminals, cards, FLOWS))
            own = time.process_time() - own_before
            cpu = {n: (cpu_seconds(p) or 0.0) - cpu_before[n] for n, p in pids.items()}
        finally:
            os.environ.clear()
            os.environ.update(saved)
            launcher.stop()
    if errors:
        raise BenchmarkError(f"{errors} of {FLOWS} flows failed")
    latencies.sort()
    rate = len(latencies) / elapsed
    table = Table(title=f"Terminal authentication through the gateway, concurrency {CONCURRENCY}")
    for column in ("flows", "flows/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{len(latencies):,}",
        f"{rate:,.0f}",
        f"{latencies[len(latencies) // 2] * 1000:.1f}",
        f"{latencies[int(len(latencies) * 0.99)] * 1000:.1f}",
    )
    console.print(table)
    per_flow = ", ".join(f"{n} {s / len(latencies) * 1e6:,.0f} µs" for n, s in cpu.items())
    console.print(
        f"CPU per flow: {per_flow}, load generator + card simulator "
        f"{own / len(latencies) * 1e6:,.0f} µs (all on the same cores)"
    )
    verdict = "[green]PASS[/green]" if rate >= TARGET else "[red]MISS[/red]"
    console.print(f"{rate:,.0f} flows/s (target >= {TARGET:,.0f})  {verdict}")
