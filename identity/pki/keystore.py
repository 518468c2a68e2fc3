"""Private keys at rest (CA keys, token-signing keys): encrypted PKCS#8 (RFC 5958, RFC 8018).

The passphrase is derived with HKDF (RFC 5869) from the ``key_encryption_key`` secret under a
label of its own, so the same secret can protect other key families (token-signing keys)
without one ever decrypting the other's. ``BestAvailableEncryption`` is cryptography's choice
of PBES2 (today PBKDF2-HMAC-SHA256 and AES-256-CBC); its modest iteration count is no weakness
here because the passphrase is a 256-bit random secret, not something a person chose.
"""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from identity.pki import KeyStoreError

KEY_CONTEXT = b"onecard identity pki ca-keys v1"


def derive_passphrase(secret: SecretStr, *, context: bytes = KEY_CONTEXT) -> bytes:
    """A passphrase for one family of keys, derived from the key encryption key (RFC 5869).

    Each family (CA keys, token-signing keys) passes its own ``context``; the result is text
    (base64url), so an operator can open a key with standard tools given the passphrase.
    """
    raw = secret.get_secret_value().encode()
    if not raw:
        raise ValueError("the key encryption key is empty")
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=context).derive(raw)
    return base64.urlsafe_b64encode(derived)


def encrypt_private_key(key: ec.EllipticCurvePrivateKey, passphrase: bytes) -> str:
    """``key`` as an encrypted PKCS#8 PEM document."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    ).decode()


def decrypt_private_key(pem: str, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
    """Open an encrypted PKCS#8 PEM document; KeyStoreError if the passphrase is wrong."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=passphrase)
    except (ValueError, TypeError):
        # Not chained: the library's message says nothing the operator needs here.
        raise KeyStoreError(
            "a private key cannot be decrypted: wrong key encryption key or corrupt row"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyStoreError("a stored private key is not an EC key")
    return key


class KeyStore:
    """Seals and opens CA private keys; holds the derived passphrase, never prints it."""

    __slots__ = ("_passphrase",)

    def __init__(self, secret: SecretStr) -> None:
        self._passphrase = derive_passphrase(secret)

    def __repr__(self) -> str:
        return "KeyStore(<sealed>)"

    def seal(self, key: ec.EllipticCurvePrivateKey) -> str:
        """The key as an encrypted PKCS#8 PEM document."""
        return encrypt_private_key(key, self._passphrase)

    def open(self, pem: str, *, certificate: x509.Certificate) -> ec.EllipticCurvePrivateKey:
        """Decrypt a sealed key and check that it belongs to ``certificate``."""
        key = decrypt_private_key(pem, self._passphrase)
        # A row whose key was swapped for another CA's would otherwise sign under a wrong name.
        if key.public_key() != certificate.public_key():
            raise KeyStoreError("a stored CA key does not match its certificate")
        return key
