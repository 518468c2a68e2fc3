"""Settings of the health service (environment variables ``ONECARD_*``)."""

from __future__ import annotations

from typing import ClassVar

from services.kit.settings import ServiceSettings


class HealthSettings(ServiceSettings):
    service: ClassVar[str] = "health"
