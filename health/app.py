"""The health service's ASGI app (``uvicorn --factory health.app:create_app``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from health.breakglass_routes import router as breakglass_router
from health.bulk.exporter import shutdown as bulk_shutdown
from health.bulk.routes import router as bulk_router
from health.fhir.capability import router as capability_router
from health.fhir.operations import router as operations_router
from health.fhir.outcome import render_operation_outcome
from health.search.routes import router as search_router
from health.settings import HealthSettings
from health.smart import router as smart_router
from health.store.routes import router as store_router
from services.kit.app import create_service_app
from services.kit.errors import register_renderer


def create_app(settings: HealthSettings | None = None) -> FastAPI:
    app = create_service_app(
        settings=settings or HealthSettings(),
        title="onecard health record store",
        description="FHIR R4 electronic health record store.",
        migrations_dir=Path(__file__).parent / "migrations",
        # The store's routes come before search's (GET /fhir/{type}): /fhir/_history and
        # /fhir/metadata belong to the store; the path convertors also keep them apart.
        routers=[
            smart_router,
            capability_router,
            bulk_router,
            store_router,
            breakglass_router,
            search_router,
            operations_router,
        ],
        on_shutdown=bulk_shutdown,
        token_audience="/fhir",  # noqa: S106 - an audience path, not a secret
    )
    # DESIGN.md "Errors": FHIR routes answer with OperationOutcome (operationoutcome.html).
    register_renderer(app, "/fhir", render_operation_outcome)
    return app
