"""What a card signs when it is tapped at a terminal (shared by the service and the simulator).

Modelled on the Web eID authentication token: the card does not sign the bare nonce, it signs a
hash that binds the nonce to the origin (our domain) and to the terminal that asked, so a
signature captured at one terminal or for another site is worthless elsewhere. The card also
states whether it verified the holder's PIN itself (the PIN never leaves the card); the identity
service grants two-factor assurance (acr=2) only on that signed statement.
"""

from __future__ import annotations

import hashlib

CHALLENGE_CONTEXT = b"onecard-card-auth-v1"
NONCE_BYTES = 32  # 256 bits, as Web eID requires at least


def challenge_digest(*, domain: str, terminal_id: str, nonce: bytes, pin_verified: bool) -> bytes:
    """SHA-256 over a length-prefixed encoding of every bound field (unambiguous)."""
    parts = [
        CHALLENGE_CONTEXT,
        domain.encode(),
        terminal_id.encode(),
        nonce,
        b"\x01" if pin_verified else b"\x00",
    ]
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()
