"""Checkpoints and proofs over HTTP: what an app needs to verify a citizen's entry offline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from sqlalchemy import text

import services.audit
from services.audit.app import start as start_ledger
from services.audit.app import stop as stop_ledger
from services.audit.checkpoint import SignedCheckpoint, key_id_for, verify_checkpoint
from services.audit.checkpoints import Checkpointer
from services.audit.merkle import HashAlgorithm, leaf_hash, verify_consistency, verify_inclusion
from services.audit.routes import router
from services.audit.settings import AuditSettings
from services.kit.app import create_service_app
from services.kit.tokens import KeySet, StaticKeySource
from tests.harness import serve_asgi
from tests.services.audit.test_ledger import record
from tests.services.audit.test_routes import ISSUER, KEY, token


def appender() -> dict[str, str]:
    # Fresh for each request: a token made at import would expire in a long test run.
    return token(sub="svc_health", scope="audit.append")


def auditor() -> dict[str, str]:
    return token(sub="adm_auditor", scope="audit.read")


@dataclass
class Ledger:
    http: httpx.AsyncClient
    app: FastAPI

    async def append(self, *citizens: str) -> list[int]:
        body = {"entries": [record(citizen=c).model_dump(mode="json") for c in citizens]}
        response = await self.http.post("/audit/entries", json=body, headers=appender())
        assert response.status_code == 201, response.text
        return [r["seq"] for r in response.json()["receipts"]]

    async def checkpoint(self) -> int:
        checkpointer: Checkpointer = self.app.state.checkpointer
        signed = await checkpointer.checkpoint_once()
        assert signed is not None
        return signed.checkpoint.size


def _app(settings: AuditSettings) -> FastAPI:
    async def start(app: FastAPI) -> None:
        await start_ledger(app)
        app.state.token_keys = StaticKeySource(KeySet({"kt": KEY.public_key()}))

    return create_service_app(
        settings=settings,
        title="audit under test",
        migrations_dir=Path(services.audit.__file__).parent / "migrations",
        routers=[router],
        on_startup=start,
        on_shutdown=stop_ledger,
        token_audience="/audit",
    )


@pytest.fixture
async def ledger(make_settings: Callable[..., Any]) -> AsyncIterator[Ledger]:
    app = _app(make_settings(AuditSettings, public_url=ISSUER, checkpoint_interval=3600))
    async with serve_asgi(app) as http:
        # The tests sign checkpoints themselves: the background loop's start-up signing, if
        # it ran late, would take the tree they appended and leave them nothing to sign.
        await app.state.checkpointer.stop()
        yield Ledger(http, app)


def _hashes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


async def _published_key(http: httpx.AsyncClient) -> ec.EllipticCurvePublicKey:
    published = (await http.get("/audit/checkpoints/key")).json()
    key = serialization.load_pem_public_key(published["public_key_pem"].encode())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key_id_for(key) == published["key_id"] == published["jwk"]["kid"]
    assert published["jwk"]["crv"] == "P-256"
    assert "d" not in published["jwk"]
    return key


async def test_checkpoints_are_signed_public_and_served_by_size(ledger: Ledger) -> None:
    assert (await ledger.http.get("/audit/checkpoints/latest")).status_code == 404
    await ledger.append("cz_a", "cz_b", "cz_c")
    assert await ledger.checkpoint() == 3
    assert await ledger.app.state.checkpointer.checkpoint_once() is None  # no growth, no new
    latest = await ledger.http.get("/audit/checkpoints/latest")  # no token: public
    assert latest.status_code == 200
    signed = SignedCheckpoint.from_dict(latest.json())
    assert signed.checkpoint.size == 3
    assert signed.checkpoint.origin == "testserver/audit"
    assert verify_checkpoint(signed, await _published_key(ledger.http))
    assert (await ledger.http.get("/audit/checkpoints/3")).json() == latest.json()
    missing = await ledger.http.get("/audit/checkpoints/2")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no checkpoint of size 2"


async def test_inclusion_proofs_verify_against_every_checkpoint(ledger: Ledger) -> None:
    await ledger.append(*(f"cz_{i}" for i in range(5)))
    await ledger.checkpoint()
    await ledger.append(*(f"cz_{i}" for i in range(6)))
    await ledger.checkpoint()
    key = await _published_key(ledger.http)
    for size in (5, 11, None):
        for seq in range(size or 11):
            query = "" if size is None else f"?size={size}"
            response = await ledger.http.get(
                f"/audit/entries/{seq}/proof{query}", headers=auditor()
            )
            assert response.status_code == 200, response.text
            body = response.json()
            signed = SignedCheckpoint.from_dict(body["checkpoint"])
            assert signed.checkpoint.size == body["tree_size"] == (size or 11)
            assert verify_checkpoint(signed, key)
            assert verify_inclusion(
                index=seq,
                size=body["tree_size"],
                leaf_hash=bytes.fromhex(body["leaf_hash"]),
                proof=_hashes(body["proof"]),
                root=signed.checkpoint.root,
            )
    beyond = await ledger.http.get("/audit/entries/7/proof?size=5", headers=auditor())
    assert beyond.status_code == 404
    assert "not in the checkpoint of size 5" in beyond.json()["detail"]


async def test_an_entry_not_yet_in_a_checkpoint_says_so(ledger: Ledger) -> None:
    [seq] = await ledger.append("cz_a")
    response = await ledger.http.get(f"/audit/entries/{seq}/proof", headers=auditor())
    assert response.status_code == 404
    assert response.json()["detail"] == "no checkpoint yet"


async def test_only_auditors_and_the_citizen_concerned_get_an_inclusion_proof(
    ledger: Ledger,
) -> None:
    mine, theirs = await ledger.append("cz_demo", "cz_other")
    await ledger.checkpoint()
    me = token(sub="cz_demo", scope="audit.self", client_id="app")
    assert (await ledger.http.get(f"/audit/entries/{mine}/proof", headers=me)).status_code == 200
    refused = await ledger.http.get(f"/audit/entries/{theirs}/proof", headers=me)
    assert refused.status_code == 403
    assert refused.json()["detail"] == f"audit entry {theirs} is not about you"
    no_scope = token(sub="cz_demo", scope="benefits.read", client_id="app")
    assert (
        await ledger.http.get(f"/audit/entries/{mine}/proof", headers=no_scope)
    ).status_code == 403
    assert (await ledger.http.get(f"/audit/entries/{mine}/proof")).status_code == 401


async def test_consistency_proofs_between_checkpoints_are_public(ledger: Ledger) -> None:
    sizes = []
    for batch in (3, 1, 4, 8):
        await ledger.append(*(["cz_x"] * batch))
        sizes.append(await ledger.checkpoint())
    assert sizes == [3, 4, 8, 16]
    for old in sizes:
        for new in sizes:
            if old > new:
                continue
            response = await ledger.http.get(f"/audit/consistency?old={old}&new={new}")
            assert response.status_code == 200, response.text
            body = response.json()
            assert verify_consistency(
                old_size=old,
                new_size=new,
                old_root=SignedCheckpoint.from_dict(body["old"]).checkpoint.root,
                new_root=SignedCheckpoint.from_dict(body["new"]).checkpoint.root,
                proof=_hashes(body["proof"]),
            )
    backwards = await ledger.http.get("/audit/consistency?old=8&new=4")
    assert backwards.status_code == 400
    absent = await ledger.http.get("/audit/consistency?old=5&new=8")
    assert absent.status_code == 404
    assert absent.json()["detail"] == "no checkpoint of size 5"


async def test_a_citizen_verifies_their_access_log_offline(ledger: Ledger) -> None:
    await ledger.append("cz_demo", "cz_other", "cz_demo")
    await ledger.checkpoint()
    [late] = await ledger.append("cz_demo")
    # What the app holds: the published key, fetched once; then only the access log.
    key = await _published_key(ledger.http)
    log = await ledger.http.get(
        "/audit/me", headers=token(sub="cz_demo", scope="audit.self", client_id="app")
    )
    assert log.status_code == 200
    entries = log.json()
    assert [e["seq"] for e in entries] == [late, 2, 0]
    assert entries[0]["inclusion"] is None  # not yet in a checkpoint
    for entry in entries[1:]:
        proof = entry["inclusion"]
        signed = SignedCheckpoint.from_dict(proof["checkpoint"])
        assert verify_checkpoint(signed, key)
        # The record as shown is the record hashed: canonical JSON, sorted keys, compact.
        data = orjson.dumps(entry["record"], option=orjson.OPT_SORT_KEYS)
        leaf = leaf_hash(data, algorithm=HashAlgorithm(signed.checkpoint.algorithm))
        assert leaf.hex() == entry["leaf_hash"] == proof["leaf_hash"]
        assert verify_inclusion(
            index=entry["seq"],
            size=signed.checkpoint.size,
            leaf_hash=leaf,
            proof=_hashes(proof["proof"]),
            root=signed.checkpoint.root,
        )
        # A record edited on the way fails the check.
        edited = orjson.dumps({**entry["record"], "purpose": "HMARKT"}, option=orjson.OPT_SORT_KEYS)
        assert not verify_inclusion(
            index=entry["seq"],
            size=signed.checkpoint.size,
            leaf_hash=leaf_hash(edited),
            proof=_hashes(proof["proof"]),
            root=signed.checkpoint.root,
        )


async def test_the_ledger_signs_checkpoints_by_itself(make_settings: Callable[..., Any]) -> None:
    app = _app(make_settings(AuditSettings, public_url=ISSUER, checkpoint_interval=0.05))
    async with serve_asgi(app) as http:
        await Ledger(http, app).append("cz_a", "cz_b")
        for _ in range(200):
            latest = await http.get("/audit/checkpoints/latest")
            if latest.status_code == 200 and latest.json()["size"] == 2:
                break
            await asyncio.sleep(0.05)
        assert latest.json()["size"] == 2


async def test_no_proof_is_served_from_entries_that_no_longer_match_the_checkpoint(
    ledger: Ledger,
) -> None:
    await ledger.append("cz_a", "cz_b")
    await ledger.checkpoint()
    db = ledger.app.state.runtime.db
    async with db.engine.begin() as conn:  # tampering, past the append-only triggers
        if db.is_sqlite:
            await conn.execute(text("DROP TRIGGER audit_entries_no_update"))
        else:
            await conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        await conn.execute(
            text("UPDATE audit_entries SET leaf_hash = :h WHERE seq = 1"), {"h": bytes(32)}
        )
    response = await ledger.http.get("/audit/entries/0/proof", headers=auditor())
    assert response.status_code == 500
    assert "no longer match signed checkpoint 2" in response.json()["detail"]
    assert "onecard audit verify" in response.json()["detail"]
