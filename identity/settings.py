"""Settings of the identity service (environment variables ``ONECARD_*``)."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from pydantic import Field, SecretStr

from services.kit.settings import Environment, ServiceSettings


class FieldCipher(StrEnum):
    """Cipher for personal data encrypted at rest (national ID numbers)."""

    AES_GCM = "aes-256-gcm"
    SM4_GCM = "sm4-gcm"  # GB/T 32907-2016 block cipher in GCM mode (GB/T 36624)


class IdentitySettings(ServiceSettings):
    service: ClassVar[str] = "identity"
    secret_fields: ClassVar[tuple[str, ...]] = (
        "data_key",
        "blind_index_key",
        "key_encryption_key",
    )

    # Base64url key (at least 32 bytes) from which HKDF derives the keys that encrypt national ID
    # numbers at rest (AES-256-GCM, or SM4-GCM with a derived 16-byte key).
    data_key: SecretStr | None = None
    field_cipher: FieldCipher = FieldCipher.AES_GCM
    # Base64url key of the HMAC-SHA256 blind index that finds a citizen by ID number.
    blind_index_key: SecretStr | None = None
    # Passphrase that encrypts CA and token-signing private keys at rest (PKCS#8, scrypt).
    key_encryption_key: SecretStr | None = None
    # 3-digit region code in the card serials this province issues (C<region><9 digits><check>).
    card_region: str = Field(default="000", pattern=r"^[0-9]{3}$")
    # Access-token lifetime; DESIGN.md caps it at 300 s.
    access_token_seconds: int = 300
    # In development, register the platform services' own clients at start-up and write their
    # credentials under <var_dir>/credentials/ (identity.clients.platform).
    provision_service_clients: bool = True

    def secret(self, name: str) -> SecretStr:
        """A secret setting; in development an unset one is generated once under var/."""
        value: SecretStr | None = getattr(self, name)
        if value is not None and value.get_secret_value():
            return value
        if self.environment is Environment.PRODUCTION:
            # Unreachable past the validator; kept so a refactor cannot silently weaken it.
            raise RuntimeError(f"ONECARD_{name.upper()} must be set in production")
        return self.dev_secret(name)
