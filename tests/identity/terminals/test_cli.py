"""``onecard terminal register`` and ``onecard terminal tap`` against a real identity server.

The command line runs its own event loop (``asyncio.run``), so the identity app runs on a real
port in a thread with a loop of its own; setting up cards runs on that loop too, because the
app's database and Redis connections belong to it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from typer.testing import CliRunner

from identity.app import create_app
from identity.citizens.service import new_pseudonym
from identity.clients.bootstrap import add_client
from identity.clients.models import ClientKind
from identity.settings import IdentitySettings
from identity.simulators.card import VirtualCard
from identity.terminals.cli import app as terminal_cli
from tests.harness import free_port
from tests.identity.terminals.conftest import PIN, PUK

T = TypeVar("T")


class IdentityServer:
    """The identity app served by uvicorn on its own loop, in a thread."""

    def __init__(self, settings: IdentitySettings, port: int) -> None:
        self.app = create_app(settings)
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=port, log_config=None, loop="asyncio")
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> IdentityServer:
        self.thread.start()
        self.task = asyncio.run_coroutine_threadsafe(self.server.serve(), self.loop)
        deadline = self.loop.time() + 20
        while not self.server.started:
            if self.task.done() or self.loop.time() > deadline:
                raise RuntimeError("identity server did not start")
            threading.Event().wait(0.02)
        return self

    def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout=30)

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.task.result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def server(make_identity_settings: Callable[..., IdentitySettings]) -> Iterator[IdentityServer]:
    port = free_port()
    settings = make_identity_settings(public_url=f"http://127.0.0.1:{port}")
    with IdentityServer(settings, port) as running:
        yield running


def _card(server: IdentityServer, folder: Path) -> Path:
    path = folder / "card.json"
    card = VirtualCard.create(path, "CLI-0001")
    card.activate(PIN, PUK)

    async def certify() -> str:
        pseudonym = new_pseudonym()
        async with server.app.state.runtime.db.unit_of_work() as session:
            row = await server.app.state.pki.issue_card_certificate(
                card.csr(pseudonym),
                session=session,
                pseudonym=pseudonym,
                card_serial=card.serial,
                applications=["health", "medical_insurance"],
                not_after=datetime.now(UTC) + timedelta(days=365),
            )
        return row.pem

    card.install_certificate(server.run(certify))
    return path


def test_register_then_tap_with_the_pin(server: IdentityServer, tmp_path: Path) -> None:
    settings = server.app.state.runtime.settings

    async def admin() -> Any:
        return await add_client(
            server.app.state.runtime.db,
            name="terminal administrator",
            kind=ClientKind.ADMIN,
            scopes=["terminal.manage"],
            base_url=settings.public_url,
        )

    admin_file = tmp_path / "admin.json"
    server.run(admin).save(admin_file)
    terminal_file = tmp_path / "desk.json"
    runner = CliRunner()
    registered = runner.invoke(
        terminal_cli,
        [
            "register",
            "--admin",
            str(admin_file),
            "--facility",
            "Provincial People's Hospital",
            "--purpose",
            "registration_desk",
            "--out",
            str(terminal_file),
        ],
    )
    assert registered.exit_code == 0, registered.output
    assert terminal_file.with_suffix(".pem").read_text().startswith("-----BEGIN CERTIFICATE")
    assert oct(terminal_file.stat().st_mode & 0o777) == "0o600"

    card_file = _card(server, tmp_path)
    tapped = runner.invoke(
        terminal_cli,
        ["tap", "--terminal", str(terminal_file), "--card", str(card_file), "--pin"],
        input=PIN + "\n",
    )
    assert tapped.exit_code == 0, tapped.output
    claims = json.loads(tapped.stdout[tapped.stdout.index("{") :])
    assert claims["acr"] == "2"
    assert claims["card"] == "CLI-0001"
    assert claims["act"]["purpose"] == "registration_desk"
    assert PIN not in tapped.output  # asked hidden, never printed
    assert "eyJ" not in tapped.stdout  # the token itself only with --show-token

    wrong = runner.invoke(
        terminal_cli,
        ["tap", "--terminal", str(terminal_file), "--card", str(card_file), "--pin"],
        input="000000\n",
    )
    assert wrong.exit_code == 1
    assert "wrong PIN" in wrong.output
