"""Revoked tokens, ended sessions and suspended cards are refused on the very next check."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

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


async def test_a_check_is_one_redis_round_trip(
    redis: RedisConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    revocations = Revocations(redis)
    commands: list[str] = []
    execute: Callable[..., Awaitable[Any]] = redis.client.execute_command

    async def spy(*args: Any, **options: Any) -> Any:
        commands.append(str(args[0]))
        return await execute(*args, **options)

    monkeypatch.setattr(redis.client, "execute_command", spy)
    await revocations.check(await token(sid="s-1", card="C-1"))
    assert commands == ["MGET"]


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
