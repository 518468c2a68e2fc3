"""Per-client rate limit kept in Redis, with GCRA (the generic cell rate algorithm).

GCRA stores one timestamp per client (the "theoretical arrival time"), allows a sustained
rate with a burst, and answers in one round trip via a Lua script, so parallel gateways share
one budget. Redis being down must not take the platform down: the limiter then fails open and
the gateway reports itself degraded.
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

# KEYS[1] = client key; ARGV = emission interval (ms), burst tolerance (ms).
# Uses the server clock (TIME) so gateways with skewed clocks agree.
_GCRA = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, allow_at - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return {1, 0}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_seconds: int = 0
    degraded: bool = False


class RateLimiter:
    def __init__(self, redis: RedisConnection, *, per_second: float, burst: int) -> None:
        self.redis = redis
        self.interval_ms = 1000.0 / per_second
        self.tolerance_ms = self.interval_ms * max(burst - 1, 0)
        self._script = redis.client.register_script(_GCRA)
        self.degraded = False
        self._retry_at = 0.0

    async def check(self, client_key: str) -> Decision:
        if time.monotonic() < self._retry_at:
            return Decision(allowed=True, degraded=True)
        try:
            allowed, wait_ms = await asyncio.wait_for(
                self._script(
                    keys=[self.redis.key("ratelimit", client_key)],
                    args=[self.interval_ms, self.tolerance_ms],
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
            return Decision(allowed=True, degraded=True)
        if self.degraded:
            log.info("rate limiter recovered")
            self.degraded = False
        if allowed:
            return Decision(allowed=True)
        return Decision(allowed=False, retry_after_seconds=max(1, math.ceil(int(wait_ms) / 1000)))
