"""Settings of the audit service (environment variables ``ONECARD_*``)."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator

from services.audit.merkle import HashAlgorithm
from services.kit.settings import PLACEHOLDER_SECRETS, Environment, ServiceSettings

# Issue 4, item 8: no audit entry younger than 180 days may be purged (the production floor).
MIN_RETENTION_DAYS = 180


class AuditSettings(ServiceSettings):
    service: ClassVar[str] = "audit"

    # Hash of the Merkle tree (RFC 9162 uses SHA-256; SM3, GB/T 32905, is selectable).
    hash_algorithm: HashAlgorithm = HashAlgorithm.SHA256
    # Secret from which HKDF derives the passphrase of the checkpoint-signing key at rest.
    # Deliberately not in ``secret_fields``: only the ledger process that signs needs it, and
    # it refuses to start without a real one outside development and tests
    # (``checkpoint_key_secret``); an auditor running ``onecard audit verify`` reads only
    # public keys and must not have to hold it.
    checkpoint_key_encryption_key: SecretStr | None = None
    # How often the ledger signs a checkpoint when the tree grew (seconds).
    checkpoint_interval: float = Field(default=5.0, gt=0)
    # The checkpoint origin line (C2SP tlog-checkpoint); default: <public_url host>/audit.
    checkpoint_origin: str | None = None
    # Entries younger than this many days cannot be purged (issue 4, item 8; the ledger's
    # retention rule, see services.audit.retention). Never below 180 in production.
    audit_retention_days: int = Field(default=180, ge=1)

    @model_validator(mode="after")
    def _retention_floor(self) -> AuditSettings:
        if (
            self.environment is Environment.PRODUCTION
            and self.audit_retention_days < MIN_RETENTION_DAYS
        ):
            raise ValueError(
                f"ONECARD_AUDIT_RETENTION_DAYS is {self.audit_retention_days}; "
                f"production keeps audit entries at least {MIN_RETENTION_DAYS} days"
            )
        return self

    def checkpoint_key_secret(self) -> SecretStr:
        """The key encryption key; in development and tests one is generated under var/."""
        value = self.checkpoint_key_encryption_key
        raw = value.get_secret_value() if value is not None else ""
        if raw.strip().lower() not in PLACEHOLDER_SECRETS:
            return value  # type: ignore[return-value]  # non-empty, so not None
        if self.environment is Environment.PRODUCTION:
            raise ValueError(
                "ONECARD_CHECKPOINT_KEY_ENCRYPTION_KEY is unset or a placeholder; "
                "set a real secret in production"
            )
        return self.dev_secret("checkpoint_key_encryption_key")

    def origin(self) -> str:
        """The ledger's name in its checkpoints."""
        if self.checkpoint_origin:
            return self.checkpoint_origin
        return f"{urlsplit(self.public_url).netloc or 'onecard'}/audit"
