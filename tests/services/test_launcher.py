"""``onecard up``: the whole platform as processes, supervised, and stopped without orphans."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.kit import topology
from services.launcher import Launcher
from tests.conftest import POSTGRES_URL, REDIS_URL, require_servers, worker_id
from tests.harness import free_port_block, wait_until

pytestmark = pytest.mark.system

PORTS = len(topology.ALL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited but was not reaped yet; it is not running.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


def _pids_listening_on(ports: range) -> list[int]:
    """Processes whose command line is ``... serve NAME --port P`` for one of our ports."""
    wanted = {f"--port\x00{p}\x00" for p in ports}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_text()
            serving = "\x00serve\x00" in cmdline
            if serving and any(w in cmdline + "\x00" for w in wanted) and _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(
        port=free_port_block(PORTS),
        var_dir=tmp_path / "var",
        restart=True,
        restart_delay=1.0,
        # The traffic below comes from one client; it must not meet the rate limit.
        environment={
            "ONECARD_RATE_LIMIT_PER_SECOND": "1e6",
            # The traffic is anonymous: what is tested is forwarding around a dead service.
            "ONECARD_PROTECTION_REQUIRE_TOKEN": "false",
        },
        grace_seconds=5,
    )
    started = time.monotonic()
    try:
        launcher.start(ready_timeout=60)
        launcher.startup_seconds = time.monotonic() - started  # type: ignore[attr-defined]
        yield launcher
    finally:
        launcher.stop()


async def test_every_service_is_ready_and_the_gateway_reports_each(platform: Launcher) -> None:
    assert platform.startup_seconds < 60  # type: ignore[attr-defined]
    gateway = platform.children["gateway"].url
    async with httpx.AsyncClient(base_url=gateway) as client:
        health = (await client.get("/healthz")).json()
        through = await client.get("/identity/healthz")
    assert health["status"] == "ok"
    assert {name: s["status"] for name, s in health["services"].items()} == {
        "identity": "up",
        "health": "up",
        "social_security": "up",
        "audit": "up",
    }
    assert through.json() == {"status": "ok", "service": "identity"}


# A response cut short (see below), counted beside the status codes.
CUT = -1


async def test_a_killed_service_gives_503_for_its_routes_only_and_comes_back(
    platform: Launcher,
) -> None:
    gateway = platform.children["gateway"]
    gateway_pid = gateway.process.pid  # type: ignore[union-attr]
    outcomes: Counter[tuple[str, int]] = Counter()
    stop = asyncio.Event()

    async def traffic(client: httpx.AsyncClient, path: str, label: str) -> None:
        while not stop.is_set():
            try:
                response = await client.get(path)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # A response already under way when its service died (the CapabilityStatement
                # is 190 kB) can only be cut: its status line has left the gateway.
                outcomes[(label, CUT)] += 1
                continue
            outcomes[(label, response.status_code)] += 1

    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as client:
        workers = [
            asyncio.create_task(traffic(client, "/identity/healthz", "identity")),
            asyncio.create_task(traffic(client, "/fhir/metadata", "health")),
        ]
        await asyncio.sleep(0.3)
        platform.kill("health", signal.SIGKILL)

        down = await client.get("/fhir/metadata")
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"
        assert down.json()["service"] == "health"
        assert "Retry-After" in down.headers
        assert (await client.get("/identity/healthz")).status_code == 200

        # The launcher notices and restarts the service; the gateway serves it again by itself.
        async def health_served_again() -> bool:
            platform.supervise_once()
            return (await client.get("/fhir/metadata")).status_code != 503

        await wait_until(health_served_again, timeout=45, interval=0.2)
        stop.set()
        await asyncio.gather(*workers)

    assert gateway.process.pid == gateway_pid  # type: ignore[union-attr]
    assert platform.children["health"].restarts == 1
    # While health was down, identity kept answering; nothing anywhere answered 500.
    assert {status for (label, status) in outcomes if label == "identity"} == {200}
    assert {status for (label, status) in outcomes if label == "health"} <= {200, 503, CUT}
    assert outcomes[("health", 503)] >= 1
    assert outcomes[("health", CUT)] <= 1  # at most the one in flight at the kill


def test_stopping_leaves_no_process_behind(tmp_path: Path) -> None:
    base = free_port_block(PORTS)
    launcher = Launcher(port=base, var_dir=tmp_path / "var")
    launcher.start(ready_timeout=60)
    pids = [c.process.pid for c in launcher.children.values()]  # type: ignore[union-attr]
    redis_pid = launcher._embedded.process.pid  # type: ignore[union-attr]
    launcher.stop()
    assert not [p for p in [*pids, redis_pid] if _alive(p)]


def _start_cli(base: int, var_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "up",
            "--port",
            str(base),
            "--var-dir",
            str(var_dir),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )


async def _wait_for_gateway(base: int) -> None:
    async def up() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                health = await client.get(f"http://127.0.0.1:{base}/healthz")
        except httpx.HTTPError:
            return False
        return health.status_code == 200 and health.json()["status"] == "ok"

    await wait_until(up, timeout=60, interval=0.2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_onecard_up_stops_everything_on_sigterm_or_ctrl_c(
    tmp_path: Path, sig: signal.Signals
) -> None:
    base = free_port_block(PORTS)
    cli = _start_cli(base, tmp_path / "var")
    try:
        await _wait_for_gateway(base)
        assert len(_pids_listening_on(range(base, base + PORTS))) == PORTS
        cli.send_signal(sig)
        assert cli.wait(timeout=30) == 0
        assert _pids_listening_on(range(base, base + PORTS)) == []
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        assert cli.stderr is not None
        cli.stderr.close()


async def test_children_die_with_a_killed_launcher(tmp_path: Path) -> None:
    base = free_port_block(PORTS)
    cli = _start_cli(base, tmp_path / "var")
    try:
        await _wait_for_gateway(base)
        cli.kill()  # SIGKILL: the launcher gets no chance to clean up
        cli.wait()
        await wait_until(lambda: not _pids_listening_on(range(base, base + PORTS)), timeout=20)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        assert cli.stderr is not None
        cli.stderr.close()


@pytest.mark.servers
async def test_onecard_up_runs_on_real_postgresql_and_redis(tmp_path: Path) -> None:
    require_servers()
    from tests.conftest import _drop_databases

    name = f"onecard_up_{worker_id()}"
    databases = [f"{name}_{s.name}" for s in topology.SERVICES]
    await _drop_databases(databases)
    database_url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    base = free_port_block(PORTS)
    cli = _start_cli(
        base, tmp_path / "var", "--database-url", database_url, "--redis-url", REDIS_URL
    )
    try:
        await _wait_for_gateway(base)
        async with httpx.AsyncClient() as client:
            ready = (await client.get(f"http://127.0.0.1:{base + 1}/readyz")).json()
        assert ready["checks"] == {"database": "ok", "redis": "ok"}
        # Each service created its own database on the server, and no SQLite file.
        assert not (tmp_path / "var" / "data").exists()
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=30) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        assert cli.stderr is not None
        cli.stderr.close()
        await _drop_databases(databases)  # leave the shared server as it was found
