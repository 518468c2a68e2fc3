"""The social_security service's ASGI app (``uvicorn --factory social_security.app:create_app``).

One service, two public prefixes (DESIGN.md "Public entry"): ``/insurance`` (medical insurance:
settlement at the counter, FHIR Claim/$submit, coverage, the catalogue) and
``/social-security`` (the citizen's lookups). It accepts tokens meant for either.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.kit.app import create_service_app
from services.kit.errors import register_renderer
from social_security.benefits.routes import identity_client
from social_security.benefits.routes import router as benefits_router
from social_security.claims.routes import router as settlement_router
from social_security.fhir.outcome import render_operation_outcome
from social_security.fhir.routes import FHIR_BASE
from social_security.fhir.routes import router as fhir_router
from social_security.reference_data import install_defaults
from social_security.settings import SocialSecuritySettings


async def _on_shutdown(app: FastAPI) -> None:
    http = getattr(app.state, "identity_http", None)
    if http is not None:
        await http.aclose()


def create_app(settings: SocialSecuritySettings | None = None) -> FastAPI:
    settings = settings or SocialSecuritySettings()

    async def on_startup(app: FastAPI) -> None:
        await install_defaults(app.state.runtime.db)
        app.state.identity_http = identity_client(settings)

    app = create_service_app(
        settings=settings,
        title="onecard social security",
        description=(
            "Medical insurance: one-stop settlement at the hospital counter with the card "
            "(plain JSON and FHIR Claim/$submit), coverage, the drug and item catalogue; "
            "the citizen's social-security lookups."
        ),
        migrations_dir=Path(__file__).parent / "migrations",
        routers=[settlement_router, fhir_router, benefits_router],
        on_startup=on_startup,
        on_shutdown=_on_shutdown,
        public_prefix="/social-security",
        token_audience=("/insurance", "/social-security"),
    )
    # DESIGN.md "Errors": the FHIR routes answer with OperationOutcome (operationoutcome.html).
    register_renderer(app, FHIR_BASE, render_operation_outcome)
    return app
