"""Rate limits kept in Redis, with GCRA (the generic cell rate algorithm), spent locally in batches.

GCRA stores one timestamp per client (the "theoretical arrival time"), allows a sustained
rate with a burst, and answers in one round trip via a Lua script, so parallel gateways share
one budget. Redis being down must not take the platform down: the limiter then fails open and
the gateway reports itself degraded.

A Redis round trip per request (and a task for its timeout) cost the gateway about 80 µs of
CPU per forwarded request (measured with ``make bench``). So a gateway takes a *batch* of
cells per script call and spends them locally (:class:`Limit` says how many at most). The
budget stays shared: every cell is taken from Redis before it is spent, so all gateways
together spend no more cells than GCRA grants. Batching costs some exactness, bounded per
gateway by ``max_batch - 1`` cells taken but not yet spent: a client may pass its burst by
that many on one gateway (cells taken earlier, spent later), or be refused that many early
while they sit unspent in another. A cell not spent within :data:`BATCH_LIFETIME` lapses, so
no gateway sits on a client's budget for long. ``max_batch`` is at most a tenth of the burst
and what the sustained rate earns in one batch lifetime: 20 for the defaults (100/s, burst
200), and 1 (exact) for a limit of a few requests per second. A batch's size also follows the
client's own recent rate (what it sends in half a lifetime), so a client far below its limit
takes one cell at a time and a steady one spends each batch before it lapses.

A refusal is remembered until the time GCRA named: nothing but time frees budget, so a
client flooding past its limit costs no Redis call per refused request either.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from services.kit.redis import RedisConnection

log = logging.getLogger(__name__)

# A Redis that hangs (a partition, an overloaded server) must cost callers little: a check
# gives up after CHECK_TIMEOUT, and after a failure the limiter fails open without asking Redis
# for RETRY_AFTER_FAILURE, instead of making every request wait for its own timeout.
CHECK_TIMEOUT = 0.5
RETRY_AFTER_FAILURE = 1.0
# Cells taken in one call are spent within this many seconds or lapse, so a gateway never
# sits on a client's budget for long (see the module docstring).
BATCH_LIFETIME = 1.0
# A batch is sized for the client's traffic over this many seconds (half the lifetime, so a
# client at a steady rate spends its batch before it lapses).
BATCH_HORIZON = BATCH_LIFETIME / 2
# Whatever the limit, one script call takes at most this many cells.
MAX_BATCH = 64
# Local state of clients idle for this long is dropped (checked at most this often).
_SWEEP_SECONDS = 1.0

# KEYS[1] = client key; ARGV = emission interval (ms), burst tolerance (ms), cells wanted.
# Takes up to ARGV[3] cells, as many as conform now; none: {0, ms until one will}.
# Uses the server clock (TIME) so gateways with skewed clocks agree.
_GCRA = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, math.ceil(allow_at - now)}
end
local granted = math.min(wanted, math.floor((now - allow_at) / interval) + 1)
local new_tat = tat + granted * interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return {granted, 0}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_seconds: int = 0
    degraded: bool = False


ALLOWED = Decision(allowed=True)
ALLOWED_DEGRADED = Decision(allowed=True, degraded=True)


@dataclass(frozen=True, slots=True)
class Limit:
    """A sustained rate with a burst, under its own Redis key space (``name``)."""

    name: str
    per_second: float
    burst: int

    @property
    def interval_ms(self) -> float:
        return 1000.0 / self.per_second

    @property
    def tolerance_ms(self) -> float:
        return self.interval_ms * max(self.burst - 1, 0)

    @property
    def max_batch(self) -> int:
        """Cells one call may take: a tenth of the burst, what one batch lifetime earns."""
        return max(1, min(MAX_BATCH, self.burst // 10, int(self.per_second * BATCH_LIFETIME)))


class _Client:
    """What this gateway holds for one client under one limit."""

    __slots__ = ("expires", "fetched_at", "granted", "pending", "refused_until", "tokens")

    def __init__(self) -> None:
        self.tokens = 0  # cells taken from Redis, not yet spent
        self.granted = 0  # size of the last batch
        self.fetched_at = 0.0
        self.expires = 0.0  # monotonic time the unspent cells lapse
        self.refused_until = 0.0  # monotonic time before which Redis would refuse anyway
        self.pending: asyncio.Future[None] | None = None  # a script call under way


class RateLimiter:
    def __init__(self, redis: RedisConnection) -> None:
        self.redis = redis
        self._script = redis.client.register_script(_GCRA)
        self.degraded = False
        self._retry_at = 0.0
        self._clients: dict[tuple[str, str], _Client] = {}
        self._sweep_at = 0.0

    async def check(self, limit: Limit, client_key: str) -> Decision:
        """May ``client_key`` send one more request under ``limit``?"""
        key = (limit.name, client_key)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = _Client()
        while True:
            now = time.monotonic()
            if client.tokens > 0 and now < client.expires:
                client.tokens -= 1
                return ALLOWED
            if now < client.refused_until:
                return _refusal(client.refused_until - now)
            if now < self._retry_at:
                return ALLOWED_DEGRADED
            if client.pending is None:
                return await self._fetch(limit, key, client, now)
            # Another request of this client is asking Redis: share its batch.
            await asyncio.shield(client.pending)

    async def _fetch(
        self, limit: Limit, key: tuple[str, str], client: _Client, now: float
    ) -> Decision:
        # Size the batch for the client's recent rate: what it spent of its last batch (cells
        # that lapsed unspent are still counted in ``tokens``) over the time since it was taken.
        spent = client.granted - client.tokens
        elapsed = now - client.fetched_at
        rate = spent / elapsed if client.fetched_at and elapsed > 0 else 0.0
        wanted = max(1, min(limit.max_batch, math.ceil(rate * BATCH_HORIZON)))
        client.pending = asyncio.get_running_loop().create_future()
        try:
            granted, wait_ms = await asyncio.wait_for(
                self._script(
                    keys=[self.redis.key("ratelimit", limit.name, key[1])],
                    args=[limit.interval_ms, limit.tolerance_ms, wanted],
                ),
                CHECK_TIMEOUT,
            )
        except (RedisError, OSError) as exc:  # OSError includes TimeoutError
            if not self.degraded:
                log.warning(
                    "rate limiter degraded: redis unavailable",
                    extra={"error": str(exc) or type(exc).__name__},
                )
            self.degraded = True
            self._retry_at = time.monotonic() + RETRY_AFTER_FAILURE
            return ALLOWED_DEGRADED
        finally:
            client.pending.set_result(None)
            client.pending = None
        if self.degraded:
            log.info("rate limiter recovered")
            self.degraded = False
        now = time.monotonic()
        self._sweep(now)
        self._clients[key] = client  # the sweep may just have dropped it: it is busy again
        granted = int(granted)
        if granted <= 0:
            client.refused_until = now + int(wait_ms) / 1000
            return _refusal(int(wait_ms) / 1000)
        client.granted, client.fetched_at = granted, now
        client.tokens, client.expires = granted - 1, now + BATCH_LIFETIME
        return ALLOWED

    def _sweep(self, now: float) -> None:
        """Forget clients with nothing pending, no cells and no refusal in force."""
        if now < self._sweep_at:
            return
        self._sweep_at = now + _SWEEP_SECONDS
        idle = [
            key
            for key, c in self._clients.items()
            if c.pending is None
            and now >= c.expires
            and now >= c.refused_until
            and now - c.fetched_at > _SWEEP_SECONDS
        ]
        for key in idle:
            del self._clients[key]


def _refusal(wait_seconds: float) -> Decision:
    return Decision(allowed=False, retry_after_seconds=max(1, math.ceil(wait_seconds)))
