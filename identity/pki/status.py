"""Certificate status, signed: full and delta CRLs (RFC 5280 section 5) and OCSP (RFC 6960).

Nothing here touches the database: the service hands in what the ``certificates`` table says
and gets back signed DER. Each issuing CA, current or retired, signs for its own certificates
(RFC 5280 section 5: a CRL is issued by the certificate's issuer; RFC 6960 section 4.2.2.2: the
issuing CA may sign OCSP answers itself), so a relying party needs no extra responder
certificate to check an answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from identity.pki.authority import SigningCa
from identity.pki.certificates import PublicUrls

FULL_CRL_VALIDITY = timedelta(hours=24)
DELTA_CRL_VALIDITY = timedelta(hours=1)
# Short: a suspended card must stop working everywhere quickly, even behind a cache.
OCSP_VALIDITY = timedelta(minutes=10)
MAX_OCSP_REQUEST_BYTES = 8 * 1024
# RFC 8954 section 2.1: reject a nonce of 0 octets or of more than 128 octets.
MAX_NONCE_BYTES = 128

# Reasons a certificate may be revoked for here (RFC 5280 section 5.3.1): not certificateHold
# (that is a suspension), not removeFromCRL (only in delta CRLs), not the CA/AA reasons.
REVOCATION_REASONS = frozenset(
    {
        x509.ReasonFlags.unspecified,
        x509.ReasonFlags.key_compromise,
        x509.ReasonFlags.affiliation_changed,
        x509.ReasonFlags.superseded,
        x509.ReasonFlags.cessation_of_operation,
        x509.ReasonFlags.privilege_withdrawn,
    }
)


@dataclass(frozen=True)
class Listed:
    """One CRL entry: a serial on hold or revoked, or (delta only) taken off hold."""

    serial: int
    reason: x509.ReasonFlags
    date: datetime


@dataclass(frozen=True)
class CertState:
    """What the certificates table says about one serial now."""

    serial: int
    reason: x509.ReasonFlags | None  # None when the certificate is good
    changed_at: datetime


def full_entries(states: Iterable[CertState]) -> list[Listed]:
    return [Listed(s.serial, s.reason, s.changed_at) for s in states if s.reason is not None]


def delta_entries(changed: Iterable[CertState]) -> list[Listed]:
    """A delta CRL's entries: every certificate whose status changed since its base.

    RFC 5280 section 5.2.4 lets a relying party apply a delta to the base *or* to a CRL it
    built from earlier deltas, so each change is stated in full: the current reason for one on
    hold or revoked, removeFromCRL for one that came off hold (the only way back to good). A
    removeFromCRL for a certificate the reader never saw listed is a no-op (section 5.3.1).
    """
    return [
        Listed(
            state.serial,
            state.reason if state.reason is not None else x509.ReasonFlags.remove_from_crl,
            state.changed_at,
        )
        for state in changed
    ]


def build_crl(
    *,
    issuer: SigningCa,
    number: int,
    entries: Iterable[Listed],
    this_update: datetime,
    next_update: datetime,
    urls: PublicUrls,
    base_number: int | None = None,
) -> x509.CertificateRevocationList:
    """A full CRL, or a delta CRL when ``base_number`` is given, signed by ``issuer``."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(this_update)
        .next_update(next_update)
        # RFC 5280 section 5.2.1: conforming CRL issuers MUST include the AKI.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        # Section 5.2.3: full and delta CRLs share one monotonically increasing sequence.
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    if base_number is None:
        # Section 5.2.6: a full CRL says where its deltas are.
        builder = builder.add_extension(
            x509.FreshestCRL(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(urls.delta_crl(issuer.kid))],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    else:
        # Section 5.2.4: the delta CRL indicator is critical and names the base CRL.
        builder = builder.add_extension(x509.DeltaCRLIndicator(base_number), critical=True)
    for entry in entries:
        revoked = x509.RevokedCertificateBuilder().serial_number(entry.serial)
        revoked = revoked.revocation_date(entry.date)
        # Section 5.3.1: the reason code SHOULD be absent rather than "unspecified".
        if entry.reason is not x509.ReasonFlags.unspecified:
            revoked = revoked.add_extension(x509.CRLReason(entry.reason), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    return builder.sign(issuer.key, hashes.SHA256())


class MalformedOcspRequest(ValueError):
    """The bytes are not an OCSP request we can answer (RFC 6960 malformedRequest)."""


@dataclass(frozen=True)
class OcspQuery:
    """The one CertID asked about (RFC 6960 section 4.1.1), and the nonce to echo."""

    algorithm: hashes.HashAlgorithm
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int
    nonce: bytes | None


def parse_ocsp_request(der: bytes) -> OcspQuery:
    """Parse a DER OCSPRequest, refusing what RFC 6960 and RFC 8954 call malformed."""
    if not der or len(der) > MAX_OCSP_REQUEST_BYTES:
        raise MalformedOcspRequest(f"an OCSP request is 1 to {MAX_OCSP_REQUEST_BYTES} bytes")
    try:
        request = ocsp.load_der_ocsp_request(der)
        # cryptography parses lazily: touch every field now so a bad one is malformed here.
        # A request for several certificates is refused too: we follow the lightweight
        # profile (RFC 5019 section 2.1.1, one Request per OCSPRequest), as cryptography does.
        query = OcspQuery(
            algorithm=request.hash_algorithm,
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            serial=request.serial_number,
            nonce=_nonce(request),
        )
    except (ValueError, UnsupportedAlgorithm, NotImplementedError) as exc:
        raise MalformedOcspRequest(str(exc)) from None
    if query.nonce is not None and not 1 <= len(query.nonce) <= MAX_NONCE_BYTES:
        raise MalformedOcspRequest(f"the nonce must be 1 to {MAX_NONCE_BYTES} octets (RFC 8954)")
    return query


def _nonce(request: ocsp.OCSPRequest) -> bytes | None:
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def issuer_matches(query: OcspQuery, ca: SigningCa) -> bool:
    """Whether the CertID's issuer hashes are those of ``ca`` (RFC 6960 section 4.1.1)."""
    name_hash = hashes.Hash(query.algorithm)
    name_hash.update(ca.certificate.subject.public_bytes())
    # The key hash covers the subjectPublicKey BIT STRING value: for EC, the encoded point.
    key_hash = hashes.Hash(query.algorithm)
    key_hash.update(
        ca.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )
    return (
        name_hash.finalize() == query.issuer_name_hash
        and key_hash.finalize() == query.issuer_key_hash
    )


def ocsp_error(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsigned OCSP error answer (RFC 6960 section 2.3), e.g. malformedRequest."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )


def ocsp_answer(
    query: OcspQuery,
    *,
    issuer: SigningCa,
    state: CertState | None,
    now: datetime,
) -> bytes:
    """A signed answer: good, revoked (suspended = revoked with certificateHold) or unknown.

    ``state`` None means the serial was never issued by ``issuer``: "unknown" (RFC 6960
    section 2.2). The request's nonce is echoed (RFC 8954), binding the answer to the request.
    """
    revocation_time: datetime | None = None
    revocation_reason: x509.ReasonFlags | None = None
    if state is None:
        status = ocsp.OCSPCertStatus.UNKNOWN
    elif state.reason is None:
        status = ocsp.OCSPCertStatus.GOOD
    else:
        # RFC 6960 section 2.2: a certificate on hold is "revoked" with certificateHold.
        status = ocsp.OCSPCertStatus.REVOKED
        revocation_time = state.changed_at
        if state.reason is not x509.ReasonFlags.unspecified:
            revocation_reason = state.reason
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=query.issuer_name_hash,
            issuer_key_hash=query.issuer_key_hash,
            serial_number=query.serial,
            algorithm=query.algorithm,
            cert_status=status,
            this_update=now,
            next_update=now + OCSP_VALIDITY,
            revocation_time=revocation_time,
            revocation_reason=revocation_reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.certificate)
    )
    if query.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(query.nonce), critical=False)
    return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
