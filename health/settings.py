"""Settings of the health service (environment variables ``ONECARD_*``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from services.kit.settings import ServiceSettings


class HealthSettings(ServiceSettings):
    service: ClassVar[str] = "health"

    # How long a break-glass grant lasts at most (minutes); a clinician may ask for less.
    break_glass_minutes: int = Field(default=240, ge=1, le=24 * 60)

    # How long the files of a finished Bulk Data export stay downloadable (seconds).
    bulk_retention_seconds: int = Field(default=24 * 3600, ge=1)
