"""Cards, terminals and a movable clock: the fixtures of the terminal tests, shared here."""

from __future__ import annotations

from tests.identity.terminals.conftest import taps

__all__ = ["taps"]
