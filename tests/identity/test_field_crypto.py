"""Field encryption at rest (AES-256-GCM, SM4-GCM) and the keyed blind index."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

import pytest

from identity.field_crypto import (
    BlindIndex,
    DecryptionError,
    FieldCipher,
    KeyConfigurationError,
    _Sm4Gcm,
    decode_secret,
    derive_key,
)
from identity.settings import FieldCipher as Algorithm
from identity.settings import IdentitySettings
from tests.identity.conftest import random_secret

NUMBER = "11010519491231002X"
PURPOSE = "citizen.national_id"
ROW = "cz_aaaaaaaaaaaaaaaaaaaaaaaaaa"
ALGORITHMS = pytest.mark.parametrize("algorithm", list(Algorithm))


def key() -> bytes:
    return os.urandom(32)


@ALGORITHMS
def test_a_value_round_trips_and_is_not_visible_in_the_ciphertext(algorithm: Algorithm) -> None:
    cipher = FieldCipher(key(), algorithm=algorithm)
    blob = cipher.encrypt(NUMBER, purpose=PURPOSE, row=ROW)
    assert cipher.decrypt(blob, purpose=PURPOSE, row=ROW) == NUMBER
    assert NUMBER.encode() not in blob
    assert NUMBER[:17].encode() not in blob


@ALGORITHMS
def test_the_format_is_versioned_and_names_its_algorithm(algorithm: Algorithm) -> None:
    blob = FieldCipher(key(), algorithm=algorithm).encrypt(NUMBER, purpose=PURPOSE, row=ROW)
    assert blob[0] == 1
    assert blob[1] == {Algorithm.AES_GCM: 1, Algorithm.SM4_GCM: 2}[algorithm]
    # header 6 + nonce 12 + ciphertext as long as the value + tag 16
    assert len(blob) == 6 + 12 + len(NUMBER) + 16


@ALGORITHMS
def test_each_encryption_uses_a_fresh_nonce(algorithm: Algorithm) -> None:
    cipher = FieldCipher(key(), algorithm=algorithm)
    blobs = {cipher.encrypt(NUMBER, purpose=PURPOSE, row=ROW) for _ in range(20)}
    assert len(blobs) == 20
    assert len({blob[6:18] for blob in blobs}) == 20


@ALGORITHMS
def test_flipping_any_byte_is_detected(algorithm: Algorithm) -> None:
    cipher = FieldCipher(key(), algorithm=algorithm)
    blob = cipher.encrypt(NUMBER, purpose=PURPOSE, row=ROW)
    for position in range(len(blob)):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(DecryptionError):
            cipher.decrypt(bytes(tampered), purpose=PURPOSE, row=ROW)


@ALGORITHMS
def test_a_truncated_ciphertext_is_refused(algorithm: Algorithm) -> None:
    cipher = FieldCipher(key(), algorithm=algorithm)
    blob = cipher.encrypt(NUMBER, purpose=PURPOSE, row=ROW)
    for length in (0, 5, 18, 33, len(blob) - 1):
        with pytest.raises(DecryptionError):
            cipher.decrypt(blob[:length], purpose=PURPOSE, row=ROW)


@ALGORITHMS
def test_a_ciphertext_moved_to_another_field_or_row_does_not_open(algorithm: Algorithm) -> None:
    cipher = FieldCipher(key(), algorithm=algorithm)
    blob = cipher.encrypt(NUMBER, purpose=PURPOSE, row=ROW)
    with pytest.raises(DecryptionError, match="failed authentication"):
        cipher.decrypt(blob, purpose="citizen.phone", row=ROW)
    with pytest.raises(DecryptionError, match="failed authentication"):
        cipher.decrypt(blob, purpose=PURPOSE, row="cz_bbbbbbbbbbbbbbbbbbbbbbbbbb")


def test_associated_data_is_unambiguous() -> None:
    # ("a.b", "c") and ("a", ".bc")-style splits must not authenticate each other.
    cipher = FieldCipher(key())
    blob = cipher.encrypt(NUMBER, purpose="citizen.x", row="y")
    with pytest.raises(DecryptionError):
        cipher.decrypt(blob, purpose="citizen.", row="xy")


def test_another_key_does_not_open_a_value() -> None:
    blob = FieldCipher(key()).encrypt(NUMBER, purpose=PURPOSE, row=ROW)
    with pytest.raises(DecryptionError, match="unknown key"):
        FieldCipher(key()).decrypt(blob, purpose=PURPOSE, row=ROW)


def test_keys_and_algorithms_rotate_without_losing_old_values() -> None:
    old_key, new_key = key(), key()
    old = FieldCipher(old_key, algorithm=Algorithm.AES_GCM)
    sealed_before = old.encrypt(NUMBER, purpose=PURPOSE, row=ROW)
    new = FieldCipher(new_key, algorithm=Algorithm.SM4_GCM, retired_keys=[old_key])
    assert new.decrypt(sealed_before, purpose=PURPOSE, row=ROW) == NUMBER
    assert new.needs_rotation(sealed_before)
    resealed = new.encrypt(NUMBER, purpose=PURPOSE, row=ROW)
    assert not new.needs_rotation(resealed)
    assert resealed[1] == 2
    with pytest.raises(DecryptionError, match="unknown key"):
        old.decrypt(resealed, purpose=PURPOSE, row=ROW)


def test_sm4_gcm_matches_the_rfc_8998_test_vector() -> None:
    # RFC 8998 appendix A.1: SM4-GCM with a 12-byte IV and a 16-byte tag.
    aead = _Sm4Gcm(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"))
    iv = bytes.fromhex("00001234567800000000ABCD")
    aad = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
    plaintext = bytes.fromhex(
        "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
        "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
    )
    expected = bytes.fromhex(
        "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
        "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
        "83DE3541E4C2B58177E065A9BF7B62EC"
    )
    assert aead.encrypt(iv, plaintext, aad) == expected
    assert aead.decrypt(iv, expected, aad) == plaintext


def test_the_blind_index_is_deterministic_hex_and_depends_on_the_field() -> None:
    index = BlindIndex(key())
    digest = index.digest(NUMBER, purpose=PURPOSE)
    assert digest == index.digest(NUMBER, purpose=PURPOSE)
    assert len(digest) == BlindIndex.DIGEST_HEX_LENGTH
    assert int(digest, 16) >= 0
    assert digest != index.digest(NUMBER[:17] + "0", purpose=PURPOSE)
    assert digest != index.digest(NUMBER, purpose="citizen.phone")


def test_the_blind_index_is_keyed_and_its_key_is_derived() -> None:
    secret = key()
    digest = BlindIndex(secret).digest(NUMBER, purpose=PURPOSE)
    assert digest != BlindIndex(key()).digest(NUMBER, purpose=PURPOSE)
    # Neither a plain hash nor an HMAC under the configured secret itself.
    assert digest != hashlib.sha256(NUMBER.encode()).hexdigest()
    assert digest != hmac.new(secret, NUMBER.encode(), hashlib.sha256).hexdigest()


def test_one_secret_used_for_both_still_gives_separate_keys() -> None:
    # An operator who sets both secrets to one value still gets a blind index that is not
    # computed with the cipher's key: HKDF labels separate them.
    secret = key()
    cipher_key = derive_key(
        secret, length=32, label=b"onecard/identity/field-cipher/aes-256-gcm/" + PURPOSE.encode()
    )
    index_key = derive_key(
        secret, length=32, label=b"onecard/identity/blind-index/" + PURPOSE.encode()
    )
    assert cipher_key != index_key
    assert BlindIndex(secret).digest(NUMBER, purpose=PURPOSE) == (
        hmac.new(index_key, NUMBER.encode(), hashlib.sha256).hexdigest()
    )


def test_secrets_are_base64url_of_at_least_32_bytes() -> None:
    raw = secrets.token_bytes(32)
    unpadded = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert decode_secret(unpadded, name="data_key") == raw
    assert decode_secret(unpadded + "=", name="data_key") == raw
    assert len(decode_secret(random_secret(), name="data_key")) == 32
    for bad in ("", "c2hvcnQ", base64.urlsafe_b64encode(b"x" * 16).decode(), "not a key!" * 8):
        with pytest.raises(
            KeyConfigurationError, match="ONECARD_DATA_KEY must be base64url"
        ) as caught:
            decode_secret(bad, name="data_key")
        if bad:
            assert bad not in str(caught.value)


def test_short_keys_are_refused() -> None:
    with pytest.raises(KeyConfigurationError):
        FieldCipher(os.urandom(16))
    with pytest.raises(KeyConfigurationError):
        BlindIndex(os.urandom(16))


def _settings(tmp_path: Path, **values: object) -> IdentitySettings:
    return IdentitySettings(var_dir=tmp_path / "var", **values)  # type: ignore[arg-type]


def test_keys_come_from_the_settings(tmp_path: Path) -> None:
    data_key, index_key = random_secret(), random_secret()
    settings = _settings(
        tmp_path,
        environment="test",
        data_key=data_key,
        blind_index_key=index_key,
        key_encryption_key=random_secret(),
        field_cipher="sm4-gcm",
    )
    cipher = FieldCipher.from_settings(settings)
    assert cipher.algorithm is Algorithm.SM4_GCM
    blob = cipher.encrypt(NUMBER, purpose=PURPOSE, row=ROW)
    assert (
        FieldCipher(decode_secret(data_key, name="data_key")).decrypt(
            blob, purpose=PURPOSE, row=ROW
        )
        == NUMBER
    )
    assert BlindIndex.from_settings(settings).digest(NUMBER, purpose=PURPOSE) == BlindIndex(
        decode_secret(index_key, name="blind_index_key")
    ).digest(NUMBER, purpose=PURPOSE)


def test_a_malformed_secret_in_the_settings_is_named(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        environment="test",
        data_key="this-is-not-32-bytes",
        blind_index_key=random_secret(),
        key_encryption_key=random_secret(),
    )
    with pytest.raises(KeyConfigurationError, match="ONECARD_DATA_KEY"):
        FieldCipher.from_settings(settings)


def test_development_generates_keys_once_and_keeps_them(tmp_path: Path) -> None:
    first = _settings(tmp_path, environment="development")
    blob = FieldCipher.from_settings(first).encrypt(NUMBER, purpose=PURPOSE, row=ROW)
    digest = BlindIndex.from_settings(first).digest(NUMBER, purpose=PURPOSE)
    again = _settings(tmp_path, environment="development")
    assert FieldCipher.from_settings(again).decrypt(blob, purpose=PURPOSE, row=ROW) == NUMBER
    assert BlindIndex.from_settings(again).digest(NUMBER, purpose=PURPOSE) == digest
    assert (tmp_path / "var" / "secrets" / "data_key").read_text() != (
        tmp_path / "var" / "secrets" / "blind_index_key"
    ).read_text()
