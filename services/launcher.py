"""``onecard up``: every service as its own process, supervised, stopped cleanly.

The launcher starts one embedded Redis (unless a URL is given) and hands it to every service,
starts each service on its own port (gateway on the base port, service N on base+N), waits
until every ``/readyz`` answers, restarts a service that dies (with back-off), and on Ctrl-C or
SIGTERM stops them all: SIGTERM first, SIGKILL for any still alive after the grace period.
Children also get SIGTERM from the kernel if the launcher itself is killed (PR_SET_PDEATHSIG),
so nothing is left orphaned.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from services.kit import topology
from services.kit.process import die_with_parent
from services.kit.redis import EmbeddedRedis
from services.kit.topology import ServiceSpec


class LaunchError(RuntimeError):
    pass


@dataclass
class Child:
    spec: ServiceSpec
    port: int
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    restarts: int = 0
    next_restart_at: float | None = None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Launcher:
    def __init__(
        self,
        *,
        port: int = topology.DEFAULT_GATEWAY_PORT,
        var_dir: Path = Path("var"),
        database_url: str | None = None,
        redis_url: str | None = None,
        only: Iterable[str] | None = None,
        restart: bool = True,
        restart_delay: float = 1.0,
        environment: dict[str, str] | None = None,
        grace_seconds: float = 10.0,
    ) -> None:
        self.port = port
        self.var_dir = var_dir.resolve()
        self.database_url = database_url
        self.redis_url = redis_url
        self.restart = restart
        self.restart_delay = restart_delay
        self.grace_seconds = grace_seconds
        self.extra_env = environment or {}
        wanted = set(only) if only else None
        self.children: dict[str, Child] = {
            spec.name: Child(spec=spec, port=port + spec.port_offset)
            for spec in topology.ALL
            if wanted is None or spec.name in wanted
        }
        self._embedded: EmbeddedRedis | None = None

    # -- starting -------------------------------------------------------------------------
    def start(self, *, ready_timeout: float = 60.0) -> None:
        (self.var_dir / "log").mkdir(parents=True, exist_ok=True)
        if not self.redis_url:
            self._embedded = EmbeddedRedis(self.var_dir)
            self.redis_url = self._embedded.url
        for child in self.children.values():
            self._spawn(child)
        self.wait_ready(ready_timeout)

    def environment(self) -> dict[str, str]:
        env = {**os.environ, **self.extra_env}
        env["ONECARD_VAR_DIR"] = str(self.var_dir)
        env["ONECARD_REDIS_URL"] = self.redis_url or ""
        if self.database_url:
            env["ONECARD_DATABASE_URL"] = self.database_url
        gateway = f"http://127.0.0.1:{self.port}"
        env.setdefault("ONECARD_PUBLIC_URL", gateway)
        identity = self.port + topology.by_name("identity").port_offset
        env["ONECARD_JWKS_URL"] = f"http://127.0.0.1:{identity}/.well-known/jwks.json"
        env["ONECARD_TOKEN_URL"] = f"http://127.0.0.1:{identity}/identity/oauth2/token"
        ledger = self.port + topology.by_name("audit").port_offset
        env["ONECARD_AUDIT_URL"] = f"http://127.0.0.1:{ledger}"
        env["ONECARD_UPSTREAMS"] = json.dumps(
            {
                spec.name: f"http://127.0.0.1:{self.port + spec.port_offset}"
                for spec in topology.SERVICES
            }
        )
        return env

    def _spawn(self, child: Child) -> None:
        if child.log is None:
            child.log = open(self.log_path(child.spec.name), "ab")  # noqa: SIM115 - kept open
        command = [
            sys.executable,
            "-m",
            "services.cli",
            "serve",
            child.spec.name,
            "--port",
            str(child.port),
        ]
        child.process = subprocess.Popen(
            command,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=child.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children in order
            preexec_fn=die_with_parent,  # noqa: PLW1509 - sets a kernel flag only, no locks
        )
        child.started_at = time.monotonic()
        child.next_restart_at = None

    def log_path(self, name: str) -> Path:
        return self.var_dir / "log" / f"{name}.log"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = dict(self.children)
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while pending:
                for name, child in list(pending.items()):
                    assert child.process is not None
                    if child.process.poll() is not None:
                        raise LaunchError(
                            f"{name} exited with code {child.process.returncode} while starting; "
                            f"its log ({self.log_path(name)}) ends with:\n{self.tail(name)}"
                        )
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(f"{child.url}/readyz").status_code == 200:
                            del pending[name]
                if pending and time.monotonic() > deadline:
                    raise LaunchError(
                        f"not ready after {timeout:g} s: {', '.join(sorted(pending))}"
                    )
                if pending:
                    time.sleep(0.1)

    def tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- supervising ----------------------------------------------------------------------
    def supervise_once(self) -> list[str]:
        """Restart services that died (after a back-off); returns what happened, for the user."""
        events: list[str] = []
        now = time.monotonic()
        for name, child in self.children.items():
            process = child.process
            if process is None or process.poll() is None:
                continue
            if not self.restart:
                continue
            if child.next_restart_at is None:
                # Back off 1, 2, 4 ... 30 s, but forget earlier crashes after a minute of uptime.
                if now - child.started_at > 60:
                    child.restarts = 0
                delay = min(self.restart_delay * (2**child.restarts), 30.0)
                child.next_restart_at = now + delay
                events.append(
                    f"{name} exited with code {process.returncode}; restarting in "
                    f"{delay:g} s (log: {self.log_path(name)})"
                )
            elif now >= child.next_restart_at:
                child.restarts += 1
                self._spawn(child)
                events.append(f"{name} restarted")
        return events

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        process = self.children[name].process
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            process.wait()

    # -- stopping -------------------------------------------------------------------------
    def stop(self) -> None:
        running = [
            c for c in self.children.values() if c.process is not None and c.process.poll() is None
        ]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        for child in self.children.values():
            if child.log is not None:
                child.log.close()
                child.log = None
        if self._embedded is not None:
            self._embedded.shutdown()
            self._embedded = None

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Stop(Exception):
    pass


def run(
    launcher: Launcher,
    *,
    on_ready: Callable[[], None] = lambda: None,
    say: Callable[[str], None] = print,
) -> None:
    """Start, supervise until SIGINT/SIGTERM, stop. Used by ``onecard up``."""

    def handle(signum: int, _frame: object) -> None:
        raise _Stop(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        launcher.start()
        on_ready()
        while True:
            for event in launcher.supervise_once():
                say(event)
            time.sleep(0.2)
    except _Stop as stop:
        say(f"{stop}: stopping every service")
    finally:
        # A second Ctrl-C during shutdown must not leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            launcher.stop()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
