"""Settings of the identity service (environment variables ``ONECARD_*``)."""

from __future__ import annotations

from typing import ClassVar

from services.kit.settings import ServiceSettings


class IdentitySettings(ServiceSettings):
    service: ClassVar[str] = "identity"
