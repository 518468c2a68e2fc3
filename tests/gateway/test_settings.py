"""Gateway settings an operator may get wrong are refused at start-up, saying what is wrong."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings
from services.kit import topology


def test_per_service_timeouts_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONECARD_UPSTREAM_TIMEOUTS", '{"health": 120}')
    settings = GatewaySettings()
    assert settings.timeout_for(topology.by_name("health")) == 120
    # Services not named keep the topology's per-route default.
    assert (
        settings.timeout_for(topology.by_name("identity")) == topology.by_name("identity").timeout
    )


@pytest.mark.parametrize(
    ("timeouts", "complaint"),
    [({"helth": 5.0}, "unknown services: ['helth']"), ({"audit": 0.0}, "positive seconds")],
)
def test_a_timeout_for_an_unknown_service_or_of_no_time_is_refused(
    timeouts: dict[str, float], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(complaint)):
        GatewaySettings(upstream_timeouts=timeouts)


def test_an_upstream_for_an_unknown_service_is_refused() -> None:
    with pytest.raises(ValidationError, match="unknown services"):
        GatewaySettings(upstreams={"billing": "http://127.0.0.1:9000"})
