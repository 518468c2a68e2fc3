"""Tests for services/audit/checkpoint.py: signed tree heads, their encoding and JSON form."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from services.audit.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    key_id_for,
    sign_checkpoint,
    verify_checkpoint,
)
from services.audit.merkle import HashAlgorithm, leaf_hash, root

# Root of the Certificate Transparency reference tree of 8 leaves (see test_merkle.py).
CT_ROOT_8 = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")


@pytest.fixture(scope="module")
def private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def checkpoint(**overrides: object) -> Checkpoint:
    fields: dict[str, object] = {
        "origin": "onecard.example/audit",
        "size": 8,
        "root": CT_ROOT_8,
        "timestamp_ms": 1_764_374_400_000,
        "algorithm": HashAlgorithm.SHA256,
    }
    return Checkpoint(**{**fields, **overrides})  # type: ignore[arg-type]


def test_body_is_the_documented_c2sp_text() -> None:
    assert checkpoint().body() == (
        b"onecard.example/audit\n"
        b"8\n"
        b"XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
        b"timestamp 1764374400000\n"
        b"hash sha256\n"
    )
    assert base64.b64decode("XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=") == CT_ROOT_8


def test_sign_and_verify_round_trip(private_key: ec.EllipticCurvePrivateKey) -> None:
    key_id = key_id_for(private_key.public_key())
    signed = sign_checkpoint(checkpoint(), private_key, key_id)
    assert signed.key_id == key_id
    assert len(key_id) == 16
    assert verify_checkpoint(signed, private_key.public_key())


def test_sm3_checkpoint_signs_its_algorithm(private_key: ec.EllipticCurvePrivateKey) -> None:
    sm3_root = root([leaf_hash(b"x", algorithm=HashAlgorithm.SM3)], algorithm=HashAlgorithm.SM3)
    signed = sign_checkpoint(
        checkpoint(root=sm3_root, algorithm=HashAlgorithm.SM3), private_key, "k1"
    )
    assert signed.checkpoint.body().endswith(b"hash sm3\n")
    assert verify_checkpoint(signed, private_key.public_key())
    relabelled = dataclasses.replace(
        signed, checkpoint=dataclasses.replace(signed.checkpoint, algorithm=HashAlgorithm.SHA256)
    )
    assert not verify_checkpoint(relabelled, private_key.public_key())


@pytest.mark.parametrize(
    "change",
    [
        {"size": 9},
        {"size": 7},
        {"root": bytes(32)},
        {"root": CT_ROOT_8[:-1] + b"\x29"},
        {"timestamp_ms": 1_764_374_400_001},
        {"origin": "onecard.example/audit2"},
    ],
)
def test_tampered_fields_are_refused(
    private_key: ec.EllipticCurvePrivateKey, change: dict[str, object]
) -> None:
    signed = sign_checkpoint(checkpoint(), private_key, "k1")
    tampered = dataclasses.replace(signed.checkpoint, **change)  # type: ignore[arg-type]
    forged = dataclasses.replace(signed, checkpoint=tampered)
    assert not verify_checkpoint(forged, private_key.public_key())


def test_tampered_signature_and_wrong_key_are_refused(
    private_key: ec.EllipticCurvePrivateKey,
) -> None:
    signed = sign_checkpoint(checkpoint(), private_key, "k1")
    flipped = bytearray(signed.signature)
    flipped[-1] ^= 0x01
    assert not verify_checkpoint(
        dataclasses.replace(signed, signature=bytes(flipped)), private_key.public_key()
    )
    assert not verify_checkpoint(
        dataclasses.replace(signed, signature=b""), private_key.public_key()
    )
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert not verify_checkpoint(signed, other)
    with pytest.raises(ValueError, match="P-256, not secp384r1"):
        verify_checkpoint(signed, ec.generate_private_key(ec.SECP384R1()).public_key())
    with pytest.raises(ValueError, match="P-256, not secp384r1"):
        sign_checkpoint(checkpoint(), ec.generate_private_key(ec.SECP384R1()), "k1")


def test_json_round_trip_verifies_offline(private_key: ec.EllipticCurvePrivateKey) -> None:
    signed = sign_checkpoint(checkpoint(), private_key, "k1")
    text = signed.to_json()
    document = json.loads(text)
    assert document["root"] == "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg="
    assert document["algorithm"] == "sha256"
    assert base64.b64decode(document["signature"]) == signed.signature
    restored = SignedCheckpoint.from_json(text)
    assert restored == signed
    assert verify_checkpoint(restored, private_key.public_key())
    # An edit made to the JSON in transit is caught by the signature.
    edited = SignedCheckpoint.from_json(text.replace('"size":8', '"size":9'))
    assert not verify_checkpoint(edited, private_key.public_key())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: "not json {", "not valid JSON"),
        (lambda d: "[]", "must be a JSON object"),
        (lambda d: {k: v for k, v in d.items() if k != "root"}, "lacks root"),
        (lambda d: {**d, "root": "***"}, "root is not valid base64"),
        (lambda d: {**d, "root": 5}, "root must be a base64 string"),
        (lambda d: {**d, "root": "AAAA"}, "root must be 32 bytes"),
        (lambda d: {**d, "signature": "!!"}, "signature is not valid base64"),
        (lambda d: {**d, "size": "8"}, "size must be an integer"),
        (lambda d: {**d, "size": True}, "size must be an integer"),
        (lambda d: {**d, "size": -1}, "size must be a non-negative integer"),
        (lambda d: {**d, "timestamp_ms": 1.5}, "timestamp_ms must be an integer"),
        (lambda d: {**d, "algorithm": "md5"}, "unknown hash algorithm 'md5'"),
        (lambda d: {**d, "origin": "a\nb"}, "origin must be non-empty printable"),
        (lambda d: {**d, "origin": ""}, "origin must be non-empty printable"),
        (lambda d: {**d, "key_id": None}, "key_id must be a string"),
    ],
)
def test_malformed_json_is_refused_with_value_error(
    private_key: ec.EllipticCurvePrivateKey, mutate: object, message: str
) -> None:
    document = sign_checkpoint(checkpoint(), private_key, "k1").to_dict()
    mutated = mutate(document)  # type: ignore[operator]
    text = mutated if isinstance(mutated, str) else json.dumps(mutated)
    with pytest.raises(ValueError, match=message):
        SignedCheckpoint.from_json(text)


def test_checkpoint_and_key_id_validation(private_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ValueError, match="root must be 32 bytes"):
        checkpoint(root=b"short")
    with pytest.raises(ValueError, match="origin"):
        checkpoint(origin=" padded")
    with pytest.raises(ValueError, match="timestamp_ms"):
        checkpoint(timestamp_ms=-1)
    with pytest.raises(ValueError, match="key_id"):
        sign_checkpoint(checkpoint(), private_key, "two words")
    assert checkpoint(algorithm="sm3").algorithm is HashAlgorithm.SM3
