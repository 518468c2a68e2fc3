"""Signed checkpoints of the audit ledger: RFC 9162 "signed tree heads" in the C2SP form.

What is signed is the checkpoint body of C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint),
UTF-8, every line ending in a newline::

    <origin>\\n                 the ledger's name, e.g. "onecard.example/audit"
    <size>\\n                   tree size, decimal, no leading zeros
    <root>\\n                   root hash, standard base64 with padding
    timestamp <ms>\\n           extension line: milliseconds since the Unix epoch (UTC)
    hash <sha256|sm3>\\n        extension line: the tree's hash algorithm

The two extension lines bind the time (RFC 9162 section 4.10: a tree head has a timestamp) and
the hash algorithm under the signature. The signature is ECDSA P-256 with SHA-256 over these
bytes (DER-encoded, RFC 5480 / FIPS 186-5). ``SignedCheckpoint`` travels as JSON (roots and
signatures in base64) so a citizen's app can verify it offline with only the public key.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.audit.merkle import HashAlgorithm

__all__ = [
    "Checkpoint",
    "SignedCheckpoint",
    "key_id_for",
    "sign_checkpoint",
    "verify_checkpoint",
]

_SIGNATURE_ALGORITHM = ec.ECDSA(hashes.SHA256())


def _b64encode(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _b64decode(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not valid base64") from exc


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: the ledger ``origin`` had ``size`` entries with ``root`` at the time."""

    origin: str
    size: int
    root: bytes
    timestamp_ms: int
    algorithm: HashAlgorithm

    def __post_init__(self) -> None:
        # C2SP tlog-checkpoint: the origin is one non-empty line; refusing anything else keeps
        # the body unambiguous (no field can smuggle in a line of another).
        if not self.origin or not self.origin.isprintable() or self.origin.strip() != self.origin:
            raise ValueError("origin must be non-empty printable text without edge whitespace")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"size must be a non-negative integer, not {self.size!r}")
        if (
            isinstance(self.timestamp_ms, bool)
            or not isinstance(self.timestamp_ms, int)
            or self.timestamp_ms < 0
        ):
            raise ValueError(
                f"timestamp_ms must be a non-negative integer, not {self.timestamp_ms!r}"
            )
        algorithm = HashAlgorithm(self.algorithm)
        object.__setattr__(self, "algorithm", algorithm)
        if not isinstance(self.root, bytes) or len(self.root) != algorithm.digest_size:
            raise ValueError(f"root must be {algorithm.digest_size} bytes of {algorithm}")

    def body(self) -> bytes:
        """The exact bytes that are signed (format in the module docstring)."""
        return (
            f"{self.origin}\n{self.size}\n{_b64encode(self.root)}\n"
            f"timestamp {self.timestamp_ms}\nhash {self.algorithm.value}\n"
        ).encode()


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint with the ledger's DER-encoded ECDSA P-256 signature over its body."""

    checkpoint: Checkpoint
    key_id: str
    signature: bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: every byte string in standard base64."""
        return {
            "origin": self.checkpoint.origin,
            "size": self.checkpoint.size,
            "root": _b64encode(self.checkpoint.root),
            "timestamp_ms": self.checkpoint.timestamp_ms,
            "algorithm": self.checkpoint.algorithm.value,
            "key_id": self.key_id,
            "signature": _b64encode(self.signature),
        }

    def to_json(self) -> str:
        """Compact JSON with sorted keys."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: object) -> SignedCheckpoint:
        """Inverse of ``to_dict``; ValueError naming the first field that is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a signed checkpoint must be a JSON object")
        fields = ("origin", "size", "root", "timestamp_ms", "algorithm", "key_id", "signature")
        missing = [name for name in fields if name not in data]
        if missing:
            raise ValueError(f"signed checkpoint lacks {', '.join(missing)}")
        for name in ("origin", "algorithm", "key_id"):
            if not isinstance(data[name], str):
                raise ValueError(f"{name} must be a string")
        for name in ("size", "timestamp_ms"):
            if isinstance(data[name], bool) or not isinstance(data[name], int):
                raise ValueError(f"{name} must be an integer")
        try:
            algorithm = HashAlgorithm(data["algorithm"])
        except ValueError as exc:
            raise ValueError(f"unknown hash algorithm {data['algorithm']!r}") from exc
        checkpoint = Checkpoint(
            origin=data["origin"],
            size=data["size"],
            root=_b64decode(data["root"], "root"),
            timestamp_ms=data["timestamp_ms"],
            algorithm=algorithm,
        )
        return cls(
            checkpoint=checkpoint,
            key_id=data["key_id"],
            signature=_b64decode(data["signature"], "signature"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SignedCheckpoint:
        """Parse ``to_json`` output; ValueError (never KeyError) on anything malformed."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError("signed checkpoint is not valid JSON") from exc
        return cls.from_dict(data)


def key_id_for(public_key: ec.EllipticCurvePublicKey) -> str:
    """A stable name for a key: hex of the first 8 bytes of SHA-256 of its DER SPKI."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return digest.finalize()[:8].hex()


def _require_p256(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> None:
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"checkpoints are signed with P-256, not {key.curve.name}")


def sign_checkpoint(
    checkpoint: Checkpoint, private_key: ec.EllipticCurvePrivateKey, key_id: str
) -> SignedCheckpoint:
    """Sign the checkpoint body with ECDSA P-256 / SHA-256."""
    _require_p256(private_key)
    if not key_id or not key_id.isprintable() or any(c.isspace() for c in key_id):
        raise ValueError("key_id must be non-empty printable text without whitespace")
    signature = private_key.sign(checkpoint.body(), _SIGNATURE_ALGORITHM)
    return SignedCheckpoint(checkpoint=checkpoint, key_id=key_id, signature=signature)


def verify_checkpoint(signed: SignedCheckpoint, public_key: ec.EllipticCurvePublicKey) -> bool:
    """True when ``signed`` carries a valid signature by ``public_key`` over its body.

    Raises ValueError only for a key that is not P-256 (a caller's mistake, not a forgery).
    """
    _require_p256(public_key)
    try:
        public_key.verify(signed.signature, signed.checkpoint.body(), _SIGNATURE_ALGORITHM)
    except InvalidSignature:
        return False
    return True
