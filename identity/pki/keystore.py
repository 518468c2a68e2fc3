"""Identity's private keys at rest (CA keys, token-signing keys), on the kit's keystore.

The passphrase is derived from the ``key_encryption_key`` secret under a label per key family
(:mod:`services.kit.keystore`); here a CA key is also checked against its certificate, and
failures are :class:`identity.pki.KeyStoreError`.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from identity.pki import KeyStoreError
from services.kit import keystore as kit_keystore
from services.kit.keystore import encrypt_private_key

__all__ = [
    "KEY_CONTEXT",
    "KeyStore",
    "decrypt_private_key",
    "derive_passphrase",
    "encrypt_private_key",
]

KEY_CONTEXT = b"onecard identity pki ca-keys v1"


def derive_passphrase(secret: SecretStr, *, context: bytes = KEY_CONTEXT) -> bytes:
    """A passphrase for one family of identity keys (CA keys by default)."""
    return kit_keystore.derive_passphrase(secret, context=context)


def decrypt_private_key(pem: str, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
    """Open an encrypted PKCS#8 PEM document; KeyStoreError if the passphrase is wrong."""
    try:
        return kit_keystore.decrypt_private_key(pem, passphrase)
    except ValueError:
        raise KeyStoreError(
            "a private key cannot be decrypted: wrong key encryption key or corrupt row"
        ) from None


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
