"""Settings of the health service (environment variables ``ONECARD_*``)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from pydantic import Field

from services.kit.settings import ServiceSettings


class HealthSettings(ServiceSettings):
    service: ClassVar[str] = "health"
    # Searches are prepared statements (asyncpg); after five runs PostgreSQL may switch one to
    # a generic plan, blind to the parameters' values, which for a patient + code + date
    # search on a million resources is several times slower than the plan for the values
    # (measured: 20 ms, then 120-150 ms from the sixth search on). Plan every execution for
    # its values (PostgreSQL docs, runtime-config-query: plan_cache_mode).
    postgres_server_settings: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"plan_cache_mode": "force_custom_plan"}
    )

    # How long a break-glass grant lasts at most (minutes); a clinician may ask for less.
    break_glass_minutes: int = Field(default=240, ge=1, le=24 * 60)

    # How long the files of a finished Bulk Data export stay downloadable (seconds).
    bulk_retention_seconds: int = Field(default=24 * 3600, ge=1)
