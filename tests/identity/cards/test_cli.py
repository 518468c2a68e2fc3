"""``onecard card ...`` against a real identity server (uvicorn in a thread, real HTTP)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text
from typer.testing import CliRunner

from identity.app import create_app
from identity.cards.cli import app
from identity.clients.bootstrap import add_client
from identity.clients.models import ClientKind
from identity.national_id import make_national_id
from identity.settings import IdentitySettings
from identity.simulators.card import VirtualCard
from services.kit.credentials import ClientCredentials
from services.kit.database import Database
from services.kit.redis import connect
from services.kit.revocation import Revocations
from tests.harness import free_port

PIN, NEW_PIN, PUK = "482915", "135790", "73019264"


@dataclass
class LiveIdentity:
    """The identity service listening on a real port, and an administrator's credentials."""

    url: str
    settings: IdentitySettings
    admin_file: Path
    admin: ClientCredentials

    def token(self, scope: str) -> dict[str, str]:
        async def fetch() -> str:
            async with httpx.AsyncClient(base_url=self.url) as http:
                return await self.admin.fetch_token(http, scope)

        return {"Authorization": f"Bearer {asyncio.run(fetch())}"}

    def citizen(self) -> str:
        response = httpx.post(
            self.url + "/identity/citizens",
            json={"name": "李雷", "national_id": make_national_id(sequence=7)},
            headers=self.token("citizen.manage"),
        )
        assert response.status_code == 201, response.text
        pseudonym: str = response.json()["id"]
        return pseudonym

    def card(self, serial: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.url}/identity/cards/{serial}", headers=self.token("card.manage")
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def sql(self, statement: str, **params: Any) -> None:
        async def run() -> None:
            db = Database.for_settings(self.settings)
            try:
                async with db.engine.begin() as conn:
                    await conn.execute(text(statement), params)
            finally:
                await db.dispose()

        asyncio.run(run())

    def cached_status(self, serial: str) -> str | None:
        async def read() -> str | None:
            redis = connect(
                url=self.settings.redis_url,
                var_dir=self.settings.var_dir,
                prefix=self.settings.redis_prefix,
            )
            try:
                return await Revocations(redis).card_status(serial)
            finally:
                await redis.close()

        return asyncio.run(read())


async def _register_admin(settings: IdentitySettings) -> ClientCredentials:
    db = Database.for_settings(settings)
    try:
        return await add_client(
            db,
            name="registration desk",
            kind=ClientKind.ADMIN,
            scopes=["card.manage", "citizen.manage"],
            base_url=settings.public_url,
        )
    finally:
        await db.dispose()


@pytest.fixture
def live_identity(
    make_identity_settings: Callable[..., IdentitySettings], tmp_path: Path
) -> Iterator[LiveIdentity]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = make_identity_settings(public_url=url)
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",  # the real start-up: migrations, CAs, signing keys
        loop="asyncio",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the identity server stopped during start-up"
        assert time.monotonic() < deadline, "the identity server did not start"
        time.sleep(0.02)
    try:
        admin = asyncio.run(_register_admin(settings))
        admin_file = tmp_path / "desk.json"
        admin.save(admin_file)
        yield LiveIdentity(url=url, settings=settings, admin_file=admin_file, admin=admin)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _ok(result: Any) -> str:
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    output: str = result.stdout
    return output


def _fields(output: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)


def test_a_desk_issues_and_activates_a_card_and_the_holder_manages_the_pin(
    live_identity: LiveIdentity, runner: CliRunner, tmp_path: Path
) -> None:
    card_file = tmp_path / "card.json"
    citizen = live_identity.citizen()
    admin = ["--admin", str(live_identity.admin_file)]
    apps = ["--app", "health", "--app", "transit"]

    _ok(runner.invoke(app, ["new", str(card_file)]))
    fresh = _fields(_ok(runner.invoke(app, ["status", str(card_file)])))
    assert fresh["serial"].startswith("(none yet")
    assert fresh["certificate"] == "(none)"
    csr = _ok(runner.invoke(app, ["csr", str(card_file), "--citizen", citizen]))
    assert csr.startswith("-----BEGIN CERTIFICATE REQUEST-----")

    issued = _fields(
        _ok(
            runner.invoke(
                app,
                ["issue", str(card_file), "--citizen", citizen, *admin, *apps],
            )
        )
    )
    serial = issued["serial"]
    assert issued["status"] == "issued"
    assert issued["applications"] == "health transit"
    assert live_identity.cached_status(serial) == "issued"

    on_card = _fields(_ok(runner.invoke(app, ["status", str(card_file)])))
    assert on_card["serial"] == serial
    assert on_card["certificate_card_serial"] == serial
    assert on_card["holder"] == citizen
    assert on_card["applications"] == "health transit"
    assert on_card["activated"] == "no"

    # The holder chooses the PIN at the desk (hidden prompts, typed twice).
    result = runner.invoke(
        app, ["activate", str(card_file), *admin], input=f"{PIN}\n{PIN}\n{PUK}\n{PUK}\n"
    )
    assert _fields(_ok(result))["status"] == "active"
    assert PIN not in result.output
    assert PUK not in result.output
    assert live_identity.card(serial)["status"] == "active"
    assert live_identity.cached_status(serial) is None
    # Running it again (e.g. after a lost connection) is harmless.
    again = runner.invoke(app, ["activate", str(card_file), *admin])
    assert "already" in _ok(again)

    result = runner.invoke(
        app, ["change-pin", str(card_file)], input=f"{PIN}\n{NEW_PIN}\n{NEW_PIN}\n"
    )
    _ok(result)
    assert NEW_PIN not in result.output
    assert VirtualCard.load(card_file).verify_pin(NEW_PIN)

    for _ in range(3):
        wrong = runner.invoke(app, ["change-pin", str(card_file), "--old", "000000", "--new", PIN])
        assert wrong.exit_code == 1
    assert "blocked" in wrong.stderr
    assert _fields(_ok(runner.invoke(app, ["status", str(card_file)])))["pin_blocked"] == "yes"
    _ok(runner.invoke(app, ["unblock", str(card_file)], input=f"{PUK}\n{PIN}\n{PIN}\n"))
    unblocked = _fields(_ok(runner.invoke(app, ["status", str(card_file)])))
    assert (unblocked["pin_blocked"], unblocked["pin_tries_left"]) == ("no", "3")


def test_refusals_reach_the_desk_with_the_services_reason(
    live_identity: LiveIdentity, runner: CliRunner, tmp_path: Path
) -> None:
    citizen = live_identity.citizen()
    admin = ["--admin", str(live_identity.admin_file)]
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    for path in (first, second):
        _ok(runner.invoke(app, ["new", str(path)]))
    _ok(runner.invoke(app, ["issue", str(first), "--citizen", citizen, *admin]))

    duplicate = runner.invoke(app, ["issue", str(second), "--citizen", citizen, *admin])
    assert duplicate.exit_code == 1
    assert "refused (409)" in duplicate.stderr
    assert "already has live physical card" in duplicate.stderr
    assert VirtualCard.load(second).certificate is None

    unknown = runner.invoke(app, ["issue", str(second), "--citizen", "cz_nobody", *admin])
    assert "refused (404): no citizen has this id" in unknown.stderr
    again = runner.invoke(app, ["issue", str(first), "--citizen", citizen, *admin])
    assert "already holds a certificate" in again.stderr
    bad_pin = runner.invoke(app, ["activate", str(first), "--pin", "12", "--puk", PUK, *admin])
    assert "a PIN is exactly 6 digits" in bad_pin.stderr
    unissued = runner.invoke(app, ["activate", str(second), "--pin", PIN, "--puk", PUK, *admin])
    assert "no certificate yet" in unissued.stderr
    missing = runner.invoke(app, ["status", str(tmp_path / "missing.json")])
    assert missing.exit_code == 1
    assert "no card file" in missing.stderr


def _environment(settings: IdentitySettings) -> dict[str, str]:
    """The settings as the operator's environment would carry them."""
    names = ("environment", "var_dir", "database_url", "database_schema", "redis_url")
    env = {f"ONECARD_{n.upper()}": str(getattr(settings, n)) for n in names if getattr(settings, n)}
    env["ONECARD_REDIS_PREFIX"] = settings.redis_prefix
    for name in settings.secret_fields:
        env[f"ONECARD_{name.upper()}"] = settings.secret(name).get_secret_value()
    return env


def test_the_sweep_persists_expiry_and_rebuilds_the_status_cache(
    live_identity: LiveIdentity, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    citizen = live_identity.citizen()
    admin = ["--admin", str(live_identity.admin_file)]
    card_file = tmp_path / "card.json"
    _ok(runner.invoke(app, ["new", str(card_file)]))
    serial = _fields(
        _ok(runner.invoke(app, ["issue", str(card_file), "--citizen", citizen, *admin]))
    )["serial"]
    _ok(runner.invoke(app, ["activate", str(card_file), "--pin", PIN, "--puk", PUK, *admin]))
    live_identity.sql(
        "UPDATE cards SET not_after = :t WHERE serial = :s",
        t=datetime.now(UTC) - timedelta(minutes=1),
        s=serial,
    )
    for name, value in _environment(live_identity.settings).items():
        monkeypatch.setenv(name, value)

    result = runner.invoke(app, ["sweep"])
    assert "expired 1 card(s)" in _ok(result) + result.stderr
    assert live_identity.card(serial)["status"] == "expired"
    assert live_identity.cached_status(serial) == "expired"
