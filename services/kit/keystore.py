"""Private keys at rest: encrypted PKCS#8 (RFC 5958, RFC 8018) under a derived passphrase.

Each family of keys (CA keys, token-signing keys, the audit ledger's checkpoint key) derives
its own passphrase with HKDF (RFC 5869) from a configured secret under a label of its own, so
one secret can protect several families without one ever decrypting another's.
``BestAvailableEncryption`` is cryptography's choice of PBES2 (today PBKDF2-HMAC-SHA256 and
AES-256-CBC); its modest iteration count is no weakness because the passphrase is a 256-bit
derived secret, not something a person chose.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr


def derive_passphrase(secret: SecretStr, *, context: bytes) -> bytes:
    """A passphrase for one family of keys; text (base64url), so standard tools can use it."""
    raw = secret.get_secret_value().encode()
    if not raw:
        raise ValueError("the key encryption secret is empty")
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
    """Open an encrypted PKCS#8 PEM document; ValueError if it cannot be opened."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=passphrase)
    except (ValueError, TypeError):
        # Not chained: the library's message says nothing the operator needs here.
        raise ValueError("wrong key encryption secret or a corrupt key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("a stored private key is not an EC key")
    return key
