"""Start-up of the token server: keys created if missing, the ring loaded and kept fresh."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI

from identity.pki.keystore import derive_passphrase
from identity.settings import IdentitySettings
from identity.tokens import keys
from identity.tokens.issuer import TokenIssuer
from services.kit.app import Runtime
from services.kit.database import Database

log = logging.getLogger(__name__)

# HKDF label of the token-signing key family (the CA keys have their own).
TOKEN_KEY_CONTEXT = b"onecard identity token-signing keys v1"
# How often each identity process rereads the ring, so a rotation by the command line reaches
# it. Harmless delay: the new current key was already published as "next".
RELOAD_SECONDS = 10.0


def passphrase(settings: IdentitySettings) -> bytes:
    return derive_passphrase(settings.secret("key_encryption_key"), context=TOKEN_KEY_CONTEXT)


async def load_ring(
    db: Database, settings: IdentitySettings, *, previous: keys.KeyRing | None = None
) -> keys.KeyRing:
    """The ring from the database; at start-up (no ``previous``) keys are created if missing."""
    secret = passphrase(settings)
    if previous is None:
        async with db.sessionmaker() as session, session.begin():
            await keys.ensure_keys(session=session, passphrase=secret)
    async with db.sessionmaker() as session:
        return await keys.load(session=session, passphrase=secret, previous=previous)


async def install_tokens(app: FastAPI) -> TokenIssuer:
    """Start-up hook: the issuer on ``app.state.token_issuer`` and its keys for the kit's auth."""
    runtime: Runtime = app.state.runtime
    settings = runtime.settings
    if not isinstance(settings, IdentitySettings) or runtime.db is None:
        raise RuntimeError("the token server runs in the identity service, with its database")
    db = runtime.db
    issuer = TokenIssuer(
        issuer=settings.public_url.rstrip("/"),
        ring=await load_ring(db, settings),
        lifetime=settings.access_token_seconds,
    )
    app.state.token_issuer = issuer
    app.state.token_keys = issuer.keys  # the kit verifies this service's own tokens with them

    async def keep_fresh() -> None:
        while True:
            await asyncio.sleep(RELOAD_SECONDS)
            try:
                issuer.use(await load_ring(db, settings, previous=issuer.ring))
            except Exception:  # a failed reload keeps the ring we have; try again later
                log.exception("signing key ring reload failed")

    app.state.token_reloader = asyncio.create_task(keep_fresh())
    return issuer


async def uninstall_tokens(app: FastAPI) -> None:
    task: asyncio.Task[None] | None = getattr(app.state, "token_reloader", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
