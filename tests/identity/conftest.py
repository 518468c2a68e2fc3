"""Identity settings for tests: real random secrets (the "test" environment refuses unset ones)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from identity.settings import IdentitySettings


def random_secret() -> str:
    """A fresh base64url secret of 32 random bytes, as an operator would generate one."""
    return secrets.token_urlsafe(32)


@pytest.fixture
def make_identity_settings(make_settings: Callable[..., Any]) -> Callable[..., IdentitySettings]:
    """IdentitySettings on this test's backend with secrets of their own; overrides win."""

    def make(**overrides: Any) -> IdentitySettings:
        values: dict[str, Any] = {
            "data_key": random_secret(),
            "blind_index_key": random_secret(),
            "key_encryption_key": random_secret(),
        }
        values.update(overrides)
        settings: IdentitySettings = make_settings(IdentitySettings, **values)
        return settings

    return make
