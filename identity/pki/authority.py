"""The provincial root CA and its issuing CAs: certificates, keys in memory, chain building.

One self-signed root (EC P-256, ~20 years, path length 1) signs issuing CAs (P-256, ~5 years,
path length 0); an issuing CA signs card and terminal certificates, their CRLs and OCSP
answers. A rollover adds a new issuing CA under the same root; the old one retires but stays
valid until its own ``notAfter``, so cards it issued keep verifying and it keeps answering for
their status. Every certificate names its issuer's key in the Authority Key Identifier, and the
issuer's kid *is* that identifier in hex, so picking the issuer of any certificate is one
dictionary lookup, whichever generation of issuing CA signed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from identity.pki import CertificateRejected
from identity.pki.keystore import KeyStore
from identity.pki.models import CaKey, CaRole, as_utc

ROOT_VALIDITY = timedelta(days=20 * 365 + 5)
ISSUING_VALIDITY = timedelta(days=5 * 365 + 1)
# Certificates start a little in the past so a relying party whose clock lags still accepts
# them; the same habit as public CAs.
BACKDATE = timedelta(minutes=5)
CURVE = ec.SECP256R1()
ANY_POLICY = x509.ObjectIdentifier("2.5.29.32.0")  # RFC 5280 section 4.2.1.4 anyPolicy


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """SHA-1 of the subjectPublicKey bit string, hex (RFC 5280 section 4.2.1.2 method 1)."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest.hex()


def authority_key_id(cert: x509.Certificate) -> str | None:
    """The kid of the key that signed ``cert``, from its Authority Key Identifier."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    return aki.key_identifier.hex() if aki.key_identifier else None


def key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "onecard Provincial Card Authority"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(CURVE)


def build_root_certificate(key: ec.EllipticCurvePrivateKey, *, now: datetime) -> x509.Certificate:
    """The self-signed provincial root (RFC 5280 section 4.2.1.9: CA, path length 1)."""
    name = _name("onecard Provincial Root CA")
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + ROOT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def build_issuing_certificate(
    key: ec.EllipticCurvePrivateKey,
    *,
    root: SigningCa,
    now: datetime,
) -> x509.Certificate:
    """An issuing CA under ``root`` (path length 0: it signs end entities only)."""
    public = key.public_key()
    not_after = min(now + ISSUING_VALIDITY, root.not_after)
    return (
        x509.CertificateBuilder()
        # The kid in the name keeps generations apart for people reading logs and chains.
        .subject_name(_name(f"onecard Card Issuing CA {key_id(public)[:8]}"))
        .issuer_name(root.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # digitalSignature as well: the issuing CA signs OCSP answers itself (RFC 6960
        # section 4.2.2.2, the CA that issued the certificate is an authorized responder).
        .add_extension(
            key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(ANY_POLICY, None)]), critical=False
        )
        .sign(root.key, hashes.SHA256())
    )


@dataclass(frozen=True)
class SigningCa:
    """A CA with its decrypted key, as held in memory."""

    kid: str
    role: CaRole
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def issuer_kid(self) -> str | None:
        return authority_key_id(self.certificate)


# The WebPKI end-entity profile minus its requirement of a subjectAltName: a card is named by
# its subject (pseudonym and card serial), not by a DNS name or address.
_EE_POLICY = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
    x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
)


class Authority:
    """Decrypted CA keys, by kid: each decrypted once per process and never logged."""

    def __init__(self, keystore: KeyStore) -> None:
        self._keystore = keystore
        self._cas: dict[str, SigningCa] = {}

    def __repr__(self) -> str:
        return f"Authority(kids={sorted(self._cas)})"

    def load(self, row: CaKey) -> SigningCa:
        """The CA of ``row``, decrypting its key on first use."""
        cached = self._cas.get(row.kid)
        if cached is not None:
            return cached
        certificate = row.certificate
        if key_id(_ec_public(certificate)) != row.kid:
            raise CertificateRejected(f"CA row {row.kid} holds another key's certificate")
        key = self._keystore.open(row.encrypted_key_pem, certificate=certificate)
        ca = SigningCa(kid=row.kid, role=CaRole(row.role), certificate=certificate, key=key)
        if ca.role is CaRole.ISSUING:
            # An issuing CA enters the cache only once its own chain to a cached root holds.
            root = self._cas.get(row.issuer_kid or "")
            if root is None or root.role is not CaRole.ROOT:
                raise CertificateRejected(f"issuing CA {row.kid} is not under a known root")
            certificate.verify_directly_issued_by(root.certificate)
        self._cas[row.kid] = ca
        return ca

    def seal(self, key: ec.EllipticCurvePrivateKey) -> str:
        """``key`` encrypted for storage (see keystore.py)."""
        return self._keystore.seal(key)

    def get(self, kid: str) -> SigningCa | None:
        return self._cas.get(kid)

    def issuer_of(self, cert: x509.Certificate) -> SigningCa | None:
        """The issuing CA that signed ``cert``, by its Authority Key Identifier."""
        kid = authority_key_id(cert)
        ca = self._cas.get(kid) if kid else None
        return ca if ca is not None and ca.role is CaRole.ISSUING else None

    def verify_chain(self, cert: x509.Certificate, *, at: datetime) -> SigningCa:
        """RFC 5280 section 6 path validation to our root; returns the issuing CA."""
        issuer = self.issuer_of(cert)
        if issuer is None:
            raise CertificateRejected(
                "the certificate was not issued by an onecard issuing CA "
                "(its Authority Key Identifier names no CA of ours)"
            )
        root = self._cas.get(issuer.issuer_kid or "")
        if root is None:
            raise CertificateRejected(f"issuing CA {issuer.kid} has no known root")
        # cryptography's verifier checks signatures, validity periods, name chaining, basic
        # constraints, key usage and path length: the whole path, not just the last link.
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store([root.certificate]))
            .time(as_utc(at))
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=_EE_POLICY
            )
            .build_client_verifier()
        )
        try:
            verifier.verify(cert, [issuer.certificate])
        except verification.VerificationError as exc:
            raise CertificateRejected(f"the certificate does not verify: {exc}") from None
        return issuer


def _ec_public(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise CertificateRejected("a CA certificate does not hold an EC key")
    return public
