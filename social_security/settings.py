"""Settings of the social_security service (environment variables ``ONECARD_*``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from services.kit.settings import ServiceSettings


class SocialSecuritySettings(ServiceSettings):
    service: ClassVar[str] = "social_security"

    # Where each service listens, by name (``ONECARD_UPSTREAMS``, set by the launcher as for
    # the gateway): the citizen's card status is the identity service's to tell.
    upstreams: dict[str, str] = Field(default_factory=dict)

    @property
    def identity_url(self) -> str:
        return self.upstreams.get("identity", "http://127.0.0.1:8001").rstrip("/")
