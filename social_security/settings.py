"""Settings of the social_security service (environment variables ``ONECARD_*``)."""

from __future__ import annotations

from typing import ClassVar

from services.kit.settings import ServiceSettings


class SocialSecuritySettings(ServiceSettings):
    service: ClassVar[str] = "social_security"
