"""The ledger's checkpoint key (encrypted at rest, created once) and incremental signing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.audit.app import create_app
from services.audit.checkpoint import verify_checkpoint
from services.audit.checkpoints import Checkpointer, load_or_create_key, public_keys
from services.audit.ledger import Ledger
from services.audit.merkle import CompactTree, HashAlgorithm, root
from services.audit.settings import AuditSettings
from services.kit.database import Database
from tests.harness import serve_asgi
from tests.services.audit.test_ledger import record


@pytest.fixture
async def database(make_settings: Callable[..., Any]) -> AsyncIterator[Database]:
    settings = make_settings(AuditSettings)
    async with serve_asgi(create_app(settings)):
        pass  # migrated; the service created its key on start
    db = Database.for_settings(settings)
    yield db
    await db.dispose()


async def test_the_key_is_created_once_even_by_racing_processes(
    make_settings: Callable[..., Any],
) -> None:
    settings = make_settings(AuditSettings, checkpoint_interval=3600)
    secret = SecretStr("a-real-key-encryption-key-for-tests")
    async with serve_asgi(
        create_app(settings.model_copy(update={"checkpoint_key_encryption_key": secret}))
    ):
        pass
    db = Database.for_settings(settings)
    try:
        async with db.engine.begin() as conn:  # as if no process had started yet
            await conn.execute(text("DELETE FROM audit_checkpoint_keys"))
        keys = await asyncio.gather(*(load_or_create_key(db, secret) for _ in range(4)))
        assert len({k.key_id for k in keys}) == 1
        async with db.engine.connect() as conn:
            assert list(await public_keys(conn)) == [keys[0].key_id]
            sealed = await conn.scalar(text("SELECT private_key FROM audit_checkpoint_keys"))
    finally:
        await db.dispose()
    assert sealed.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):  # unreadable without the passphrase
        serialization.load_pem_private_key(sealed.encode(), password=None)


async def test_a_wrong_key_encryption_key_is_refused(database: Database) -> None:
    with pytest.raises(RuntimeError, match="wrong checkpoint_key_encryption_key"):
        await load_or_create_key(database, SecretStr("not-the-key-it-was-sealed-with"))


def test_production_refuses_to_sign_without_a_real_key_encryption_key() -> None:
    settings = AuditSettings(environment="production", checkpoint_key_encryption_key="changeme")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ONECARD_CHECKPOINT_KEY_ENCRYPTION_KEY"):
        settings.checkpoint_key_secret()
    real = AuditSettings(environment="production", checkpoint_key_encryption_key="k3Y-9f2Qx0-long")  # type: ignore[arg-type]
    assert real.checkpoint_key_secret().get_secret_value() == "k3Y-9f2Qx0-long"


async def test_each_checkpoint_extends_the_previous_frontier(
    make_settings: Callable[..., Any],
) -> None:
    settings = make_settings(AuditSettings, checkpoint_interval=3600)
    app = create_app(settings)
    async with serve_asgi(app):
        ledger: Ledger = app.state.ledger
        checkpointer: Checkpointer = app.state.checkpointer
        # The test signs the checkpoints itself: the background one (which signs at start-up)
        # must not take the sizes it expects.
        await checkpointer.stop()
        key = app.state.checkpoint_key.public_key
        leaves: list[bytes] = []
        for batch in (1, 6, 13, 1):
            receipts = await ledger.append_many([record() for _ in range(batch)])
            leaves.extend(r.leaf_hash for r in receipts)
            signed = await checkpointer.checkpoint_once()
            assert signed is not None
            assert verify_checkpoint(signed, key)
            assert signed.checkpoint.size == len(leaves)
            assert signed.checkpoint.root == root(leaves, algorithm=HashAlgorithm.SHA256)
        async with app.state.runtime.db.engine.connect() as conn:
            frontier = await conn.scalar(
                text("SELECT frontier FROM audit_checkpoints WHERE size = :n"), {"n": len(leaves)}
            )
        stored = CompactTree.from_bytes(bytes(frontier))
        assert stored.size == len(leaves)
        assert stored.root() == root(leaves)


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_checkpoints SET size = 9", "DELETE FROM audit_checkpoints"]
)
async def test_checkpoints_cannot_be_changed_or_deleted(
    make_settings: Callable[..., Any], statement: str
) -> None:
    settings = make_settings(AuditSettings, checkpoint_interval=3600)
    app = create_app(settings)
    async with serve_asgi(app):
        await app.state.checkpointer.stop()  # the test signs; see above
        await app.state.ledger.append(record())
        assert await app.state.checkpointer.checkpoint_once() is not None
        with pytest.raises(DBAPIError, match="audit checkpoints are append-only"):
            async with app.state.runtime.db.engine.begin() as conn:
                await conn.execute(text(statement))
