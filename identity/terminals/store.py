"""The short-lived state of taps, in Redis: nonces, failed attempts and locks, used QR codes.

Nothing here is durable truth (DESIGN.md "Storage"): a lost nonce means one more tap, a lost
failure counter one more chance for a guesser within the limits the card itself enforces
(3 wrong PINs block it). Times are the caller's clock (``now``, epoch seconds) so tests can
move it; Redis expiries only collect the garbage, a little after the rule has run out.

Keys, under the service's prefix (``{...}`` is a Redis Cluster hash tag, so a card's failure
counter and lock live on one shard and one script may touch both):

- ``tap-nonce:<nonce>``: ``<expires at>|<terminal id>``, until GETDEL takes it;
- ``tap-failures:{<card serial>}``: sorted set of failed attempts, scored by time;
- ``tap-lock:{<card serial>}``: the time the lock ends;
- ``qr-jti:<jti>``: a QR payload already redeemed.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from identity.protocol import NONCE_BYTES
from services.kit.redis import RedisConnection

NONCE_SECONDS = 120
# Kept this much longer than it is valid, so that a late answer is told "expired" by the rule
# (and by the clock tests control) rather than "unknown".
NONCE_GRACE_SECONDS = 30
# MLPS 2.0 (GB/T 22239-2019 8.1.4.1 b): login-failure handling. Five failed attempts on one
# card within 15 minutes lock it for 30 minutes.
FAILURE_LIMIT = 5
FAILURE_WINDOW_SECONDS = 15 * 60
LOCK_SECONDS = 30 * 60
_LOCK_GRACE_SECONDS = 60

# One round trip, atomic: forget attempts older than the window, count this one, and lock
# the card (forgetting its attempts) when the limit is reached. Returns {count, lock end}.
_RECORD_FAILURE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], now, ARGV[5])
local count = redis.call('ZCARD', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if count >= tonumber(ARGV[3]) then
  local ends = ARGV[6]
  redis.call('SET', KEYS[2], ends, 'EX', ARGV[7])
  redis.call('DEL', KEYS[1])
  return {count, ends}
end
return {count, false}
"""


@dataclass(frozen=True, slots=True)
class IssuedNonce:
    terminal_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Taken:
    """What one round trip found at the start of an authentication."""

    nonce: IssuedNonce | None  # None: unknown, already used, or long expired
    locked_until: float | None
    had_failures: bool


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class TapStore:
    def __init__(self, redis: RedisConnection) -> None:
        self.redis = redis
        self._record_failure = redis.client.register_script(_RECORD_FAILURE)

    def _nonce_key(self, nonce: str) -> str:
        return self.redis.key("tap-nonce", nonce)

    def _failures_key(self, card_serial: str) -> str:
        return self.redis.key("tap-failures", "{" + card_serial + "}")

    def _lock_key(self, card_serial: str) -> str:
        return self.redis.key("tap-lock", "{" + card_serial + "}")

    async def new_nonce(self, *, terminal_id: str, now: float) -> str:
        """A fresh 256-bit nonce bound to ``terminal_id``, valid NONCE_SECONDS."""
        nonce = base64.urlsafe_b64encode(secrets.token_bytes(NONCE_BYTES)).rstrip(b"=").decode()
        value = f"{now + NONCE_SECONDS:.3f}|{terminal_id}"
        # NX: a collision of 256 random bits will not happen, but must never overwrite.
        await self.redis.client.set(
            self._nonce_key(nonce),
            value.encode(),
            nx=True,
            ex=NONCE_SECONDS + NONCE_GRACE_SECONDS,
        )
        return nonce

    async def take(self, *, nonce: str, card_serial: str | None) -> Taken:
        """Consume the nonce (GETDEL: single use, even by concurrent requests) and read the
        card's lock and failure state, in one round trip."""
        pipe = self.redis.client.pipeline(transaction=False)
        pipe.getdel(self._nonce_key(nonce))
        if card_serial is not None:
            pipe.get(self._lock_key(card_serial))
            pipe.exists(self._failures_key(card_serial))
        values = await pipe.execute()
        issued = None
        if values[0] is not None:
            expires_at, _, terminal_id = _text(values[0]).partition("|")
            issued = IssuedNonce(terminal_id=terminal_id, expires_at=float(expires_at))
        if card_serial is None:
            return Taken(nonce=issued, locked_until=None, had_failures=False)
        locked = float(_text(values[1])) if values[1] is not None else None
        return Taken(nonce=issued, locked_until=locked, had_failures=bool(values[2]))

    async def record_failure(self, *, card_serial: str, now: float) -> float | None:
        """Count a failed attempt on the card; the end of the lock if this one locked it."""
        ends = now + LOCK_SECONDS
        _count, locked = await self._record_failure(
            keys=[self._failures_key(card_serial), self._lock_key(card_serial)],
            args=[
                repr(now),
                FAILURE_WINDOW_SECONDS,
                FAILURE_LIMIT,
                LOCK_SECONDS,
                secrets.token_hex(8),  # attempts at the same instant are still distinct
                repr(ends),
                LOCK_SECONDS + _LOCK_GRACE_SECONDS,
            ],
        )
        return float(_text(locked)) if locked else None

    async def clear_failures(self, *, card_serial: str) -> None:
        """A successful authentication forgets earlier failed attempts."""
        await self.redis.client.delete(self._failures_key(card_serial))

    async def use_qr(self, *, jti: str, ttl: int) -> bool:
        """Mark a QR payload redeemed; False if it was already (SET NX: once, even racing)."""
        fresh = await self.redis.client.set(
            self.redis.key("qr-jti", jti), b"1", nx=True, ex=max(1, ttl)
        )
        return bool(fresh)
