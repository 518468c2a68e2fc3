"""The virtual citizen card: a card's behaviour, kept in one JSON file, for demos and tests.

What it models of a real card (ISO/IEC 7816-4 VERIFY / CHANGE REFERENCE DATA / RESET RETRY
COUNTER): the key pair is generated on the card and the private key never leaves it; the PIN
is checked on the card, which counts wrong attempts and blocks after 3; the PUK unblocks and
sets a new PIN; 10 wrong PUKs block the card for good. The retry counter is spent *before* the
comparison and written to the file first, as cards do so that pulling the card (here: killing
the process) mid-check cannot grant free guesses.

What it cannot model is tamper resistance. The file holds the private key as plain PKCS#8:
encrypting it under a key stored beside it would protect nothing, so the file's protection is
its mode (0600), and anyone who can read it can sign as the card. The PIN and PUK are stored
only as salted scrypt hashes (RFC 7914), never in clear: reading the file tells no one the
holder's PIN, which a person may reuse elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.x509.oid import NameOID

from identity.protocol import challenge_digest

FORMAT = "onecard-virtual-card/1"
PIN_LENGTH = 6
PUK_LENGTH = 8
PIN_TRIES = 3
PUK_TRIES = 10
# RFC 7914 section 2 parameters (about 16 MiB, tens of milliseconds per check).
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SERIAL = re.compile(r"^[A-Za-z0-9-]{1,64}$")


class CardError(Exception):
    """The card refuses the operation; the message says why."""


class CardBlocked(CardError):
    """The PIN is blocked (the PUK unblocks it), or the card is blocked for good."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class WrongPin(CardError):
    def __init__(self, tries_left: int) -> None:
        super().__init__(
            f"wrong PIN; {tries_left} tries left before the PIN is blocked"
            if tries_left
            else "wrong PIN; the PIN is now blocked, unblock it with the PUK"
        )
        self.tries_left = tries_left


class WrongPuk(CardError):
    def __init__(self, tries_left: int) -> None:
        super().__init__(f"wrong PUK; {tries_left} tries left before the card is blocked")
        self.tries_left = tries_left


class CardStateError(CardError):
    """The card is not in a state for this operation (not activated, already activated...)."""


@dataclass
class _Secret:
    """A salted scrypt hash of a PIN or PUK."""

    salt: str
    hash: str
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    @classmethod
    def of(cls, value: str) -> _Secret:
        salt = secrets.token_bytes(16)
        digest = _scrypt(salt, SCRYPT_N, SCRYPT_R, SCRYPT_P).derive(value.encode())
        return cls(salt=_b64(salt), hash=_b64(digest))

    def matches(self, value: str) -> bool:
        kdf = _scrypt(base64.b64decode(self.salt), self.n, self.r, self.p)
        try:
            kdf.verify(value.encode(), base64.b64decode(self.hash))  # constant time
        except InvalidKey:
            return False
        return True


def _scrypt(salt: bytes, n: int, r: int, p: int) -> Scrypt:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class _State:
    """Everything in the card file."""

    # None until the card is issued: the issuer assigns the serial after the key pair exists,
    # and the card learns it from its certificate (or from assign_serial).
    serial: str | None
    private_key_pem: str
    certificate_pem: str | None = None
    pin: _Secret | None = None
    puk: _Secret | None = None
    pin_failures: int = 0
    puk_failures: int = 0
    activated: bool = False
    permanently_blocked: bool = False
    format: str = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> _State:
        try:
            data: dict[str, Any] = json.loads(text)
            if data.get("format") != FORMAT:
                raise CardError(f"not a virtual card file (format is not {FORMAT})")
            for name in ("pin", "puk"):
                if data.get(name) is not None:
                    data[name] = _Secret(**data[name])
            return cls(**data)
        except (ValueError, TypeError, AttributeError) as exc:
            raise CardError(f"the card file is corrupt: {type(exc).__name__}") from None


def _check_serial(serial: str) -> None:
    if not _SERIAL.match(serial):
        raise CardError("a card serial is 1-64 characters of A-Z a-z 0-9 -")


def _check_digits(value: str, length: int, what: str) -> None:
    if len(value) != length or not value.isascii() or not value.isdigit():
        raise CardError(f"a {what} is exactly {length} digits")


class VirtualCard:
    """One virtual card, bound to its file; every change is written before it takes effect."""

    def __init__(self, path: Path, state: _State) -> None:
        self._path = path
        self._state = state
        key = serialization.load_pem_private_key(state.private_key_pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CardError("the card key is not an EC key")
        self._key = key

    def __repr__(self) -> str:
        return f"VirtualCard(serial={self._state.serial!r}, path={str(self._path)!r})"

    # -- life of the file ------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], serial: str | None = None) -> VirtualCard:
        """A new card: the key pair is generated here, on the card (EC P-256).

        Without ``serial`` the card gets one when it is issued (the issuer assigns it and the
        certificate carries it): see :meth:`install_certificate` and :meth:`assign_serial`.
        """
        if serial is not None:
            _check_serial(serial)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),  # see the module docstring: the file mode protects it
        ).decode()
        card = cls(Path(path), _State(serial=serial, private_key_pem=pem))
        if card._path.exists():
            raise CardError(f"{card._path} already exists; a card file is never overwritten")
        card._save()
        return card

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VirtualCard:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise CardError(f"no card file at {path}") from None
        return cls(path, _State.from_json(text))

    def _save(self) -> None:
        """Write the whole state atomically: a temporary file (0600) renamed over the old."""
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self._path.with_name(f".{self._path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self._state.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    # -- what can be read from the card ----------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def serial(self) -> str:
        """The card serial; CardStateError before the card was issued one."""
        if self._state.serial is None:
            raise CardStateError("the card has no serial yet: it is assigned when it is issued")
        return self._state.serial

    @property
    def has_serial(self) -> bool:
        return self._state.serial is not None

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    @property
    def certificate(self) -> x509.Certificate | None:
        pem = self._state.certificate_pem
        return x509.load_pem_x509_certificate(pem.encode()) if pem else None

    @property
    def certificate_pem(self) -> str | None:
        return self._state.certificate_pem

    @property
    def activated(self) -> bool:
        return self._state.activated

    @property
    def pin_blocked(self) -> bool:
        return self._state.pin_failures >= PIN_TRIES

    @property
    def permanently_blocked(self) -> bool:
        return self._state.permanently_blocked

    @property
    def pin_tries_left(self) -> int:
        return max(PIN_TRIES - self._state.pin_failures, 0)

    @property
    def puk_tries_left(self) -> int:
        return max(PUK_TRIES - self._state.puk_failures, 0)

    # -- personalization -------------------------------------------------------------------

    def csr(self, pseudonym: str) -> str:
        """A PKCS#10 request (RFC 2986) for the card's key, signed by the card.

        The subject names the holder (CN) and, once the card has one, its serial.
        """
        self._refuse_if_dead()
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, pseudonym)]
        if self._state.serial is not None:
            attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, self._state.serial))
        subject = x509.Name(attributes)
        request = x509.CertificateSigningRequestBuilder().subject_name(subject)
        return (
            request.sign(self._key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
            .decode()
        )

    def assign_serial(self, serial: str) -> None:
        """Write the serial the issuer assigned; once only (a card keeps its serial for life)."""
        self._refuse_if_dead()
        _check_serial(serial)
        if self._state.serial is not None and self._state.serial != serial:
            raise CardStateError(f"the card already has serial {self._state.serial}")
        self._state.serial = serial
        self._save()

    def install_certificate(self, pem: str | bytes) -> None:
        """Store the card's certificate; it must certify this card's own key.

        A card without a serial takes the one the certificate names (subject serialNumber);
        a card with one refuses a certificate naming another.
        """
        self._refuse_if_dead()
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            certificate = x509.load_pem_x509_certificate(data)
        except ValueError:
            raise CardError("not a PEM certificate") from None
        if certificate.public_key() != self.public_key:
            raise CardError("the certificate is for another key, not this card's")
        named = certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
        serial = str(named[0].value) if named else None
        if serial is not None and self._state.serial not in (None, serial):
            raise CardError(f"the certificate is for card {serial}, not this card ({self.serial})")
        if serial is not None:
            _check_serial(serial)
            self._state.serial = serial
        self._state.certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        self._save()

    def activate(self, initial_pin: str, puk: str) -> None:
        """Set the holder's first PIN (6 digits) and the PUK (8 digits); once only."""
        self._refuse_if_dead()
        if self._state.activated:
            raise CardStateError("the card is already activated; change the PIN instead")
        _check_digits(initial_pin, PIN_LENGTH, "PIN")
        _check_digits(puk, PUK_LENGTH, "PUK")
        self._state.pin = _Secret.of(initial_pin)
        self._state.puk = _Secret.of(puk)
        self._state.pin_failures = 0
        self._state.puk_failures = 0
        self._state.activated = True
        self._save()

    # -- PIN and PUK -----------------------------------------------------------------------

    def verify_pin(self, pin: str) -> bool:
        """Check the PIN on the card; wrong ones count, and the third blocks the PIN."""
        self._refuse_if_dead()
        stored = self._active_secret("pin")
        if self.pin_blocked:
            raise CardBlocked("the PIN is blocked; unblock it with the PUK", permanent=False)
        # Spend the try first and write it down, then compare (see the module docstring).
        self._state.pin_failures += 1
        self._save()
        if not stored.matches(pin):
            return False
        self._state.pin_failures = 0
        self._save()
        return True

    def change_pin(self, old: str, new: str) -> None:
        """Replace the PIN, given the current one (a wrong one counts)."""
        _check_digits(new, PIN_LENGTH, "PIN")
        if not self.verify_pin(old):
            raise WrongPin(self.pin_tries_left)
        self._state.pin = _Secret.of(new)
        self._save()

    def unblock(self, puk: str, new_pin: str) -> None:
        """Reset the PIN retry counter with the PUK and set a new PIN; 10 wrong PUKs kill it."""
        self._refuse_if_dead()
        stored = self._active_secret("puk")
        _check_digits(new_pin, PIN_LENGTH, "PIN")
        self._state.puk_failures += 1
        if self._state.puk_failures >= PUK_TRIES:
            # Written as dead before comparing; a correct tenth PUK revives it below.
            self._state.permanently_blocked = True
        self._save()
        if not stored.matches(puk):
            if self._state.permanently_blocked:
                raise CardBlocked("10 wrong PUKs: the card is blocked for good", permanent=True)
            raise WrongPuk(self.puk_tries_left)
        self._state.permanently_blocked = False
        self._state.puk_failures = 0
        self._state.pin_failures = 0
        self._state.pin = _Secret.of(new_pin)
        self._save()

    # -- signing ---------------------------------------------------------------------------

    def sign_challenge(
        self, *, domain: str, terminal_id: str, nonce: bytes, pin: str | None
    ) -> tuple[bytes, bool]:
        """Sign a terminal's challenge (identity.protocol), stating whether the PIN was checked.

        With a PIN, the card verifies it first and refuses to sign on a wrong one; without, it
        signs for "card alone" (pin_verified false). Returns (DER ECDSA signature, pin_verified).
        """
        self._refuse_if_dead()
        if not self._state.activated:
            raise CardStateError("the card is not activated")
        pin_verified = False
        if pin is not None:
            if not self.verify_pin(pin):
                raise WrongPin(self.pin_tries_left)
            pin_verified = True
        digest = challenge_digest(
            domain=domain, terminal_id=terminal_id, nonce=nonce, pin_verified=pin_verified
        )
        signature = self._key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return signature, pin_verified

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 / SHA-256 over ``data`` (DER signature), for other uses of the key."""
        self._refuse_if_dead()
        if not self._state.activated:
            raise CardStateError("the card is not activated")
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    # -- internals -------------------------------------------------------------------------

    def _refuse_if_dead(self) -> None:
        if self._state.permanently_blocked:
            raise CardBlocked("the card is blocked for good (10 wrong PUKs)", permanent=True)

    def _active_secret(self, name: str) -> _Secret:
        secret: _Secret | None = getattr(self._state, name)
        if not self._state.activated or secret is None:
            raise CardStateError("the card is not activated")
        return secret
