"""The social_security service's ASGI app (``uvicorn --factory social_security.app:create_app``).

One service, two public prefixes (DESIGN.md "Public entry"): ``/insurance`` (medical insurance:
coverage, claims, settlement at the counter) and ``/social-security`` (the citizen's lookups).
It accepts tokens meant for either.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.kit.app import create_service_app
from social_security.settings import SocialSecuritySettings


def create_app(settings: SocialSecuritySettings | None = None) -> FastAPI:
    return create_service_app(
        settings=settings or SocialSecuritySettings(),
        title="onecard social security",
        description="Medical-insurance enrolment, claims and settlement; social-security lookups.",
        migrations_dir=Path(__file__).parent / "migrations",
        public_prefix="/social-security",
        token_audience=("/insurance", "/social-security"),
    )
