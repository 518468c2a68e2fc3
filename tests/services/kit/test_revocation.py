"""Revoked tokens, ended sessions and suspended cards are refused on the very next check."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from services.kit.redis import RedisConnection, connect
from services.kit.revocation import Revocations
from services.kit.settings import ServiceSettings
from services.kit.tokens import AccessToken, TokenError
from tests.services.kit.test_tokens import access_token, verifier


@pytest.fixture
async def redis(make_settings: Callable[..., Any]) -> AsyncIterator[RedisConnection]:
    settings = make_settings(ServiceSettings)
    connection = connect(
        url=settings.redis_url, var_dir=settings.var_dir, prefix=settings.redis_prefix
    )
    yield connection
    await connection.close()


async def token(**overrides: Any) -> AccessToken:
    return await verifier().verify(access_token(**overrides))


async def reason(revocations: Revocations, checked: AccessToken) -> str:
    with pytest.raises(TokenError) as caught:
        await revocations.check(checked)
    return caught.value.reason


async def test_a_good_token_passes(redis: RedisConnection) -> None:
    await Revocations(redis).check(await token())


async def test_a_revoked_token_is_refused_and_only_that_one(redis: RedisConnection) -> None:
    revocations = Revocations(redis)
    revoked, other = await token(), await token()
    await revocations.revoke_token(revoked.jti, revoked.exp)
    assert await reason(revocations, revoked) == "token revoked"
    await revocations.check(other)


async def test_a_revoked_jti_is_kept_until_the_token_could_no_longer_pass(
    redis: RedisConnection,
) -> None:
    revocations = Revocations(redis, leeway=10)
    revoked = await token()
    await revocations.revoke_token(revoked.jti, revoked.exp)
    ttl = await redis.client.ttl(redis.key("revoked", "jti", revoked.jti))
    # exp is 300 s ahead and verifiers allow 10 s of leeway after it.
    assert 300 <= ttl <= 312


async def test_revoking_an_already_expired_token_writes_nothing(redis: RedisConnection) -> None:
    revocations = Revocations(redis, leeway=10)
    await revocations.revoke_token("old", time.time() - 60)
    assert await redis.client.exists(redis.key("revoked", "jti", "old")) == 0


async def test_an_ended_session_refuses_all_its_tokens(redis: RedisConnection) -> None:
    revocations = Revocations(redis)
    first, second = await token(sid="s-1"), await token(sid="s-1")
    elsewhere, sessionless = await token(sid="s-2"), await token(sid=None)
    await revocations.revoke_session("s-1", time.time() + 3600)
    assert await reason(revocations, first) == "session ended"
    assert await reason(revocations, second) == "session ended"
    await revocations.check(elsewhere)
    await revocations.check(sessionless)


@pytest.mark.parametrize("status", ["suspended", "revoked"])
async def test_a_card_that_is_not_good_refuses_its_tokens_until_it_is_resumed(
    redis: RedisConnection, status: str
) -> None:
    revocations = Revocations(redis)
    tapped, other_card = await token(card="C-0001"), await token(card="C-0002")
    await revocations.set_card_status("C-0001", status)
    assert await revocations.card_status("C-0001") == status
    assert await reason(revocations, tapped) == f"card C-0001 is {status}"
    await revocations.check(other_card)

    await revocations.set_card_status("C-0001", None)
    assert await revocations.card_status("C-0001") is None
    await revocations.check(tapped)


async def test_a_token_without_a_card_is_not_affected_by_card_status(
    redis: RedisConnection,
) -> None:
    revocations = Revocations(redis)
    await revocations.set_card_status("C-0001", "suspended")
    await revocations.check(await token(card=None, sid=None))


async def test_the_token_itself_is_named_first(redis: RedisConnection) -> None:
    revocations = Revocations(redis)
    checked = await token(sid="s-9", card="C-9")
    await revocations.set_card_status("C-9", "suspended")
    assert await reason(revocations, checked) == "card C-9 is suspended"
    await revocations.revoke_session("s-9", checked.exp)
    assert await reason(revocations, checked) == "session ended"
    await revocations.revoke_token(checked.jti, checked.exp)
    assert await reason(revocations, checked) == "token revoked"


def _commands_sent(redis: RedisConnection, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the Redis commands sent from now on (each still goes to Redis)."""
    commands: list[str] = []
    execute: Callable[..., Awaitable[Any]] = redis.client.execute_command

    async def spy(*args: Any, **options: Any) -> Any:
        commands.append(str(args[0]))
        return await execute(*args, **options)

    monkeypatch.setattr(redis.client, "execute_command", spy)
    return commands


async def test_a_check_is_one_redis_round_trip(
    redis: RedisConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    revocations = Revocations(redis)
    commands = _commands_sent(redis, monkeypatch)
    await revocations.check(await token(sid="s-1", card="C-1"))
    assert commands == ["MGET"]


async def test_concurrent_checks_share_round_trips_and_each_gets_its_own_answer(
    redis: RedisConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    revocations = Revocations(redis)
    tokens = [await token(sid=f"s-{i}", card=f"C-{i}") for i in range(20)]
    await revocations.revoke_token(tokens[3].jti, tokens[3].exp)
    await revocations.revoke_session("s-7", tokens[7].exp)
    await revocations.set_card_status("C-11", "suspended")
    commands = _commands_sent(redis, monkeypatch)

    async def outcome(checked: AccessToken) -> str:
        try:
            await revocations.check(checked)
        except TokenError as exc:
            return exc.reason
        return "ok"

    outcomes = await asyncio.gather(*(outcome(t) for t in tokens))
    expected = ["ok"] * 20
    expected[3], expected[7], expected[11] = (
        "token revoked",
        "session ended",
        "card C-11 is suspended",
    )
    assert outcomes == expected
    # All twenty were asked for before the first MGET went out: they share it.
    assert commands == ["MGET"]


async def test_a_revocation_reaches_the_checks_that_come_after_it_while_others_are_in_flight(
    redis: RedisConnection,
) -> None:
    revocations = Revocations(redis)
    checked = await token()
    in_flight = asyncio.gather(*(revocations.check(checked) for _ in range(5)))
    await revocations.revoke_token(checked.jti, checked.exp)
    assert await reason(revocations, checked) == "token revoked"
    await asyncio.gather(in_flight, return_exceptions=True)


async def test_a_check_that_gives_up_leaves_the_others_answered(redis: RedisConnection) -> None:
    revocations = Revocations(redis)
    checks = [asyncio.ensure_future(revocations.check(await token())) for _ in range(5)]
    checks[2].cancel()
    results = await asyncio.gather(*checks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 2] == [None] * 4


async def test_when_redis_fails_every_waiting_check_fails(
    redis: RedisConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    revocations = Revocations(redis)

    async def broken(*args: Any, **options: Any) -> Any:
        raise RedisConnectionError("Redis is gone")

    monkeypatch.setattr(redis.client, "execute_command", broken)
    tokens = [await token() for _ in range(5)]
    results = await asyncio.gather(*(revocations.check(t) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results)
    monkeypatch.undo()
    await revocations.check(await token())  # and the next check goes out again


async def test_status_is_namespaced_by_the_service_prefix(
    make_settings: Callable[..., Any],
) -> None:
    # Two deployments sharing one Redis server do not see each other's revocations.
    connections = []
    for _ in range(2):
        settings = make_settings(ServiceSettings)
        connections.append(
            connect(url=settings.redis_url, var_dir=settings.var_dir, prefix=settings.redis_prefix)
        )
    try:
        one, two = (Revocations(c) for c in connections)
        await one.set_card_status("C-1", "revoked")
        assert await two.card_status("C-1") is None
    finally:
        for connection in connections:
            await connection.close()


@pytest.mark.parametrize("blank", ["", None])
async def test_blank_identifiers_are_refused(redis: RedisConnection, blank: Any) -> None:
    revocations = Revocations(redis)
    with pytest.raises(ValueError, match="jti"):
        await revocations.revoke_token(blank, time.time() + 60)
    with pytest.raises(ValueError, match="serial"):
        await revocations.set_card_status(blank, "suspended")
    with pytest.raises(ValueError, match="status"):
        await revocations.set_card_status("C-1", "")
