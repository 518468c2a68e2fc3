"""The card PKI's rules: CAs and rollover, issuing, status changes, CRLs and OCSP answers.

One :class:`PkiService` per process holds the decrypted CA keys (decrypted once, cached by kid,
never logged). Which CA is *current* is always read from the database, never from that cache,
so a rollover made by one process is followed by every other at its next issuance.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from identity.pki import (
    AuthorityUnavailable,
    StatusConflict,
    UnknownCertificate,
    UnknownIssuer,
)
from identity.pki import repository as repo
from identity.pki.authority import (
    Authority,
    SigningCa,
    authority_key_id,
    build_issuing_certificate,
    build_root_certificate,
    generate_key,
    key_id,
)
from identity.pki.certificates import (
    TERMINAL_VALIDITY,
    PublicUrls,
    build_card_certificate,
    build_terminal_certificate,
    check_applications,
    load_csr,
    serial_hex,
)
from identity.pki.keystore import KeyStore
from identity.pki.models import (
    CaKey,
    CaRole,
    CaStatus,
    CertificateKind,
    CertificateStatus,
    Crl,
    CrlKind,
    IssuedCertificate,
    as_utc,
)
from identity.pki.status import (
    DELTA_CRL_VALIDITY,
    FULL_CRL_VALIDITY,
    REVOCATION_REASONS,
    CertState,
    MalformedOcspRequest,
    build_crl,
    delta_entries,
    full_entries,
    issuer_matches,
    ocsp_answer,
    ocsp_error,
    parse_ocsp_request,
)
from identity.settings import IdentitySettings
from services.kit.database import Database
from services.kit.sqltypes import utcnow

log = logging.getLogger(__name__)

# A full CRL is re-issued after a status change only if the last one is at least this old;
# in between, the delta CRL carries the change (RFC 5280 section 5.2.4). OCSP is always live.
FULL_CRL_INTERVAL = timedelta(hours=1)


class PkiService:
    """The provincial card PKI of one identity process."""

    def __init__(
        self,
        settings: IdentitySettings,
        *,
        public_base_url: str | None = None,
        full_crl_interval: timedelta = FULL_CRL_INTERVAL,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._authority = Authority(KeyStore(settings.secret("key_encryption_key")))
        self.urls = PublicUrls(public_base_url or settings.public_url)
        self._full_crl_interval = full_crl_interval
        self._clock = clock

    def __repr__(self) -> str:
        return f"PkiService(base={self.urls.base!r}, {self._authority!r})"

    # -- the authority ---------------------------------------------------------------------

    async def start(self, *, db: Database, attempts: int = 3) -> None:
        """At process start: make sure the CAs exist, in a transaction of its own.

        Two processes starting at once both find no CA and both try to create one; the unique
        index on (role, status) lets exactly one commit. The other gets IntegrityError, rolls
        back and, on its next attempt, loads the winner's CAs.
        """
        for attempt in range(1, attempts + 1):
            async with db.sessionmaker() as session:
                try:
                    await self.ensure_authority(session=session)
                    await session.commit()
                    return
                except IntegrityError:
                    await session.rollback()
                    if attempt == attempts:
                        raise
                    log.info("another process created the CAs first; loading theirs")

    async def ensure_authority(self, *, session: AsyncSession) -> None:
        """Create the root and the first issuing CA unless they exist, then load the CAs."""
        now = self._clock()
        root_row = await repo.ca_with_status(session, role=CaRole.ROOT, status=CaStatus.CURRENT)
        if root_row is None:
            root_key = generate_key()
            root_row = self._ca_row(
                build_root_certificate(root_key, now=now),
                root_key,
                role=CaRole.ROOT,
                status=CaStatus.CURRENT,
                now=now,
            )
            await repo.add(session, root_row)
            root = SigningCa(
                kid=root_row.kid, role=CaRole.ROOT, certificate=root_row.certificate, key=root_key
            )
        else:
            root = self._authority.load(root_row)
        issuing = await repo.ca_with_status(session, role=CaRole.ISSUING, status=CaStatus.CURRENT)
        if issuing is None:
            row, _ = self._new_issuing(root, status=CaStatus.CURRENT, now=now)
            await repo.add(session, row)
        # Only now, with every row flushed, do keys enter the cache: a lost race leaves none.
        await self.refresh(session=session)

    async def refresh(self, *, session: AsyncSession) -> None:
        """Load every live CA (and decrypt its key) that this process has not seen yet."""
        for row in await repo.live_cas(session, now=self._clock()):
            self._authority.load(row)

    async def prepare_next_issuing_ca(self, *, session: AsyncSession) -> SigningCa:
        """Create (or return) the *next* issuing CA, published before it signs anything."""
        existing = await repo.ca_with_status(session, role=CaRole.ISSUING, status=CaStatus.NEXT)
        if existing is not None:
            return await self._ca(session, existing.kid)
        row, ca = self._new_issuing(
            await self._root(session), status=CaStatus.NEXT, now=self._clock()
        )
        await repo.add(session, row)
        # Not cached until committed and looked up again: a rolled-back CA must not linger.
        return ca

    async def rollover_issuing_ca(self, *, session: AsyncSession) -> SigningCa:
        """Make a new issuing CA (the prepared *next* one, if any) current; retire the old one.

        The retired CA stays valid until its own notAfter: the cards it issued keep verifying
        (their Authority Key Identifier still finds it) and it keeps signing their CRLs and
        OCSP answers. No live card is re-issued.
        """
        current = await repo.ca_with_status(session, role=CaRole.ISSUING, status=CaStatus.CURRENT)
        if current is None:
            raise AuthorityUnavailable("there is no current issuing CA to roll over")
        prepared = await repo.ca_with_status(session, role=CaRole.ISSUING, status=CaStatus.NEXT)
        # Compare-and-set: of two rollovers at once, one retires the CA and the other stops.
        retired = await repo.move_ca_status(
            session, kid=current.kid, from_status=CaStatus.CURRENT, to_status=CaStatus.RETIRED
        )
        if not retired:
            raise StatusConflict("another rollover of the issuing CA is in progress")
        if prepared is not None:
            await repo.move_ca_status(
                session, kid=prepared.kid, from_status=CaStatus.NEXT, to_status=CaStatus.CURRENT
            )
            ca = await self._ca(session, prepared.kid)
        else:
            row, ca = self._new_issuing(
                await self._root(session), status=CaStatus.CURRENT, now=self._clock()
            )
            await repo.add(session, row)
        log.info("issuing CA rolled over", extra={"retired": current.kid, "current": ca.kid})
        return ca

    async def ca_certificates(self, *, session: AsyncSession) -> list[x509.Certificate]:
        """Every live CA certificate: issuing CAs (current, next, retired), then the root."""
        rows = await repo.live_cas(session, now=self._clock())
        issuing = [row.certificate for row in rows if row.role == CaRole.ISSUING]
        roots = [row.certificate for row in rows if row.role == CaRole.ROOT]
        return issuing + roots

    async def ca_chain_pem(self, *, session: AsyncSession) -> str:
        """:meth:`ca_certificates` as one PEM document (RFC 7468)."""
        certificates = await self.ca_certificates(session=session)
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)

    async def current_issuer(self, *, session: AsyncSession) -> SigningCa:
        """The issuing CA that signs new certificates now."""
        row = await repo.ca_with_status(session, role=CaRole.ISSUING, status=CaStatus.CURRENT)
        if row is None:
            raise AuthorityUnavailable("the card CAs do not exist yet (ensure_authority)")
        return await self._ca(session, row.kid)

    # -- issuing ---------------------------------------------------------------------------

    async def issue_card_certificate(
        self,
        csr_pem: str | bytes,
        *,
        session: AsyncSession,
        pseudonym: str,
        card_serial: str,
        applications: Iterable[str],
        not_after: datetime,
    ) -> IssuedCertificate:
        """Certify a card's key (from its CSR) for the citizen's pseudonym and applications."""
        csr = load_csr(csr_pem)
        chosen = check_applications(applications)
        issuer = await self.current_issuer(session=session)
        now = self._clock()
        certificate = build_card_certificate(
            csr,
            issuer=issuer,
            serial=_new_serial(),
            pseudonym=pseudonym,
            card_serial=card_serial,
            applications=chosen,
            not_after=not_after,
            now=now,
            urls=self.urls,
        )
        return await self._record(
            session,
            certificate,
            kind=CertificateKind.CARD,
            subject_id=pseudonym,
            device_serial=card_serial,
            issuer=issuer,
            now=now,
        )

    async def issue_terminal_certificate(
        self,
        csr_pem: str | bytes,
        *,
        session: AsyncSession,
        terminal_id: str,
        facility: str,
        purpose: str,
        not_after: datetime | None = None,
    ) -> IssuedCertificate:
        """Certify a registered terminal's key: CN terminal id, O facility, OU purpose."""
        csr = load_csr(csr_pem)
        issuer = await self.current_issuer(session=session)
        now = self._clock()
        certificate = build_terminal_certificate(
            csr,
            issuer=issuer,
            serial=_new_serial(),
            terminal_id=terminal_id,
            facility=facility,
            purpose=purpose,
            not_after=not_after or now + TERMINAL_VALIDITY,
            now=now,
            urls=self.urls,
        )
        return await self._record(
            session,
            certificate,
            kind=CertificateKind.TERMINAL,
            subject_id=terminal_id,
            device_serial=terminal_id,
            issuer=issuer,
            now=now,
        )

    async def verify_chain(self, cert: x509.Certificate, *, session: AsyncSession) -> None:
        """Raise CertificateRejected unless ``cert`` chains to one of our issuing CAs now.

        Current and retired issuing CAs both count; the issuer is found by the certificate's
        Authority Key Identifier. Status (suspended, revoked) is a separate question:
        :meth:`get_certificate`.
        """
        kid = authority_key_id(cert)
        if kid and self._authority.get(kid) is None:
            # A CA another process created since we started; an unknown one is rejected below.
            with contextlib.suppress(UnknownIssuer):
                await self._ca(session, kid)
        self._authority.verify_chain(cert, at=self._clock())

    async def get_certificate(
        self, *, session: AsyncSession, serial: int | str
    ) -> IssuedCertificate:
        """The record of a certificate we issued, with its status."""
        row = await repo.get_certificate(session, serial=_serial_key(serial))
        if row is None:
            raise UnknownCertificate(
                f"no certificate with serial {_serial_key(serial)} was issued here"
            )
        return row

    # -- status ----------------------------------------------------------------------------

    async def set_status(
        self,
        *,
        session: AsyncSession,
        serial: int | str,
        status: CertificateStatus | str,
        reason: x509.ReasonFlags | str | None = None,
    ) -> IssuedCertificate:
        """Suspend (certificateHold), resume, or revoke a certificate (RFC 5280 section 5.3.1).

        Suspending and resuming may repeat; revoking is final. A change that changes nothing
        (suspending a suspended certificate) is accepted and returns the record as it is.
        """
        target = CertificateStatus(status)
        wanted = _reason_for(target, reason)
        row = await self.get_certificate(session=session, serial=serial)
        if _unchanged(row, target, wanted):
            return row
        _check_transition(row, target)
        # Take the issuer's lock, then read the certificate again: the transition is judged on
        # the status as it is now, not as it was before a concurrent change committed.
        crl_number = await repo.bump_status_version(session, kid=row.issuer_kid)
        fresh = await repo.get_certificate(session, serial=row.serial, for_update=True)
        assert fresh is not None  # certificates are never deleted
        row = fresh
        if _unchanged(row, target, wanted):
            return row
        _check_transition(row, target)
        now = self._clock()
        row.status = target
        row.revocation_reason = wanted.value if wanted is not None else None
        # The revocationDate of CRL entries and OCSP answers; a lifted hold is dated by
        # updated_at in its removeFromCRL entry.
        row.revoked_at = now if wanted is not None else None
        row.crl_number_at_change = crl_number
        row.updated_at = now
        session.add(row)
        await session.flush()
        log.info(
            "certificate status changed",
            extra={"serial": row.serial, "status": target.value, "reason": row.revocation_reason},
        )
        return row

    async def crl(
        self, *, session: AsyncSession, issuer: str | None = None, delta: bool = False
    ) -> bytes:
        """The signed full (or delta) CRL of an issuing CA (default: the current one), DER.

        A stored CRL is served again while it is fresh; otherwise a new one is issued, numbered
        from the issuer's single CRL sequence.
        """
        ca = await self._issuing_ca(session, issuer)
        ca_row = await repo.get_ca(session, kid=ca.kid)
        assert ca_row is not None
        now = self._clock()
        full = await repo.latest_crl(session, issuer_kid=ca.kid, kind=CrlKind.FULL)
        if full is None or not self._full_is_fresh(full, ca_row, now=now, for_delta=delta):
            full = await self._issue_crl(session, ca, base=None)
        if not delta:
            return full.der
        latest = await repo.latest_crl(session, issuer_kid=ca.kid, kind=CrlKind.DELTA)
        if (
            latest is not None
            and latest.base_number == full.number
            and latest.status_version == ca_row.status_version
            and _within_half_life(latest, now=now)
        ):
            return latest.der
        return (await self._issue_crl(session, ca, base=full)).der

    async def ocsp(self, request_der: bytes, *, session: AsyncSession) -> bytes:
        """Answer an OCSP request (RFC 6960), DER in, DER out; never raises on bad input."""
        try:
            query = parse_ocsp_request(request_der)
        except MalformedOcspRequest:
            return ocsp_error(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        issuer: SigningCa | None = None
        for row in await repo.live_cas(session, now=self._clock()):
            if row.role == CaRole.ISSUING:
                candidate = await self._ca(session, row.kid)
                if issuer_matches(query, candidate):
                    issuer = candidate
                    break
        if issuer is None:
            # RFC 6960 section 2.3: we are not a responder for that issuer.
            return ocsp_error(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        cert = await repo.get_certificate(session, serial=serial_hex(query.serial))
        state = _state(cert) if cert is not None and cert.issuer_kid == issuer.kid else None
        return ocsp_answer(query, issuer=issuer, state=state, now=self._clock())

    # -- internals -------------------------------------------------------------------------

    def _ca_row(
        self,
        certificate: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        *,
        role: CaRole,
        status: CaStatus,
        now: datetime,
        issuer_kid: str | None = None,
    ) -> CaKey:
        return CaKey(
            kid=key_id(key.public_key()),
            role=role,
            status=status,
            subject=certificate.subject.rfc4514_string(),
            issuer_kid=issuer_kid,
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
            encrypted_key_pem=self._authority.seal(key),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            created_at=now,
        )

    def _new_issuing(
        self, root: SigningCa, *, status: CaStatus, now: datetime
    ) -> tuple[CaKey, SigningCa]:
        key = generate_key()
        certificate = build_issuing_certificate(key, root=root, now=now)
        row = self._ca_row(
            certificate, key, role=CaRole.ISSUING, status=status, now=now, issuer_kid=root.kid
        )
        return row, SigningCa(kid=row.kid, role=CaRole.ISSUING, certificate=certificate, key=key)

    async def _ca(self, session: AsyncSession, kid: str) -> SigningCa:
        cached = self._authority.get(kid)
        if cached is not None:
            return cached
        row = await repo.get_ca(session, kid=kid)
        if row is None:
            raise UnknownIssuer(f"no CA with key id {kid}")
        if row.issuer_kid:
            await self._ca(session, row.issuer_kid)  # its root first
        return self._authority.load(row)

    async def _root(self, session: AsyncSession) -> SigningCa:
        row = await repo.ca_with_status(session, role=CaRole.ROOT, status=CaStatus.CURRENT)
        if row is None:
            raise AuthorityUnavailable("the root CA does not exist yet (ensure_authority)")
        return await self._ca(session, row.kid)

    async def _issuing_ca(self, session: AsyncSession, kid: str | None) -> SigningCa:
        if kid is None:
            return await self.current_issuer(session=session)
        ca = await self._ca(session, kid)
        if ca.role is not CaRole.ISSUING:
            raise UnknownIssuer(f"CA {kid} is not an issuing CA")
        if ca.not_after <= self._clock():
            raise UnknownIssuer(f"issuing CA {kid} has expired")
        return ca

    async def _record(
        self,
        session: AsyncSession,
        certificate: x509.Certificate,
        *,
        kind: CertificateKind,
        subject_id: str,
        device_serial: str,
        issuer: SigningCa,
        now: datetime,
    ) -> IssuedCertificate:
        row = IssuedCertificate(
            serial=serial_hex(certificate.serial_number),
            kind=kind,
            subject_id=subject_id,
            device_serial=device_serial,
            issuer_kid=issuer.kid,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            der=certificate.public_bytes(serialization.Encoding.DER),
            status=CertificateStatus.GOOD,
            created_at=now,
            updated_at=now,
        )
        await repo.add(session, row)
        log.info(
            "certificate issued",
            extra={"serial": row.serial, "kind": kind.value, "issuer": issuer.kid},
        )
        return row

    def _full_is_fresh(self, crl: Crl, ca_row: CaKey, *, now: datetime, for_delta: bool) -> bool:
        if not _within_half_life(crl, now=now):
            return False
        if for_delta or crl.status_version == ca_row.status_version:
            # A delta is relative to the full CRL as it stands: never re-base it just to
            # serve a delta, or clients holding that full CRL could not apply the delta.
            return True
        return now - as_utc(crl.this_update) < self._full_crl_interval

    async def _issue_crl(self, session: AsyncSession, ca: SigningCa, *, base: Crl | None) -> Crl:
        number, version = await repo.next_crl_number(session, kid=ca.kid)
        now = self._clock()
        if base is None:
            rows = await repo.listed_certificates(session, issuer_kid=ca.kid)
            entries = full_entries(_state(row) for row in rows)
            validity = FULL_CRL_VALIDITY
        else:
            rows = await repo.changed_since(session, issuer_kid=ca.kid, crl_number=base.number)
            entries = delta_entries(_state(row) for row in rows)
            validity = DELTA_CRL_VALIDITY
        crl = build_crl(
            issuer=ca,
            number=number,
            entries=entries,
            this_update=now,
            next_update=now + validity,
            urls=self.urls,
            base_number=base.number if base is not None else None,
        )
        row = Crl(
            issuer_kid=ca.kid,
            kind=CrlKind.FULL if base is None else CrlKind.DELTA,
            number=number,
            base_number=base.number if base is not None else None,
            status_version=version,
            this_update=now,
            next_update=now + validity,
            der=crl.public_bytes(serialization.Encoding.DER),
        )
        await repo.add(session, row)
        other = await repo.latest_crl(
            session, issuer_kid=ca.kid, kind=CrlKind.DELTA if base is None else CrlKind.FULL
        )
        keep = [crl.id for crl in (row, other) if crl is not None and crl.id is not None]
        await repo.prune_crls(session, issuer_kid=ca.kid, keep=keep)
        return row


def _new_serial() -> int:
    # RFC 5280 section 4.1.2.2: positive, at most 20 octets; CA/B Forum asks for >= 64 random
    # bits. cryptography's helper gives 159 random bits (positive in 20 octets).
    serial = x509.random_serial_number()
    return serial or _new_serial()


def _serial_key(serial: int | str) -> str:
    if isinstance(serial, int):
        return serial_hex(serial)
    try:
        return serial_hex(int(serial, 16))
    except ValueError:
        raise UnknownCertificate(f"{serial!r} is not a hexadecimal serial number") from None


def _reason_for(
    target: CertificateStatus, reason: x509.ReasonFlags | str | None
) -> x509.ReasonFlags | None:
    flag = _parse_reason(reason)
    if target is CertificateStatus.GOOD:
        if flag not in (None, x509.ReasonFlags.remove_from_crl):
            raise StatusConflict(f"resuming a certificate takes no reason, not {flag}")
        return None
    if target is CertificateStatus.SUSPENDED:
        if flag not in (None, x509.ReasonFlags.certificate_hold):
            raise StatusConflict(f"a suspension's reason is certificateHold, not {flag}")
        return x509.ReasonFlags.certificate_hold
    flag = flag or x509.ReasonFlags.unspecified
    if flag not in REVOCATION_REASONS:
        allowed = ", ".join(sorted(r.value for r in REVOCATION_REASONS))
        raise StatusConflict(f"{flag.value} is not a revocation reason here; allowed: {allowed}")
    return flag


def _parse_reason(reason: x509.ReasonFlags | str | None) -> x509.ReasonFlags | None:
    if reason is None or isinstance(reason, x509.ReasonFlags):
        return reason
    try:
        return x509.ReasonFlags(reason)  # "keyCompromise", RFC 5280 spelling
    except ValueError:
        pass
    try:
        return x509.ReasonFlags[reason]  # "key_compromise"
    except KeyError:
        raise StatusConflict(f"unknown revocation reason {reason!r}") from None


def _unchanged(
    row: IssuedCertificate, target: CertificateStatus, reason: x509.ReasonFlags | None
) -> bool:
    current_reason = row.revocation_reason
    return row.status == target and (
        target is CertificateStatus.GOOD or current_reason == (reason.value if reason else None)
    )


def _check_transition(row: IssuedCertificate, target: CertificateStatus) -> None:
    # RFC 5280 section 5.3.1: only a certificate on hold may come back; revocation is final.
    # (Good -> good never gets here: it changes nothing.)
    if row.status == CertificateStatus.REVOKED:
        raise StatusConflict(
            f"certificate {row.serial} is revoked; revocation is final, not {target.value}"
        )


def _state(row: IssuedCertificate) -> CertState:
    reason = (
        None
        if row.status == CertificateStatus.GOOD or row.revocation_reason is None
        else x509.ReasonFlags(row.revocation_reason)
    )
    return CertState(
        serial=row.serial_number,
        reason=reason,
        changed_at=as_utc(row.revoked_at or row.updated_at),
    )


def _within_half_life(crl: Crl, *, now: datetime) -> bool:
    # Re-issue once half the validity has passed, so a cached copy never runs out.
    this_update, next_update = as_utc(crl.this_update), as_utc(crl.next_update)
    return now < this_update + (next_update - this_update) / 2
