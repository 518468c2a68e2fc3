"""Settings shared by every service (12-factor: environment variables with the ONECARD_ prefix).

Each service subclasses :class:`ServiceSettings` and sets ``service`` (its topology name). The
database URL is resolved per service: ``ONECARD_DATABASE_URL_<SERVICE>`` wins; otherwise one
shared ``ONECARD_DATABASE_URL`` names a server on which each service gets its own database
(``<db>_<service>``); otherwise a SQLite file under ``var/`` (the zero-install default).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from services.kit.protection import PolicyOverride

# Values that must never protect anything outside a developer's machine.
PLACEHOLDER_SECRETS = frozenset({"", "changethis", "change-me", "changeme", "secret", "password"})


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class ServiceSettings(BaseSettings):
    """What every onecard process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="ONECARD_", extra="ignore", frozen=True)

    service: ClassVar[str] = "service"
    # PostgreSQL run-time parameters this service's connections are opened with (none here;
    # a service sets its own, e.g. the health store's plan_cache_mode).
    postgres_server_settings: ClassVar[Mapping[str, str]] = MappingProxyType({})
    # Names of SecretStr fields that must be set to a real value outside development.
    secret_fields: ClassVar[tuple[str, ...]] = ()

    environment: Environment = Environment.DEVELOPMENT
    var_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = 0
    log_level: str = "INFO"
    database_url: str | None = None
    # PostgreSQL schema for this service's tables (created if missing); None is the server's
    # default search path. Lets several environments, or parallel tests, share one database.
    database_schema: str | None = None
    redis_url: str | None = None
    # Namespaces every Redis key, so environments (and parallel test runs) can share a server.
    # Every service of one platform must share it: revocations written by identity are read
    # by all.
    redis_prefix: str = "onecard:"
    # The platform's public base URL (the gateway): the token issuer (RFC 9068 ``iss``) and
    # the base of every audience (``<public_url>/fhir`` ...).
    public_url: str = "http://127.0.0.1:8000"
    # Where services fetch the identity service's JWKS; by default its own port, not through
    # the gateway, so verification does not depend on the gateway being up.
    jwks_url: str = "http://127.0.0.1:8001/.well-known/jwks.json"
    # Clock skew tolerated on exp, nbf and iat (RFC 7519 section 4.1.4).
    token_leeway: float = 10.0
    # An operator's changes to the graded-protection policy (services.kit.protection), JSON:
    # '{"rules": [{"prefix": "/fhir/Organization", "level": 2, "methods": ["GET"]}],
    #   "fhir_types": {"Observation": 4}, "labels": {"http://...|CODE": 4}}'; validated at
    # start-up (an unknown level or a malformed prefix stops the process with the reason).
    protection_policy: PolicyOverride | None = None
    # The audit ledger (issue 4), reached directly, not through the gateway. None turns the
    # audit client off: accesses are then only logged (``audit.local``), which is refused in
    # production.
    audit_url: str | None = "http://127.0.0.1:8004"
    # How often the policy the security administrator set in the ledger is fetched (seconds).
    policy_refresh_seconds: float = 5.0
    # How long a level-3 request waits for the ledger's receipt before it is refused (503).
    audit_timeout: float = 2.0
    # Submissions to the ledger in flight at once. One: what queues meanwhile leaves together
    # in the next (group commit); measured on the settlement benchmark, the ledger's CPU per
    # settlement halved (5 -> 2.5 ms) against four in flight, for the same latency alone.
    audit_max_in_flight: int = Field(default=1, ge=1, le=16)
    # This service's platform credentials (a registered client allowed ``audit.append``);
    # default ``<var_dir>/credentials/<service>.json``, provisioned by identity in development.
    audit_credentials: Path | None = None
    # The identity service's token endpoint, reached directly.
    token_url: str = "http://127.0.0.1:8001/identity/oauth2/token"  # noqa: S105 - a URL

    @model_validator(mode="after")
    def _check_audit(self) -> ServiceSettings:
        if self.environment is Environment.PRODUCTION and self.audit_url is None:
            raise ValueError("ONECARD_AUDIT_URL must name the audit ledger in production")
        return self

    def audit_credentials_path(self) -> Path:
        return self.audit_credentials or self.var_dir / "credentials" / f"{self.service}.json"

    @model_validator(mode="after")
    def _check_placeholder_secrets(self) -> ServiceSettings:
        # After the full-stack-fastapi-template's _check_default_secret: a placeholder secret is
        # tolerated while developing, refused anywhere else.
        if self.environment is Environment.DEVELOPMENT:
            return self
        for name in self.secret_fields:
            value = getattr(self, name)
            raw = value.get_secret_value() if isinstance(value, SecretStr) else value
            if raw is None or raw.strip().lower() in PLACEHOLDER_SECRETS:
                env = f"ONECARD_{name.upper()}"
                raise ValueError(
                    f"{env} is unset or a placeholder; set a real secret in {self.environment}"
                )
        return self

    def resolved_database_url(self) -> str:
        """The SQLAlchemy async URL of this service's own database."""
        own = os.environ.get(f"ONECARD_DATABASE_URL_{self.service.upper()}")
        if own:
            return to_async_url(own)
        if self.database_url:
            return to_async_url(database_per_service(self.database_url, self.service))
        return f"sqlite+aiosqlite:///{self.var_dir.resolve() / 'data' / f'{self.service}.db'}"

    def dev_secret(self, name: str) -> SecretStr:
        """A development secret generated on first use and kept under var/ (never committed)."""
        path = self.var_dir / "secrets" / name
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return SecretStr(path.read_text().strip())
        value = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return SecretStr(value)


def to_async_url(url: str) -> str:
    """Pick the asyncio driver for a plain ``postgresql://`` or ``sqlite://`` URL."""
    parsed = make_url(url)
    driver = {
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
        "sqlite": "sqlite+aiosqlite",
    }.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def database_per_service(url: str, service: str) -> str:
    """``postgresql://h/onecard`` -> ``postgresql://h/onecard_identity`` (one DB per service)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        base = Path(parsed.database or "onecard.db")
        return parsed.set(
            database=str(base.with_name(f"{base.stem}_{service}{base.suffix}"))
        ).render_as_string(hide_password=False)
    return parsed.set(database=f"{parsed.database or 'onecard'}_{service}").render_as_string(
        hide_password=False
    )
