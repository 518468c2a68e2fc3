"""A citizen's app proves each access-log entry offline, with only the ledger's public key."""

from __future__ import annotations

import copy
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.audit.offline import verify_entry
from tests.services.audit.conftest import LedgerApp
from tests.services.audit.test_ledger import record
from tests.services.audit.test_routes import token

CITIZEN = "cz_demo"


async def _my_log(ledger: LedgerApp) -> tuple[list[dict[str, Any]], ec.EllipticCurvePublicKey]:
    appender = token(sub="svc_health", scope="audit.append")
    entries = [record(citizen=CITIZEN) for _ in range(5)] + [record(citizen="cz_other")]
    body = {"entries": [e.model_dump(mode="json", exclude_none=True) for e in entries]}
    assert (await ledger.http.post("/audit/entries", json=body, headers=appender)).is_success
    await ledger.app.state.checkpointer.checkpoint_once()
    mine = token(sub=CITIZEN, scope="audit.self", client_id="app")
    log = (await ledger.http.get("/audit/me", headers=mine)).json()
    pem = (await ledger.http.get("/audit/checkpoints/key")).json()["public_key_pem"]
    key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return log, key


async def test_every_entry_of_my_log_is_proven_in_the_signed_tree(ledger_app: LedgerApp) -> None:
    log, key = await _my_log(ledger_app)
    assert len(log) == 5
    assert [verify_entry(entry, key) for entry in log] == [None] * 5


async def test_a_rewritten_record_a_forged_proof_or_another_key_fail(
    ledger_app: LedgerApp,
) -> None:
    log, key = await _my_log(ledger_app)
    entry = log[0]

    rewritten = copy.deepcopy(entry)
    rewritten["record"]["agent"]["who"] = "someone_else"
    assert "does not hash" in (verify_entry(rewritten, key) or "")

    forged = copy.deepcopy(entry)
    forged["inclusion"]["proof"][0] = "00" * 32
    assert "does not lead to the signed root" in (verify_entry(forged, key) or "")

    resigned = copy.deepcopy(entry)
    resigned["inclusion"]["checkpoint"]["root"] = log[1]["inclusion"]["checkpoint"]["root"][::-1]
    assert verify_entry(resigned, key) is not None

    other_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert "signature" in (verify_entry(entry, other_key) or "")

    assert "malformed" in (verify_entry({"inclusion": {"x": 1}}, key) or "")
    assert "not yet covered" in (verify_entry({**entry, "inclusion": None}, key) or "")
