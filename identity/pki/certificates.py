"""Card and terminal certificates, issued from a CSR, and the application list they carry.

A CSR is only proof that the requester holds the private key (RFC 2986): we take its public key
and nothing else. The subject, the key usage and the applications come from our own records.

Applications are encoded as certificate policies (RFC 5280 section 4.2.1.4), one policy OID per
application, so any X.509 library reads them without custom ASN.1. The OIDs live under a
UUID-based arc (ITU-T X.667 / ISO/IEC 9834-8, ``2.25.<uuid as integer>``), which needs no
registration and cannot collide; the UUID was generated once for onecard and is fixed here:

    eda7bfee-9f71-4a2f-8fea-f57ecfcd9969  ->  ONECARD_ARC below
    ONECARD_ARC.1      card certificate policy     (every card certificate)
    ONECARD_ARC.2      terminal certificate policy (every terminal certificate)
    ONECARD_ARC.3.<n>  card application n          (see APPLICATION_OIDS)

Never renumber: the OIDs are baked into every card in the field.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from identity.pki import InvalidRequest
from identity.pki.authority import BACKDATE, SigningCa, key_usage
from identity.pki.models import CertificateKind

ONECARD_ARC = "2.25.315898041422282429467827581220928985449"
CARD_POLICY = x509.ObjectIdentifier(f"{ONECARD_ARC}.1")
TERMINAL_POLICY = x509.ObjectIdentifier(f"{ONECARD_ARC}.2")
APPLICATION_OIDS: dict[str, x509.ObjectIdentifier] = {
    "health": x509.ObjectIdentifier(f"{ONECARD_ARC}.3.1"),
    "medical_insurance": x509.ObjectIdentifier(f"{ONECARD_ARC}.3.2"),
    "social_security": x509.ObjectIdentifier(f"{ONECARD_ARC}.3.3"),
    "pension": x509.ObjectIdentifier(f"{ONECARD_ARC}.3.4"),
    "transit": x509.ObjectIdentifier(f"{ONECARD_ARC}.3.5"),
    "library": x509.ObjectIdentifier(f"{ONECARD_ARC}.3.6"),
}
APPLICATIONS = frozenset(APPLICATION_OIDS)
_APPLICATION_BY_OID = {oid: name for name, oid in APPLICATION_OIDS.items()}

PKI_PATH = "/identity/pki"
TERMINAL_VALIDITY = timedelta(days=2 * 365)
MAX_CSR_BYTES = 16 * 1024

# Identifiers we put in names: short, plain, and safe in logs (ub-common-name is 64).
_IDENTIFIER = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_CARD_SERIAL = re.compile(r"^[A-Za-z0-9-]{1,64}$")  # a PrintableString (X.520 serialNumber)
_PURPOSE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# GB 11643-1999 (18 characters, last may be X) and the older 15-digit number.
_NATIONAL_ID = re.compile(r"^(\d{17}[\dXx]|\d{15})$")
_PEM_CSR = re.compile(
    rb"-----BEGIN (NEW )?CERTIFICATE REQUEST-----"
    rb"(?P<body>.*?)"
    rb"-----END (NEW )?CERTIFICATE REQUEST-----",
    re.DOTALL,
)
_ECDSA_SHA2 = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    SignatureAlgorithmOID.ECDSA_WITH_SHA512,
}


@dataclass(frozen=True)
class PublicUrls:
    """Where relying parties fetch status, as written into every certificate."""

    base: str

    def crl(self, kid: str) -> str:
        return f"{self.base.rstrip('/')}{PKI_PATH}/crl?issuer={kid}"

    def delta_crl(self, kid: str) -> str:
        return f"{self.base.rstrip('/')}{PKI_PATH}/crl/delta?issuer={kid}"

    def ocsp(self) -> str:
        return f"{self.base.rstrip('/')}{PKI_PATH}/ocsp"


def serial_hex(serial: int) -> str:
    """The form serial numbers are stored and looked up in."""
    return f"{serial:040x}"


def load_csr(csr_pem: str | bytes) -> x509.CertificateSigningRequest:
    """Parse and check a PEM CSR: well-formed, self-signed correctly, EC P-256, ECDSA-SHA2."""
    data = csr_pem.encode() if isinstance(csr_pem, str) else bytes(csr_pem)
    if len(data) > MAX_CSR_BYTES:
        raise InvalidRequest(f"CSR is larger than {MAX_CSR_BYTES} bytes")
    # The PEM layer (RFC 7468) is unwrapped here rather than by cryptography, which reports
    # every failure alike: this way the error says which layer is broken.
    match = _PEM_CSR.search(data)
    if match is None:
        raise InvalidRequest("CSR is not PEM: no '-----BEGIN CERTIFICATE REQUEST-----' block")
    body = b"".join(match.group("body").split())
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("CSR PEM body is not valid base64") from None
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError:
        raise InvalidRequest("CSR is not a well-formed PKCS#10 request (RFC 2986)") from None
    try:
        public = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidRequest("CSR public key cannot be read") from None
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
        public.curve, ec.SECP256R1
    ):
        raise InvalidRequest(f"CSR key must be EC P-256 (secp256r1), not {_describe(public)}")
    if csr.signature_algorithm_oid not in _ECDSA_SHA2:
        algorithm = csr.signature_algorithm_oid.dotted_string
        raise InvalidRequest(f"CSR must be signed with ECDSA and SHA-2, not {algorithm}")
    # The signature is the proof of possession of the private key.
    if not csr.is_signature_valid:
        raise InvalidRequest("CSR signature does not verify")
    return csr


def _describe(public: object) -> str:
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"EC {public.curve.name}"
    key_size = getattr(public, "key_size", None)
    kind = type(public).__name__.removeprefix("_").replace("PublicKey", "")
    return f"{kind} {key_size}" if key_size else kind


def check_pseudonym(pseudonym: str) -> None:
    """The subject of a card certificate is a pseudonymous id, never a national ID number."""
    if _NATIONAL_ID.match(pseudonym):
        raise InvalidRequest(
            "the certificate subject must be the citizen's pseudonymous id, "
            "never a national ID number"
        )
    if not _IDENTIFIER.match(pseudonym):
        raise InvalidRequest("pseudonym must be 1-64 characters of A-Z a-z 0-9 . _ : -")


def check_applications(applications: Iterable[str]) -> frozenset[str]:
    if isinstance(applications, str):
        raise InvalidRequest("applications must be a collection of names, not one string")
    chosen = frozenset(applications)
    if not chosen:
        raise InvalidRequest("a card must be enabled for at least one application")
    unknown = sorted(chosen - APPLICATIONS)
    if unknown:
        raise InvalidRequest(
            f"unknown application(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(APPLICATIONS))}"
        )
    return chosen


def _end_entity(
    csr: x509.CertificateSigningRequest,
    *,
    subject: x509.Name,
    policies: list[x509.ObjectIdentifier],
    issuer: SigningCa,
    serial: int,
    now: datetime,
    not_after: datetime,
    urls: PublicUrls,
) -> x509.Certificate:
    if not_after.tzinfo is None:
        raise InvalidRequest("not_after must be timezone-aware")
    # A certificate cannot usefully outlive its issuer: path validation would fail first.
    not_after = min(not_after, issuer.not_after)
    if not_after <= now:
        raise InvalidRequest("not_after must be in the future")
    public = csr.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)  # load_csr guarantees it
    issuer_ski = issuer.certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # Signing challenges only: no key agreement, no certificate or CRL signing.
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        .add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(oid, None) for oid in policies]),
            critical=False,
        )
        # RFC 5280 sections 4.2.1.13 and 4.2.1.15: where the full and the delta CRL are.
        .add_extension(
            x509.CRLDistributionPoints([_distribution_point(urls.crl(issuer.kid))]),
            critical=False,
        )
        .add_extension(
            x509.FreshestCRL([_distribution_point(urls.delta_crl(issuer.kid))]), critical=False
        )
        # RFC 5280 section 4.2.2.1: where to ask OCSP (RFC 6960).
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        x509.oid.AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(urls.ocsp()),
                    )
                ]
            ),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())
    )


def _distribution_point(url: str) -> x509.DistributionPoint:
    return x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )


def build_card_certificate(
    csr: x509.CertificateSigningRequest,
    *,
    issuer: SigningCa,
    serial: int,
    pseudonym: str,
    card_serial: str,
    applications: frozenset[str],
    not_after: datetime,
    now: datetime,
    urls: PublicUrls,
) -> x509.Certificate:
    """A card certificate: CN = pseudonym, serialNumber = card serial, one policy per app."""
    check_pseudonym(pseudonym)
    if not _CARD_SERIAL.match(card_serial):
        raise InvalidRequest("card serial must be 1-64 characters of A-Z a-z 0-9 -")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, pseudonym),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, card_serial),
        ]
    )
    policies = [CARD_POLICY, *(APPLICATION_OIDS[name] for name in sorted(applications))]
    return _end_entity(
        csr,
        subject=subject,
        policies=policies,
        issuer=issuer,
        serial=serial,
        now=now,
        not_after=not_after,
        urls=urls,
    )


def build_terminal_certificate(
    csr: x509.CertificateSigningRequest,
    *,
    issuer: SigningCa,
    serial: int,
    terminal_id: str,
    facility: str,
    purpose: str,
    not_after: datetime,
    now: datetime,
    urls: PublicUrls,
) -> x509.Certificate:
    """A terminal certificate: CN = terminal id, O = facility, OU = purpose."""
    if not _IDENTIFIER.match(terminal_id):
        raise InvalidRequest("terminal id must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    facility = facility.strip()
    if not 1 <= len(facility) <= 64 or not facility.isprintable():
        raise InvalidRequest("facility must be 1-64 printable characters")
    if not _PURPOSE.match(purpose):
        raise InvalidRequest("purpose must be 1-64 characters of a-z 0-9 _, starting with a letter")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, terminal_id),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, facility),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, purpose),
        ]
    )
    return _end_entity(
        csr,
        subject=subject,
        policies=[TERMINAL_POLICY],
        issuer=issuer,
        serial=serial,
        now=now,
        not_after=not_after,
        urls=urls,
    )


def _policies(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.CertificatePolicies)
    except x509.ExtensionNotFound:
        return []
    return [info.policy_identifier for info in ext.value]


def certificate_kind(cert: x509.Certificate) -> CertificateKind | None:
    """Card or terminal, from the certificate policy; None for anything else."""
    policies = _policies(cert)
    if CARD_POLICY in policies:
        return CertificateKind.CARD
    if TERMINAL_POLICY in policies:
        return CertificateKind.TERMINAL
    return None


def card_applications(cert: x509.Certificate) -> frozenset[str]:
    """The applications a card certificate is enabled for (unknown policy OIDs ignored)."""
    return frozenset(
        _APPLICATION_BY_OID[oid] for oid in _policies(cert) if oid in _APPLICATION_BY_OID
    )


def _subject_value(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    values = cert.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def card_pseudonym(cert: x509.Certificate) -> str | None:
    """The citizen's pseudonymous id (subject CN) of a card certificate."""
    return _subject_value(cert, NameOID.COMMON_NAME)


def card_serial_of(cert: x509.Certificate) -> str | None:
    """The card serial (subject serialNumber) of a card certificate."""
    return _subject_value(cert, NameOID.SERIAL_NUMBER)


def terminal_purpose(cert: x509.Certificate) -> str | None:
    """The purpose (subject OU) of a terminal certificate."""
    return _subject_value(cert, NameOID.ORGANIZATIONAL_UNIT_NAME)
