"""Settings: where each service's data lives, and secrets that must be real outside development."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import SecretStr, ValidationError

from identity.settings import IdentitySettings
from services.audit.settings import AuditSettings
from services.kit.settings import ServiceSettings, database_per_service, to_async_url


class _WithSecret(ServiceSettings):
    service: ClassVar[str] = "example"
    secret_fields: ClassVar[tuple[str, ...]] = ("signing_secret",)
    signing_secret: SecretStr | None = None


def test_without_a_url_each_service_gets_a_sqlite_file_under_var(tmp_path: Path) -> None:
    settings = IdentitySettings(var_dir=tmp_path)
    assert settings.resolved_database_url() == (
        f"sqlite+aiosqlite:///{tmp_path.resolve()}/data/identity.db"
    )


def test_one_server_url_gives_each_service_its_own_database() -> None:
    settings = IdentitySettings(database_url="postgresql://onecard:pw@db.example:5432/onecard")
    assert settings.resolved_database_url() == (
        "postgresql+asyncpg://onecard:pw@db.example:5432/onecard_identity"
    )


def test_a_service_specific_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONECARD_DATABASE_URL_IDENTITY", "postgresql://h/idp")
    settings = IdentitySettings(database_url="postgresql://h/onecard")
    assert settings.resolved_database_url() == "postgresql+asyncpg://h/idp"


def test_settings_come_from_onecard_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ONECARD_REDIS_URL", "redis://cache:6379/2")
    monkeypatch.setenv("ONECARD_ENVIRONMENT", "production")
    settings = AuditSettings()
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.environment == "production"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///var/x.db", "sqlite+aiosqlite:///var/x.db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_plain_urls_get_the_asyncio_driver(given: str, expected: str) -> None:
    assert to_async_url(given) == expected


def test_a_shared_sqlite_url_becomes_one_file_per_service() -> None:
    assert database_per_service("sqlite:///var/onecard.db", "health") == (
        "sqlite:///var/onecard_health.db"
    )


@pytest.mark.parametrize("placeholder", [None, "", "changethis", "CHANGE-ME", "secret"])
@pytest.mark.parametrize("environment", ["production", "test"])
def test_placeholder_secrets_are_refused_outside_development(
    placeholder: str | None, environment: str
) -> None:
    with pytest.raises(ValidationError, match="ONECARD_SIGNING_SECRET is unset or a placeholder"):
        _WithSecret(environment=environment, signing_secret=placeholder)


def test_placeholder_secrets_are_tolerated_while_developing() -> None:
    assert _WithSecret(environment="development", signing_secret=None).signing_secret is None


def test_a_real_secret_is_accepted_in_production() -> None:
    settings = _WithSecret(environment="production", signing_secret="k3Y-9f2Qx0-long-and-random")
    assert settings.signing_secret is not None


def test_dev_secrets_are_generated_once_kept_private_and_reused(tmp_path: Path) -> None:
    settings = IdentitySettings(var_dir=tmp_path)
    first = settings.dev_secret("blind-index-key")
    second = settings.dev_secret("blind-index-key")
    assert first.get_secret_value() == second.get_secret_value()
    assert len(first.get_secret_value()) >= 40
    assert (tmp_path / "secrets" / "blind-index-key").stat().st_mode & 0o777 == 0o600
    assert settings.dev_secret("other").get_secret_value() != first.get_secret_value()
