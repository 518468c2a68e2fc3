"""The identity service's ASGI app (``uvicorn --factory identity.app:create_app``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from identity.cards.routes import router as cards_router
from identity.cards.upkeep import install_card_upkeep, uninstall_card_upkeep
from identity.citizens.routes import load_crypto
from identity.citizens.routes import router as citizens_router
from identity.clients.platform import provision_service_clients
from identity.clients.routes import router as clients_router
from identity.ecard.routes import router as ecard_router
from identity.pki.routes import install_pki
from identity.pki.routes import router as pki_router
from identity.sessions.routes import router as app_sessions_router
from identity.settings import IdentitySettings
from identity.terminals.routes import install_terminals
from identity.terminals.routes import registry as terminal_registry_router
from identity.terminals.routes import router as terminal_router
from identity.tokens.routes import router as tokens_router
from identity.tokens.setup import install_tokens, uninstall_tokens
from services.kit.app import create_service_app
from services.kit.settings import Environment


async def start(app: FastAPI) -> None:
    settings: IdentitySettings = app.state.runtime.settings
    if settings.environment is Environment.DEVELOPMENT and settings.provision_service_clients:
        await provision_service_clients(
            app.state.runtime.db,
            credentials_dir=settings.var_dir / "credentials",
            base_url=settings.public_url,
        )
    await load_crypto(app)
    await install_pki(app)
    await install_tokens(app)
    await install_terminals(app)  # after the PKI and the token server it builds on
    await install_card_upkeep(app)


async def stop(app: FastAPI) -> None:
    await uninstall_card_upkeep(app)
    await uninstall_tokens(app)


def create_app(settings: IdentitySettings | None = None) -> FastAPI:
    return create_service_app(
        settings=settings or IdentitySettings(),
        title="onecard identity",
        description="Citizens, the card PKI and card lifecycle, terminals and tokens.",
        migrations_dir=Path(__file__).parent / "migrations",
        routers=[
            tokens_router,
            citizens_router,
            clients_router,
            pki_router,
            cards_router,
            terminal_registry_router,
            terminal_router,
            app_sessions_router,
            ecard_router,
        ],
        on_startup=start,
        on_shutdown=stop,
        public_prefix="/identity",
        token_audience="/identity",  # noqa: S106 - an audience path, not a secret
    )
