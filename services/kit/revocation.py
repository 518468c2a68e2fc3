"""Revoked tokens, ended sessions and card status, as every service sees them (Redis).

The identity service's database is the truth; on each change it writes the database and then
this module, and every service checks here on every request, so a lost card, a revoked token
or a logged-out session is refused everywhere on the next request (DESIGN.md "Tokens":
within 1 second). Nothing here is cached in-process for that reason.

Keys, under the service's Redis prefix:

- ``revoked:jti:<jti>``: a revoked access token, kept until the token would have expired;
- ``revoked:sid:<sid>``: an ended session (logout, reused refresh token), kept until the
  session's last token would have expired;
- ``card-status:<serial>``: the status of a card that is not good (``suspended``, ``revoked``...),
  kept until it is cleared: a card's status does not expire.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from services.kit.redis import RedisConnection
from services.kit.tokens import DEFAULT_LEEWAY, AccessToken, TokenError


class _SharedLookups:
    """Concurrent lookups share MGETs: while one is in flight, the lookups that arrive wait and
    then go out together in the next, so a busy service pays one Redis round trip (about a
    tenth of a millisecond of the client's CPU) for several requests instead of one each.

    No lookup joins an MGET sent before it was asked for: each still sees every revocation
    written before its request arrived ("refused on the next request").
    """

    def __init__(self, redis: RedisConnection) -> None:
        self.redis = redis
        self._waiting: list[tuple[list[str], asyncio.Future[list[bytes | str | None]]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def get(self, keys: list[str]) -> list[bytes | str | None]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[bytes | str | None]] = loop.create_future()
        self._waiting.append((keys, answer))
        if self._sender is None or self._sender.done() or self._sender.get_loop() is not loop:
            self._sender = loop.create_task(self._send())
        return await answer

    async def _send(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                values = await self.redis.client.mget([key for keys, _ in batch for key in keys])
            except BaseException as exc:
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
                if not isinstance(exc, Exception):
                    for _, answer in self._waiting:
                        answer.cancel()
                    self._waiting = []
                    raise
                continue
            start = 0
            for keys, answer in batch:
                if not answer.done():  # a caller that gave up (timeout, hung-up client)
                    answer.set_result(values[start : start + len(keys)])
                start += len(keys)


class Revocations:
    """Writes and checks revocation status; :meth:`check` costs one Redis round trip, shared
    with the checks of concurrent requests."""

    def __init__(
        self,
        redis: RedisConnection,
        *,
        leeway: float = DEFAULT_LEEWAY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        # Verifiers accept a token until exp + leeway, so its revocation must outlive that.
        self.leeway = leeway
        self._clock = clock
        self._lookups = _SharedLookups(redis)

    def _jti_key(self, jti: str) -> str:
        return self.redis.key("revoked", "jti", jti)

    def _sid_key(self, sid: str) -> str:
        return self.redis.key("revoked", "sid", sid)

    def _card_key(self, serial: str) -> str:
        return self.redis.key("card-status", serial)

    async def revoke_token(self, jti: str, until_epoch: float) -> None:
        """Refuse the token ``jti`` from now on; ``until_epoch`` is its ``exp``."""
        await self._mark(self._jti_key(_required(jti, "jti")), until_epoch)

    async def revoke_session(self, sid: str, until_epoch: float) -> None:
        """Refuse every token of session ``sid``; ``until_epoch`` is when its last one expires."""
        await self._mark(self._sid_key(_required(sid, "sid")), until_epoch)

    async def _mark(self, key: str, until_epoch: float) -> None:
        expires_at = int(until_epoch + self.leeway) + 1
        if expires_at <= self._clock():
            return  # every token it could refuse has expired already
        await self.redis.client.set(key, b"1", exat=expires_at)

    async def set_card_status(self, serial: str, status: str | None) -> None:
        """Record a card as ``suspended``, ``revoked``... or, with None, as good again."""
        key = self._card_key(_required(serial, "serial"))
        if status is None:
            await self.redis.client.delete(key)
        else:
            await self.redis.client.set(key, _required(status, "status").encode())

    async def card_status(self, serial: str) -> str | None:
        """The recorded status of a card, None when it is good."""
        value = await self.redis.client.get(self._card_key(serial))
        return None if value is None else _text(value)

    async def check(self, token: AccessToken) -> None:
        """Raise :class:`TokenError` if the token, its session or its card was revoked."""
        keys = [self._jti_key(token.jti)]
        if token.sid is not None:
            keys.append(self._sid_key(token.sid))
        if token.card is not None:
            keys.append(self._card_key(token.card))
        # One MGET, shared with concurrent checks: a request pays at most one round trip
        # however many of these apply.
        values = await self._lookups.get(keys)
        if values[0] is not None:
            raise TokenError("token revoked")
        index = 1
        if token.sid is not None:
            if values[index] is not None:
                raise TokenError("session ended")
            index += 1
        status = values[index] if token.card is not None else None
        if status is not None:
            raise TokenError(f"card {token.card} is {_text(status)}")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _required(value: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value
