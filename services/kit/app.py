"""The app factory every service is built on.

It gives each service the same operational surface: ``/healthz`` (the process is alive),
``/readyz`` (its database and Redis answer), ``/metrics`` (Prometheus text format), request ids,
JSON logs, problem+json errors, and at start-up its own database created and migrated.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from services.kit import auth
from services.kit import logging as kit_logging
from services.kit import redis as kit_redis
from services.kit.audit import AuditClient, refusal_record
from services.kit.credentials import TOKEN_PATH, ServiceTokens
from services.kit.database import Database
from services.kit.errors import Problem, install_handlers, problem_response
from services.kit.middleware import RequestContextMiddleware
from services.kit.migrations import alembic_config, upgrade
from services.kit.policy_watch import PolicyWatcher
from services.kit.revocation import Revocations
from services.kit.settings import ServiceSettings
from services.kit.tokens import REMEMBERED_TOKENS, JwksSource, TokenVerifier

log = logging.getLogger(__name__)

Hook = Callable[[FastAPI], Awaitable[None]]
HealthCheck = Callable[[Request], Awaitable[dict[str, Any]]]

# A readiness probe must answer quickly even when a dependency hangs.
READY_CHECK_TIMEOUT = 1.5


@dataclass
class Runtime:
    """What a running service holds: its settings and its connections."""

    settings: ServiceSettings
    db: Database | None
    redis: kit_redis.RedisConnection


def freeze_startup_heap() -> None:
    """Keep what start-up built (modules, models, SearchParameter tables, ...) out of the
    garbage collector's full passes for the life of the process (Python's ``gc.freeze``).

    A full pass walks every tracked object: about 100 ms with the FHIR models loaded, a pause
    for every request in flight, and the p99 of a search at concurrency 8 was that pause.
    Objects made later are collected as before. For ``onecard serve`` (one app per process)
    only: tests build many apps in one process, and frozen cycles are never freed.
    """
    gc.collect()  # what start-up already dropped is freed, not frozen
    gc.freeze()


def create_service_app(
    *,
    settings: ServiceSettings,
    title: str,
    description: str = "",
    migrations_dir: Path | None = None,
    routers: Sequence[APIRouter] = (),
    on_startup: Hook | None = None,
    on_shutdown: Hook | None = None,
    healthz: HealthCheck | None = None,
    redis_required: bool = True,
    public_prefix: str | None = None,
    token_audience: str | tuple[str, ...] | None = None,
    audited: bool = True,
) -> FastAPI:
    """Build one service.

    ``migrations_dir`` is None for a service that owns no database. ``healthz`` replaces the
    plain liveness answer (the gateway reports each service there). With ``redis_required``
    false, Redis being down makes the service "degraded" but still ready. ``public_prefix``
    also serves liveness under the service's public path, so it can be checked through the
    gateway (``/identity/healthz``). With ``token_audience`` (a public path prefix such as
    ``/fhir``, or several) the service verifies bearer tokens meant for ``<public_url><prefix>``
    (``services.kit.auth.require_token``); keys come from the identity service's JWKS unless
    ``on_startup`` put a key source of the service's own in ``app.state.token_keys``.
    With ``audited`` (all but the ledger itself) the service holds an audit client
    (``app.state.audit``, :mod:`services.kit.audit`) when ``settings.audit_url`` is set, and
    every refusal it answers (401, 403) is recorded in the ledger.
    """
    service = settings.service

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        kit_logging.configure(service, settings.log_level)
        db = None
        if migrations_dir is not None:
            db = Database.for_settings(settings)
            await db.ensure_exists()
            config = alembic_config(
                service=service,
                migrations_dir=migrations_dir,
                database_url=db.url.render_as_string(hide_password=False),
                connect_args=db.connect_args(),
            )
            await asyncio.to_thread(upgrade, config)
            log.info("database migrated", extra={"database": db.display_url})
        redis = kit_redis.connect(
            url=settings.redis_url, var_dir=settings.var_dir, prefix=settings.redis_prefix
        )
        app.state.runtime = Runtime(settings=settings, db=db, redis=redis)
        jwks: JwksSource | None = None
        # Before on_startup, which may replace it (tests give it a token source of their own).
        watcher = _install_audit(app, settings) if audited else None
        try:
            if on_startup is not None:
                await on_startup(app)
            if token_audience is not None:
                keys = getattr(app.state, "token_keys", None)
                if keys is None:
                    keys = jwks = JwksSource(settings.jwks_url)
                verifier = TokenVerifier(
                    issuer=settings.public_url,
                    audience=[
                        settings.public_url.rstrip("/") + prefix
                        for prefix in (
                            (token_audience,) if isinstance(token_audience, str) else token_audience
                        )
                    ],
                    keys=keys,
                    leeway=settings.token_leeway,
                    remember=REMEMBERED_TOKENS,
                )
                auth.install(app, verifier, Revocations(redis, leeway=settings.token_leeway))
            if watcher is not None:
                watcher.start()
            if getattr(app.state, "freeze_startup_heap", False):
                freeze_startup_heap()
            log.info("service started", extra={"redis": redis.display_url})
            yield
        finally:
            if on_shutdown is not None:
                await on_shutdown(app)
            await _uninstall_audit(app, watcher)
            if jwks is not None:
                await jwks.aclose()
            await redis.close()
            if db is not None:
                await db.dispose()

    app = FastAPI(
        title=title,
        description=description,
        version=_version(),
        lifespan=lifespan,
    )
    app.state.service = service
    install_handlers(app)
    app.include_router(
        _operations_router(
            service, healthz=healthz, redis_required=redis_required, public_prefix=public_prefix
        )
    )
    for router in routers:
        app.include_router(router)
    app.add_middleware(RequestContextMiddleware, service=service)
    return app


def _install_audit(app: FastAPI, settings: ServiceSettings) -> PolicyWatcher | None:
    """The audit client, the refusal hook and the policy watcher of an audited service."""
    app.state.on_refused = _record_refusal
    app.state.audit = _audit_client(settings, settings.audit_url) if settings.audit_url else None
    if settings.audit_url is None:
        return None
    return PolicyWatcher(
        app, ledger_url=settings.audit_url, interval=settings.policy_refresh_seconds
    )


async def _uninstall_audit(app: FastAPI, watcher: PolicyWatcher | None) -> None:
    if watcher is not None:
        await watcher.aclose()
    audit: AuditClient | None = getattr(app.state, "audit", None)
    if audit is not None:
        await audit.aclose()


def _audit_client(settings: ServiceSettings, ledger_url: str) -> AuditClient:
    tokens = ServiceTokens(
        credentials_path=settings.audit_credentials_path(),
        token_url=settings.token_url,
        audience=settings.public_url.rstrip("/") + TOKEN_PATH,
        scope="audit.append",
        timeout=settings.audit_timeout,
    )
    return AuditClient(
        ledger_url=ledger_url,
        tokens=tokens,
        timeout=settings.audit_timeout,
        max_in_flight=settings.audit_max_in_flight,
    )


def _record_refusal(request: Request, problem: Problem) -> None:
    audit: AuditClient | None = getattr(request.app.state, "audit", None)
    if audit is not None:
        audit.record_later(refusal_record(request, problem))


def _operations_router(
    service: str, *, healthz: HealthCheck | None, redis_required: bool, public_prefix: str | None
) -> APIRouter:
    router = APIRouter(tags=["operations"])

    async def alive(request: Request) -> dict[str, Any]:
        if healthz is not None:
            return await healthz(request)
        return {"status": "ok", "service": service}

    router.add_api_route("/healthz", alive, methods=["GET"], summary="The process is alive")
    if public_prefix:
        router.add_api_route(
            f"{public_prefix}/healthz",
            alive,
            methods=["GET"],
            summary="The process is alive (reachable through the gateway)",
        )

    @router.get(
        "/readyz",
        summary="The service's database and Redis answer",
        responses={503: {"description": "A dependency does not answer (problem+json)"}},
    )
    async def readyz(request: Request) -> Any:
        runtime: Runtime = app_runtime(request)
        checks: dict[str, str] = {}
        if runtime.db is not None:
            checks["database"] = await _check(runtime.db.ping())
        checks["redis"] = await _check(runtime.redis.ping())
        required = {k: v for k, v in checks.items() if k != "redis" or redis_required}
        if all(v == "ok" for v in required.values()):
            status = "ready" if checks["redis"] == "ok" else "degraded"
            return {"status": status, "service": service, "checks": checks}
        failing = ", ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
        return problem_response(
            Problem(503, f"{service} is not ready ({failing})", checks=checks),
            instance="/readyz",
        )

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def app_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _check(probe: Awaitable[Any]) -> str:
    try:
        await asyncio.wait_for(probe, READY_CHECK_TIMEOUT)
    except TimeoutError:
        return f"no answer within {READY_CHECK_TIMEOUT}s"
    except Exception as exc:  # any failure of a dependency is a "not ready", with its reason
        return f"{type(exc).__name__}: {exc}"[:200]
    return "ok"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onecard")
    except PackageNotFoundError:
        return "0.0.0"
