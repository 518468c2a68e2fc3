"""The rules of terminals: registration, challenges, the checks of a tap, QR redemption.

A tap is checked in a fixed order, each refusal a problem+json with a machine ``code`` and one
structured log event (``card_auth.refused``) ready for the audit ledger:

1. the nonce: taken atomically (GETDEL), issued to this very terminal, not expired;
2. the certificate: parses, is a card certificate, chains to our issuing CA now;
3. the card is not locked (five failed attempts in 15 minutes lock it for 30);
4. the card's status is good, in Redis (what every service sees) and in the PKI's row (truth);
5. the card is enabled for the application of the terminal's purpose;
6. the signature over challenge_digest(domain, terminal id, nonce, pin_verified) verifies.

A failed proof (nonce or signature) of a genuine card counts towards its lock; a policy
refusal (status, application) does not, as it proves nothing about who holds the card.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlmodel.ext.asyncio.session import AsyncSession

from identity.clients import service as clients
from identity.clients.models import Client, ClientKind
from identity.clients.schemas import ClientCreate
from identity.ecard.service import QR_CLAIMS, QR_SECONDS, QR_TYPE, QrPayload, sign_qr
from identity.pki import CertificateRejected, InvalidRequest
from identity.pki.certificates import load_csr
from identity.pki.models import CertificateStatus, IssuedCertificate, as_utc
from identity.pki.service import PkiService
from identity.scopes import PURPOSES, audiences
from identity.terminals import repository
from identity.terminals.cache import TtlCache
from identity.terminals.cards import (
    CardCertificate,
    CardDataError,
    certificate_der,
    decode_signature,
    fingerprint,
    jwk_thumbprint,
    nonce_bytes,
    read_card_certificate,
    signature_valid,
)
from identity.terminals.schemas import APP_PURPOSE, TerminalCreate, TerminalPublic
from identity.terminals.store import (
    FAILURE_LIMIT,
    FAILURE_WINDOW_SECONDS,
    LOCK_SECONDS,
    NONCE_SECONDS,
    IssuedNonce,
    TapStore,
)
from identity.tokens.issuer import IssuedToken, TokenIssuer
from services.kit.database import Database
from services.kit.errors import Problem
from services.kit.redis import RedisConnection
from services.kit.revocation import Revocations
from services.kit.tokens import AccessToken, TokenError, TokenVerifier, public_jwk

log = logging.getLogger(__name__)

TERMINAL_SCOPE = "terminal.auth"
# RFC 8176 authentication method references: "sc" smart card, "hwk" proof of possession of a
# hardware-secured key, "pin" the PIN. Card + PIN is two factors (DESIGN.md: acr 2).
PIN_ACR, PIN_AMR = "2", ("sc", "hwk", "pin")
CARD_ACR, CARD_AMR = "1", ("sc", "hwk")
# A scanned QR code proves possession of an app session, one factor; "qr" is not in the RFC
# 8176 registry, which section 6.1 allows (values are case-sensitive strings).
QR_ACR, QR_AMR = "1", ("qr",)
# Verified card certificates, by SHA-256 fingerprint: path validation costs ~190 us, and a
# card is tapped many times a day. Short, so a CA change is seen within a minute; status is
# never cached (checked on every tap).
CERTIFICATE_CACHE_SECONDS = 60.0
CERTIFICATE_CACHE_SIZE = 50_000
# Registered terminals: deactivating one, or revoking its certificate, takes effect within
# this long (its own tokens expire within 300 s anyway, and can be revoked by jti).
TERMINAL_CACHE_SECONDS = 10.0
TERMINAL_CACHE_SIZE = 10_000
APP_TERMINAL_PREFIX = "app:"
# RFC 9110 section 11.6.1: a 401 names a scheme; this one is the card challenge-response,
# so a client does not mistake a refused card for a refused bearer token.
_CARD_CHALLENGE = 'Card realm="onecard"'


class Refusal(Problem):
    """A refused tap, QR code or terminal: ``code`` says which check, ``detail`` what failed."""

    def __init__(
        self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None
    ) -> None:
        if status == 401:
            headers = {"WWW-Authenticate": _CARD_CHALLENGE, **(headers or {})}
        super().__init__(status, detail, headers=headers, code=code)
        self.code = code


@dataclass(frozen=True, slots=True)
class Terminal:
    """Who asked: a registered terminal, or the citizen's phone acting as one."""

    terminal_id: str
    purpose: str
    facility: str | None = None

    @property
    def actor(self) -> dict[str, Any]:
        """RFC 8693 section 4.1 ``act``: the party acting for the holder."""
        actor: dict[str, Any] = {"sub": self.terminal_id}
        if self.facility is not None:
            actor["facility"] = self.facility
        actor["purpose"] = self.purpose
        return actor


def app_terminal(installation_id: str) -> Terminal:
    """The phone of one app installation, reading the card over NFC."""
    return Terminal(terminal_id=APP_TERMINAL_PREFIX + installation_id, purpose=APP_PURPOSE)


@dataclass(frozen=True, slots=True)
class CardProof:
    """A tap that passed every check."""

    card: CardCertificate
    terminal: Terminal
    pin_verified: bool


@dataclass(frozen=True, slots=True)
class IssuedChallenge:
    nonce: str
    expires_in: int
    domain: str
    terminal_id: str


class CardAuthenticator:
    """Everything a tap needs, built once per process (``install_terminals``)."""

    def __init__(
        self,
        *,
        issuer: TokenIssuer,
        pki: PkiService,
        db: Database,
        redis: RedisConnection,
        revocations: Revocations,
        leeway: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.pki = pki
        self.db = db
        self.revocations = revocations
        self.store = TapStore(redis)
        # The origin the card binds its signature to: the platform's public URL (the issuer).
        self.domain = issuer.issuer
        self.leeway = leeway
        # Epoch seconds for every rule here (nonce expiry, failure window, lock, QR expiry);
        # tests replace it to move time.
        self.clock = clock
        self.certificates: TtlCache[str, CardCertificate] = TtlCache(
            ttl=CERTIFICATE_CACHE_SECONDS, max_size=CERTIFICATE_CACHE_SIZE
        )
        self.terminals: TtlCache[str, Terminal] = TtlCache(
            ttl=TERMINAL_CACHE_SECONDS, max_size=TERMINAL_CACHE_SIZE
        )
        self.qr_verifier = TokenVerifier(
            issuer=issuer.issuer,
            audience=issuer.issuer,
            keys=issuer.keys,
            leeway=leeway,
            # Late-bound: follows a clock swapped in after construction (tests).
            clock=lambda: self.clock(),  # noqa: PLW0108
        )

    # -- terminals -------------------------------------------------------------------------

    async def terminal(self, *, token: AccessToken) -> Terminal:
        """The active registered terminal whose own token this is, or 403."""
        if token.sub != token.client_id or token.act is not None:
            raise Refusal(
                403,
                "not_a_terminal",
                "use the terminal's own client_credentials token, not one acting for someone",
            )
        cached = self.terminals.get(token.client_id)
        if cached is not None:
            return cached
        async with self.db.sessionmaker() as session:  # read-only, only on a cache miss
            client = await repository.get_client(session, token.client_id)
            row = None
            if client is not None and client.certificate_serial is not None:
                row = await self.pki.get_certificate(
                    session=session, serial=client.certificate_serial
                )
        if (
            client is None
            or not client.active
            or client.kind != ClientKind.TERMINAL
            or client.purpose not in PURPOSES
            or client.purpose == APP_PURPOSE
        ):
            raise Refusal(403, "not_a_terminal", "this client is not an active registered terminal")
        if row is not None and row.status != CertificateStatus.GOOD:
            raise Refusal(
                403, "terminal_certificate", f"the terminal's certificate is {row.status}"
            )
        terminal = Terminal(
            terminal_id=client.client_id, purpose=client.purpose, facility=client.facility
        )
        self.terminals.put(terminal.terminal_id, terminal)
        return terminal

    async def challenge(self, *, terminal: Terminal) -> IssuedChallenge:
        """A fresh nonce bound to the terminal (Web eID: >= 256 bits, single use)."""
        nonce = await self.store.new_nonce(terminal_id=terminal.terminal_id, now=self.clock())
        return IssuedChallenge(
            nonce=nonce,
            expires_in=NONCE_SECONDS,
            domain=self.domain,
            terminal_id=terminal.terminal_id,
        )

    # -- the tap ---------------------------------------------------------------------------

    async def verify_tap(
        self,
        *,
        terminal: Terminal,
        nonce: str,
        certificate: str,
        signature: str,
        pin_verified: bool,
    ) -> CardProof:
        """Run every check of a tap, in the order of the module docstring."""
        now = self.clock()
        card: CardCertificate | None = None
        unverified: x509.Certificate | None = None  # parsed, chain not yet checked
        problem: CardDataError | None = None
        try:
            der = certificate_der(certificate)
            card = self.certificates.get(fingerprint(der))
            if card is None:
                unverified, card = read_card_certificate(der)
        except CardDataError as exc:
            problem = exc
        taken = await self.store.take(
            nonce=nonce, card_serial=card.card_serial if card is not None else None
        )

        # 1. The nonce.
        nonce_problem = self._nonce_problem(taken.nonce, terminal, now)
        if nonce_problem is not None:
            code, detail = nonce_problem
            if card is not None and await self._genuine(card, unverified):
                detail += await self._count_failure(card, now)
            raise self._refuse(401, code, detail, terminal, card)

        # 2. The certificate.
        if problem is not None:
            raise self._refuse(401, problem.code, problem.detail, terminal, None)
        assert card is not None
        if unverified is not None:
            try:
                await self._verify_chain(card, unverified)
            except CertificateRejected as exc:
                raise self._refuse(401, "chain_invalid", str(exc), terminal, card) from None
        elif not card.not_before <= datetime.fromtimestamp(now, UTC) <= card.not_after:
            self.certificates.discard(card.fingerprint)
            raise self._refuse(
                401, "chain_invalid", "the card certificate is not valid now", terminal, card
            )

        # 3. The lock.
        if taken.locked_until is not None and taken.locked_until > now:
            wait = math.ceil(taken.locked_until - now)
            raise self._refuse(
                403,
                "card_locked",
                f"the card is locked after {FAILURE_LIMIT} failed attempts; retry after {wait} s",
                terminal,
                card,
                headers={"Retry-After": str(wait)},
            )

        # 4. The status: what every service sees, then the truth.
        await self._check_status(card=card, terminal=terminal)

        # 5. The application.
        self._check_application(card, terminal)

        # 6. The signature.
        try:
            raw = decode_signature(signature)
        except CardDataError as exc:
            detail = exc.detail + await self._count_failure(card, now)
            raise self._refuse(401, exc.code, detail, terminal, card) from None
        if not signature_valid(
            card,
            raw,
            domain=self.domain,
            terminal_id=terminal.terminal_id,
            nonce=nonce_bytes(nonce),
            pin_verified=pin_verified,
        ):
            detail = (
                "the signature does not verify for this card, nonce, terminal and domain"
                + await self._count_failure(card, now)
            )
            raise self._refuse(401, "signature_invalid", detail, terminal, card)

        if taken.had_failures:
            await self.store.clear_failures(card_serial=card.card_serial)
        log.info(
            "card authenticated",
            extra={
                "event": "card_auth.succeeded",
                "terminal": terminal.terminal_id,
                "purpose": terminal.purpose,
                "card": card.card_serial,
                "holder": card.pseudonym,
                "pin_verified": pin_verified,
            },
        )
        return CardProof(card=card, terminal=terminal, pin_verified=pin_verified)

    def holder_token(self, proof: CardProof, *, sid: str | None = None) -> IssuedToken:
        """The holder's access token, acting through the terminal (RFC 8693 ``act``)."""
        acr, amr = (PIN_ACR, PIN_AMR) if proof.pin_verified else (CARD_ACR, CARD_AMR)
        return self._issue(
            terminal=proof.terminal,
            subject=proof.card.pseudonym,
            card_serial=proof.card.card_serial,
            acr=acr,
            amr=amr,
            sid=sid,
        )

    def _issue(
        self,
        *,
        terminal: Terminal,
        subject: str,
        card_serial: str,
        acr: str,
        amr: tuple[str, ...],
        sid: str | None = None,
    ) -> IssuedToken:
        purpose = PURPOSES[terminal.purpose]
        return self.issuer.issue(
            subject=subject,
            client_id=terminal.terminal_id,
            scopes=purpose.scopes,
            audience=audiences(self.issuer.issuer, purpose.prefixes),
            acr=acr,
            amr=amr,
            act=terminal.actor,
            card=card_serial,
            sid=sid,
        )

    # -- cards known by serial (the e-card) ------------------------------------------------

    async def active_card(
        self, *, session: AsyncSession, card_serial: str, subject: str
    ) -> CardCertificate:
        """The card with this serial, if it is the holder's and active now, else 403."""
        row = await repository.latest_card_certificate(session, card_serial=card_serial)
        if row is None:
            raise Refusal(403, "card_unknown", f"no card {card_serial} was issued here")
        if row.subject_id != subject:
            raise Refusal(403, "card_not_holders", f"card {card_serial} is not this holder's")
        if row.status != CertificateStatus.GOOD:
            raise Refusal(403, f"card_{row.status}", f"card {card_serial} is {row.status}")
        if as_utc(row.not_after) <= datetime.fromtimestamp(self.clock(), UTC):
            raise Refusal(403, "card_expired", f"card {card_serial} has expired")
        status = await self.revocations.card_status(card_serial)
        if status is not None:
            raise Refusal(403, f"card_{status}", f"card {card_serial} is {status}")
        return self._our_certificate(row)

    def _our_certificate(self, row: IssuedCertificate) -> CardCertificate:
        # A row of our own certificates table: issued here, no chain to check.
        key = fingerprint(row.der)
        card = self.certificates.get(key)
        if card is None:
            _, card = read_card_certificate(row.der)
            self.certificates.put(key, card)
        return card

    async def issue_qr(self, *, session: AsyncSession, token: AccessToken) -> QrPayload:
        """A dynamic QR payload for the holder of ``token``'s active card."""
        if token.card is None:
            raise Refusal(403, "no_card", "this token was not issued for a card")
        await self.active_card(session=session, card_serial=token.card, subject=token.sub)
        return sign_qr(issuer=self.issuer, subject=token.sub, card=token.card, now=self.clock())

    async def redeem_qr(self, *, session: AsyncSession, terminal: Terminal, qr: str) -> IssuedToken:
        """Check a scanned QR payload, use it up, and issue the holder's token."""
        try:
            claims = await self.qr_verifier.verify_claims(
                qr, typ=QR_TYPE, max_lifetime=QR_SECONDS, require=QR_CLAIMS
            )
        except TokenError as exc:
            raise self._refuse(
                401, "qr_invalid", f"QR code refused: {exc.reason}", terminal, None
            ) from None
        card_serial, subject = claims["card"], claims["sub"]
        if type(card_serial) is not str or not card_serial:
            raise self._refuse(401, "qr_invalid", "QR code names no card", terminal, None)
        ttl = math.ceil(claims["exp"] + self.leeway - self.clock()) + 1
        if not await self.store.use_qr(jti=str(claims["jti"]), ttl=ttl):
            raise self._refuse(401, "qr_replayed", "QR code already used", terminal, None)
        try:
            card = await self.active_card(session=session, card_serial=card_serial, subject=subject)
        except Refusal as exc:
            raise self._refuse(exc.status, exc.code, exc.detail, terminal, None) from None
        self._check_application(card, terminal)
        log.info(
            "QR code redeemed",
            extra={
                "event": "qr.redeemed",
                "terminal": terminal.terminal_id,
                "purpose": terminal.purpose,
                "card": card_serial,
                "holder": subject,
            },
        )
        return self._issue(
            terminal=terminal, subject=subject, card_serial=card_serial, acr=QR_ACR, amr=QR_AMR
        )

    # -- the checks ------------------------------------------------------------------------

    def _nonce_problem(
        self, issued: IssuedNonce | None, terminal: Terminal, now: float
    ) -> tuple[str, str] | None:
        if issued is None:
            return "nonce_unknown", "the nonce is unknown, expired or already used"
        if issued.terminal_id != terminal.terminal_id:
            # It was consumed anyway: a nonce seen at the wrong terminal is burnt.
            return "nonce_foreign", "the nonce was issued to another terminal"
        if now > issued.expires_at:
            return "nonce_expired", f"the nonce expired (answer within {NONCE_SECONDS} s)"
        return None

    async def _verify_chain(self, card: CardCertificate, unverified: x509.Certificate) -> None:
        """RFC 5280 path validation to our root, then the certificate joins the cache."""
        # The session is only for the PKI to load a CA another process created since we
        # started; the chain itself is checked in memory.
        async with self.db.sessionmaker() as session:
            await self.pki.verify_chain(unverified, session=session)
        self.certificates.put(card.fingerprint, card)

    async def _genuine(self, card: CardCertificate, unverified: x509.Certificate | None) -> bool:
        """Whether the certificate is one of ours, so a failure may count against its card.

        Only a verified card is counted: anyone can make a certificate naming any serial.
        """
        if unverified is None:
            return True
        try:
            await self._verify_chain(card, unverified)
        except CertificateRejected:
            return False
        return True

    async def _count_failure(self, card: CardCertificate, now: float) -> str:
        """Count a failed proof; the words to add to the refusal if it locked the card."""
        locked_until = await self.store.record_failure(card_serial=card.card_serial, now=now)
        if locked_until is None:
            return ""
        log.warning(
            "card locked",
            extra={
                "event": "card_auth.locked",
                "card": card.card_serial,
                "until": locked_until,
            },
        )
        return (
            f"; that was the {FAILURE_LIMIT}th failed attempt within "
            f"{FAILURE_WINDOW_SECONDS // 60} minutes: the card is locked for "
            f"{LOCK_SECONDS // 60} minutes"
        )

    async def _check_status(self, *, card: CardCertificate, terminal: Terminal) -> None:
        status = await self.revocations.card_status(card.card_serial)
        if status is not None:
            raise self._refuse(
                403, f"card_{status}", f"card {card.card_serial} is {status}", terminal, card
            )
        truth = await repository.certificate_status(self.db, serial=card.serial)
        if truth is None:
            raise self._refuse(
                403, "card_unknown", "the card certificate is not on record", terminal, card
            )
        if truth != CertificateStatus.GOOD:
            raise self._refuse(
                403, f"card_{truth}", f"card {card.card_serial} is {truth}", terminal, card
            )

    def _check_application(self, card: CardCertificate, terminal: Terminal) -> None:
        application = PURPOSES[terminal.purpose].application
        if application not in card.applications:
            raise self._refuse(
                403,
                "application_not_enabled",
                f"the card is not enabled for {application}, which a {terminal.purpose} needs",
                terminal,
                card,
            )

    def _refuse(
        self,
        status: int,
        code: str,
        detail: str,
        terminal: Terminal,
        card: CardCertificate | None,
        *,
        headers: dict[str, str] | None = None,
    ) -> Refusal:
        log.warning(
            "card authentication refused",
            extra={
                "event": "card_auth.refused",
                "code": code,
                "terminal": terminal.terminal_id,
                "purpose": terminal.purpose,
                "card": card.card_serial if card is not None else None,
                "reason": detail,
            },
        )
        return Refusal(status, code, detail, headers=headers)


# -- registration --------------------------------------------------------------------------


async def register_terminal(
    *, session: AsyncSession, pki: PkiService, data: TerminalCreate
) -> tuple[Client, IssuedCertificate]:
    """Register a terminal (a client of kind terminal) and certify its key, from its CSR."""
    try:
        csr = load_csr(data.csr)
    except InvalidRequest as exc:
        raise Problem(422, str(exc)) from None
    public = csr.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)  # load_csr admits EC P-256 only
    terminal_id = clients.new_client_id(ClientKind.TERMINAL)
    try:
        row = await pki.issue_terminal_certificate(
            data.csr,
            session=session,
            terminal_id=terminal_id,
            facility=data.facility,
            purpose=data.purpose,
        )
    except InvalidRequest as exc:
        raise Problem(422, str(exc)) from None
    jwk: dict[str, Any] = public_jwk(public, jwk_thumbprint(public))
    client = await clients.register(
        session=session,
        data=ClientCreate(
            name=data.name or f"{data.purpose} at {data.facility}",
            kind=ClientKind.TERMINAL,
            jwk=jwk,
            scopes=[TERMINAL_SCOPE],
            facility=data.facility,
            purpose=data.purpose,
        ),
        client_id=terminal_id,
    )
    client.certificate_serial = row.serial
    session.add(client)
    await session.flush()
    log.info(
        "terminal registered",
        extra={"terminal": terminal_id, "purpose": data.purpose, "facility": data.facility},
    )
    return client, row


async def get_terminal(
    *, session: AsyncSession, pki: PkiService, terminal_id: str
) -> tuple[Client, IssuedCertificate | None]:
    client = await repository.get_client(session, terminal_id)
    if client is None or client.kind != ClientKind.TERMINAL:
        raise Problem(404, f"no terminal {terminal_id!r}")
    row = None
    if client.certificate_serial is not None:
        row = await pki.get_certificate(session=session, serial=client.certificate_serial)
    return client, row


def public_view(client: Client, row: IssuedCertificate | None) -> TerminalPublic:
    purpose = client.purpose or ""
    return TerminalPublic(
        terminal_id=client.client_id,
        name=client.name,
        facility=client.facility,
        purpose=purpose,
        application=PURPOSES[purpose].application if purpose in PURPOSES else "",
        scopes=client.allowed_scopes.split(),
        kid=client.jwk.get("kid", ""),
        certificate_serial=client.certificate_serial,
        certificate=(
            row.certificate.public_bytes(serialization.Encoding.PEM).decode()
            if row is not None
            else None
        ),
        active=client.active,
        created_at=client.created_at,
    )
