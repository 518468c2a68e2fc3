"""Settings of the audit service (environment variables ``ONECARD_*``)."""

from __future__ import annotations

from typing import ClassVar

from services.kit.settings import ServiceSettings


class AuditSettings(ServiceSettings):
    service: ClassVar[str] = "audit"
