"""Verifying a citizen's access-log entry offline, as their app does (issue 4, item 7).

An entry of ``GET /audit/me`` carries the record, its leaf hash and an RFC 9162 inclusion proof
into a signed checkpoint. With only the ledger's public checkpoint key (fetched once from
``/audit/checkpoints/key`` and pinned), the app checks that the record it shows is exactly the
leaf the ledger committed to, and that the leaf is in the tree whose root the ledger signed: the
ledger cannot later deny or rewrite that access without the signed checkpoint giving it away.
"""

from __future__ import annotations

from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from services.audit.checkpoint import SignedCheckpoint, verify_checkpoint
from services.audit.merkle import leaf_hash, verify_inclusion


def verify_entry(entry: dict[str, Any], public_key: ec.EllipticCurvePublicKey) -> str | None:
    """None when ``entry`` is proven included in a checkpoint signed by ``public_key``; else
    what failed (never raises on malformed input)."""
    try:
        inclusion = entry.get("inclusion")
        if not inclusion:
            return "not yet covered by a signed checkpoint (retry in a few seconds)"
        signed = SignedCheckpoint.from_dict(inclusion["checkpoint"])
        if not verify_checkpoint(signed, public_key):
            return "the checkpoint's signature does not verify with the ledger's key"
        algorithm = signed.checkpoint.algorithm
        # The record as the ledger hashed it: canonical JSON (sorted keys, compact).
        canonical = orjson.dumps(entry["record"], option=orjson.OPT_SORT_KEYS)
        leaf = leaf_hash(canonical, algorithm=algorithm)
        if leaf.hex() != entry["leaf_hash"] or leaf.hex() != inclusion["leaf_hash"]:
            return "the record does not hash to the leaf the ledger committed to"
        if inclusion["tree_size"] != signed.checkpoint.size or inclusion["seq"] != entry["seq"]:
            return "the proof is for another tree or another entry"
        proof = [bytes.fromhex(h) for h in inclusion["proof"]]
    except (KeyError, TypeError, ValueError) as exc:
        return f"malformed entry: {exc}"
    included = verify_inclusion(
        index=entry["seq"],
        size=signed.checkpoint.size,
        leaf_hash=leaf,
        proof=proof,
        root=signed.checkpoint.root,
        algorithm=algorithm,
    )
    return None if included else "the inclusion proof does not lead to the signed root"
