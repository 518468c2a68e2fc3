"""Encryption of short personal fields at rest, and keyed blind indexes to find them again.

:class:`FieldCipher` encrypts a value (a national ID number) with AES-256-GCM or SM4-GCM.
:class:`BlindIndex` gives the HMAC-SHA256 of a value, stored in a unique column so that an
equality lookup (and a duplicate check) never needs the clear value.

Keys. The configured secrets are base64url text of at least 32 random bytes
(``secrets.token_urlsafe(32)``, which is also what development generates). They are decoded,
never used as passphrases, and never used directly: every working key is derived with
HKDF-SHA256 (RFC 5869) from its own secret with a label naming its use, algorithm and field.
So the blind index and the cipher can never share a key, even if an operator sets both secrets
to the same value, and SM4's 16-byte key is derived, not a truncated AES key.

Ciphertext format (version 1), self-describing so that algorithm and key can rotate::

    0x01 | algorithm (1 byte) | key id (4 bytes) | nonce (12 bytes) | ciphertext || tag (16 bytes)

The associated data binds the ciphertext to the header, the field (``purpose``) and the row it
belongs to: a ciphertext copied to another column or another citizen's row fails to decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from identity.settings import FieldCipher as Algorithm
from identity.settings import IdentitySettings

VERSION = 1
NONCE_BYTES = 12  # 96-bit random nonce, NIST SP 800-38D section 8.2.2
TAG_BYTES = 16
KEY_ID_BYTES = 4
MIN_SECRET_BYTES = 32
_HEADER_BYTES = 2 + KEY_ID_BYTES
_ALGORITHM_IDS = {Algorithm.AES_GCM: 1, Algorithm.SM4_GCM: 2}
_ALGORITHMS = {v: k for k, v in _ALGORITHM_IDS.items()}
_KEY_BYTES = {Algorithm.AES_GCM: 32, Algorithm.SM4_GCM: 16}  # SM4: GB/T 32907-2016, 128-bit
_LABEL = b"onecard/identity"


class FieldCryptoError(Exception):
    """Base of the errors below; messages never contain keys or field values."""


class KeyConfigurationError(FieldCryptoError, ValueError):
    """A configured secret is not usable as key material."""


class DecryptionError(FieldCryptoError):
    """A stored ciphertext cannot be opened: tampered, misplaced, or under an unknown key."""


class _Aead(Protocol):
    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes: ...
    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes: ...


class _Sm4Gcm:
    """SM4 in GCM mode with AESGCM's interface (``cryptography`` has no SM4 AEAD class).

    RFC 8998 section 3.1 profiles it as for AES-GCM: 12-byte nonce, 16-byte tag.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        try:
            Cipher(algorithms.SM4(key), modes.GCM(bytes(NONCE_BYTES))).encryptor()
        except UnsupportedAlgorithm as exc:
            raise KeyConfigurationError(
                "SM4-GCM is not available in this OpenSSL build; choose aes-256-gcm"
            ) from exc

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes:
        encryptor = Cipher(algorithms.SM4(self._key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(associated_data)
        return encryptor.update(data) + encryptor.finalize() + encryptor.tag

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes:
        if len(data) < TAG_BYTES:
            raise InvalidTag
        body, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
        decryptor = Cipher(algorithms.SM4(self._key), modes.GCM(nonce, tag)).decryptor()
        decryptor.authenticate_additional_data(associated_data)
        # The plaintext of update() is only returned once finalize() has checked the tag.
        return decryptor.update(body) + decryptor.finalize()


def decode_secret(text: str, *, name: str) -> bytes:
    """The key bytes of a base64url secret (padding optional); at least 32 bytes."""
    stripped = text.strip()
    try:
        raw = base64.b64decode(stripped + "=" * (-len(stripped) % 4), altchars=b"-_", validate=True)
    except ValueError:  # binascii.Error: not base64url
        raw = b""
    if len(raw) < MIN_SECRET_BYTES:
        env = f"ONECARD_{name.upper()}"
        raise KeyConfigurationError(
            f"{env} must be base64url text of at least {MIN_SECRET_BYTES} random bytes "
            '(python -c "import secrets; print(secrets.token_urlsafe(32))")'
        )
    return raw


def derive_key(secret: bytes, *, length: int, label: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``secret`` for one use named by ``label``."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label).derive(secret)


@dataclass(frozen=True)
class _Key:
    key_id: bytes
    secret: bytes


def _key(secret: bytes) -> _Key:
    # A fingerprint, not the key: one-way and short, it only says which key sealed a value.
    return _Key(derive_key(secret, length=KEY_ID_BYTES, label=_LABEL + b"/key-id"), secret)


class FieldCipher:
    """AES-256-GCM or SM4-GCM encryption of short fields, bound to their field and row.

    New values are sealed under ``key`` with ``algorithm``; ``retired_keys`` still open values
    sealed before a key rotation (the algorithm is read from each value's header).
    """

    def __init__(
        self,
        key: bytes,
        *,
        algorithm: Algorithm = Algorithm.AES_GCM,
        retired_keys: Iterable[bytes] = (),
    ) -> None:
        if len(key) < MIN_SECRET_BYTES:
            raise KeyConfigurationError(f"a field key has at least {MIN_SECRET_BYTES} bytes")
        self.algorithm = algorithm
        self._current = _key(key)
        self._keys = {k.key_id: k for k in (_key(r) for r in retired_keys)}
        self._keys[self._current.key_id] = self._current
        self._aeads: dict[tuple[bytes, Algorithm, str], _Aead] = {}
        self._aead(self._current, algorithm, "self-test")  # an unusable algorithm fails now

    @classmethod
    def from_settings(cls, settings: IdentitySettings) -> FieldCipher:
        secret = settings.secret("data_key").get_secret_value()
        return cls(decode_secret(secret, name="data_key"), algorithm=settings.field_cipher)

    def encrypt(self, value: str, *, purpose: str, row: str) -> bytes:
        """Seal ``value`` for the field ``purpose`` of the row ``row``."""
        header = bytes([VERSION, _ALGORITHM_IDS[self.algorithm]]) + self._current.key_id
        nonce = os.urandom(NONCE_BYTES)
        aead = self._aead(self._current, self.algorithm, purpose)
        sealed = aead.encrypt(nonce, value.encode(), _associated_data(header, purpose, row))
        return header + nonce + sealed

    def decrypt(self, blob: bytes, *, purpose: str, row: str) -> str:
        """Open a value sealed by :meth:`encrypt` for the same ``purpose`` and ``row``."""
        if len(blob) < _HEADER_BYTES + NONCE_BYTES + TAG_BYTES:
            raise DecryptionError("ciphertext is truncated")
        header, nonce = blob[:_HEADER_BYTES], blob[_HEADER_BYTES : _HEADER_BYTES + NONCE_BYTES]
        if header[0] != VERSION:
            raise DecryptionError(f"unknown ciphertext format version {header[0]}")
        algorithm = _ALGORITHMS.get(header[1])
        if algorithm is None:
            raise DecryptionError(f"unknown cipher algorithm id {header[1]}")
        key = self._keys.get(header[2:])
        if key is None:
            raise DecryptionError(
                f"ciphertext was sealed under an unknown key (key id {header[2:].hex()})"
            )
        aead = self._aead(key, algorithm, purpose)
        try:
            clear = aead.decrypt(
                nonce, blob[_HEADER_BYTES + NONCE_BYTES :], _associated_data(header, purpose, row)
            )
        except InvalidTag:
            raise DecryptionError(
                "ciphertext failed authentication: altered, or moved from another field or row"
            ) from None
        return clear.decode()

    def needs_rotation(self, blob: bytes) -> bool:
        """Whether ``blob`` was sealed under another key or algorithm than new values are."""
        return blob[:_HEADER_BYTES] != (
            bytes([VERSION, _ALGORITHM_IDS[self.algorithm]]) + self._current.key_id
        )

    def _aead(self, key: _Key, algorithm: Algorithm, purpose: str) -> _Aead:
        cache_key = (key.key_id, algorithm, purpose)
        aead = self._aeads.get(cache_key)
        if aead is None:
            label = b"/".join((_LABEL, b"field-cipher", algorithm.encode(), purpose.encode()))
            working = derive_key(key.secret, length=_KEY_BYTES[algorithm], label=label)
            aead = AESGCM(working) if algorithm is Algorithm.AES_GCM else _Sm4Gcm(working)
            self._aeads[cache_key] = aead
        return aead


class BlindIndex:
    """HMAC-SHA256 (RFC 2104) of a canonical value under a key derived for its field.

    Deterministic by design, so a unique column can hold it; keyed, so that whoever reads the
    database cannot test guesses (an unkeyed hash of an 18-digit number with a known structure
    falls to brute force in minutes). Callers pass the canonical form of the value.
    """

    DIGEST_HEX_LENGTH = 64

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_SECRET_BYTES:
            raise KeyConfigurationError(f"a blind-index key has at least {MIN_SECRET_BYTES} bytes")
        self._secret = key
        self._keys: dict[str, bytes] = {}

    @classmethod
    def from_settings(cls, settings: IdentitySettings) -> BlindIndex:
        secret = settings.secret("blind_index_key").get_secret_value()
        return cls(decode_secret(secret, name="blind_index_key"))

    def digest(self, value: str, *, purpose: str) -> str:
        """The index of ``value`` in the field ``purpose``: 64 lowercase hex characters."""
        key = self._keys.get(purpose)
        if key is None:
            label = b"/".join((_LABEL, b"blind-index", purpose.encode()))
            key = self._keys[purpose] = derive_key(self._secret, length=32, label=label)
        return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def _associated_data(header: bytes, purpose: str, row: str) -> bytes:
    # Length-prefixed, so that no (purpose, row) pair can be confused with another.
    parts = (header, purpose.encode(), row.encode())
    return b"".join(len(p).to_bytes(2, "big") + p for p in parts)
