"""The demo province: what a newcomer does after ``make run``, as a test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from identity.demo import DEMO_PIN, seed
from identity.simulators.card import VirtualCard
from identity.simulators.terminal import VirtualTerminal, tap
from services.kit import topology
from services.kit.credentials import ClientCredentials
from services.launcher import Launcher
from tests.harness import free_port_block

pytestmark = pytest.mark.system


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Launcher]:
    launcher = Launcher(port=free_port_block(len(topology.ALL)), var_dir=tmp_path / "var")
    try:
        launcher.start(ready_timeout=60)
        # The seeder reads its settings from the environment the services got.
        for name, value in launcher.environment().items():
            if name.startswith("ONECARD_"):
                monkeypatch.setenv(name, value)
        yield launcher
    finally:
        launcher.stop()


async def test_a_demo_card_taps_at_a_demo_terminal_through_the_gateway(
    platform: Launcher,
) -> None:
    base_url = platform.children["gateway"].url
    hints = await seed(base_url=base_url, var_dir=platform.var_dir)
    demo = platform.var_dir / "demo"
    assert any("onecard terminal tap" in line for line in hints)
    assert (demo / "terminals" / "registration-desk.json").stat().st_mode & 0o777 == 0o600

    terminal = VirtualTerminal(
        ClientCredentials.load(demo / "terminals" / "registration-desk.json")
    )
    card = VirtualCard.load(demo / "cards" / "zhang-wei.card")
    async with httpx.AsyncClient(base_url=base_url) as http:
        with_pin = await tap(http, terminal=terminal, card=card, pin=DEMO_PIN)
        bus = VirtualTerminal(ClientCredentials.load(demo / "terminals" / "bus-12.json"))
        card_alone = await tap(
            http, terminal=bus, card=VirtualCard.load(demo / "cards" / "li-na.card")
        )
        hospital = ClientCredentials.load(demo / "hospital.json")
        assert await hospital.fetch_token(http)

    assert with_pin.claims["acr"] == "2"
    assert with_pin.claims["act"]["purpose"] == "registration_desk"
    assert with_pin.claims["card"] == card.serial
    assert card_alone.claims["acr"] == "1"
    assert card_alone.claims["scope"] == "transit.ride"

    # Seeding again changes nothing: the province is seeded once.
    before = (demo / "README.txt").read_text()
    await seed(base_url=base_url, var_dir=platform.var_dir)
    assert (demo / "README.txt").read_text() == before
    # The national ID numbers it used appear in no file a newcomer is handed.
    for path in demo.rglob("*"):
        if path.is_file():
            assert "330106197803140" not in path.read_text(errors="replace")
