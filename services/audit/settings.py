"""Settings of the audit service (environment variables ``ONECARD_*``)."""

from __future__ import annotations

from typing import ClassVar

from services.audit.merkle import HashAlgorithm
from services.kit.settings import ServiceSettings


class AuditSettings(ServiceSettings):
    service: ClassVar[str] = "audit"

    # Hash of the Merkle tree (RFC 9162 uses SHA-256; SM3, GB/T 32905, is selectable).
    hash_algorithm: HashAlgorithm = HashAlgorithm.SHA256
