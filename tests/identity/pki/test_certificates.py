"""Card and terminal certificates: what they say, and every malformed CSR refused clearly."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from identity.pki import InvalidRequest
from identity.pki.certificates import (
    APPLICATIONS,
    PublicUrls,
    build_card_certificate,
    card_applications,
    card_pseudonym,
    card_serial_of,
    certificate_kind,
    load_csr,
    terminal_purpose,
)
from identity.pki.models import CertificateKind
from identity.pki.service import PkiService
from identity.settings import IdentitySettings
from tests.identity.pki.conftest import ALL_APPS, BASE_URL, Pki, csr_for, make_authority, raw_rows

PSEUDONYM = "cz_abcdefghijklmnopqrstuvwxyz"


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def csr_der(text: str) -> bytes:
    return x509.load_pem_x509_csr(text.encode()).public_bytes(serialization.Encoding.DER)


def tampered_csr() -> str:
    """A well-formed CSR whose signature no longer matches (one signature byte flipped)."""
    der = bytearray(csr_der(csr_for(p256())))
    der[-5] ^= 0x01
    return pem("CERTIFICATE REQUEST", bytes(der))


def pem(label: str, der: bytes) -> str:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n"


MALFORMED_CSRS: dict[str, tuple[Any, str]] = {
    "garbage": (lambda: "hello, I am a certificate request", "no '-----BEGIN CERTIFICATE"),
    "broken base64": (
        lambda: (
            "-----BEGIN CERTIFICATE REQUEST-----\nMIIB!!!*not base64*\n"
            "-----END CERTIFICATE REQUEST-----\n"
        ),
        "not valid base64",
    ),
    "not PKCS#10 inside": (
        lambda: pem("CERTIFICATE REQUEST", b"\x30\x03\x02\x01\x01"),
        "not a well-formed PKCS#10",
    ),
    "truncated DER": (
        lambda: pem("CERTIFICATE REQUEST", csr_der(csr_for(p256()))[:-10]),
        "not a well-formed PKCS#10",
    ),
    "tampered signature": (tampered_csr, "CSR signature does not verify"),
    "RSA key": (
        lambda: csr_for(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "must be EC P-256",
    ),
    "P-384 key": (lambda: csr_for(ec.generate_private_key(ec.SECP384R1())), "not EC secp384r1"),
    "Ed25519 key": (lambda: csr_for(ed25519.Ed25519PrivateKey.generate()), "must be EC P-256"),
    "too large": (lambda: csr_for(p256()) + "#" * 20_000, "larger than"),
}


@pytest.mark.parametrize("case", list(MALFORMED_CSRS))
def test_a_malformed_csr_is_refused_with_the_reason(case: str) -> None:
    make, reason = MALFORMED_CSRS[case]
    with pytest.raises(InvalidRequest, match=reason) as refused:
        load_csr(make())
    assert isinstance(refused.value, ValueError)
    assert str(refused.value).startswith("CSR")


def test_a_good_csr_in_bytes_or_text_is_accepted() -> None:
    key = p256()
    text = csr_for(key)
    assert load_csr(text).public_key() == key.public_key()
    assert load_csr(text.encode()).public_key() == key.public_key()


async def test_a_refused_csr_stores_nothing(pki: Pki) -> None:
    before = await raw_rows(pki.settings, "SELECT count(*) AS n FROM certificates")
    for case in ("garbage", "tampered signature", "RSA key"):
        async with pki.session() as session:
            with pytest.raises(InvalidRequest):
                await pki.service.issue_card_certificate(
                    MALFORMED_CSRS[case][0](),
                    session=session,
                    pseudonym=PSEUDONYM,
                    card_serial="C-1",
                    applications={"health"},
                    not_after=pki.clock.now + timedelta(days=365),
                )
    assert await raw_rows(pki.settings, "SELECT count(*) AS n FROM certificates") == before


async def test_a_card_certificate_names_the_pseudonym_and_card_and_signs_only(pki: Pki) -> None:
    apps = frozenset({"health", "transit", "library"})
    row, key = await pki.issue_card(pseudonym=PSEUDONYM, card_serial="C-7", applications=apps)
    cert = row.certificate
    async with pki.session() as session:
        issuer = await pki.service.current_issuer(session=session)

    assert cert.public_key() == key.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == PSEUDONYM
    assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "C-7"
    assert card_pseudonym(cert) == PSEUDONYM
    assert card_serial_of(cert) == "C-7"
    assert card_applications(cert) == apps
    assert certificate_kind(cert) is CertificateKind.CARD

    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not any(
        getattr(usage.value, flag)
        for flag in (
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
        )
    )
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    assert aki.key_identifier.hex() == issuer.kid

    crl_dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for n in crl_dp[0].full_name or []] == [
        f"{BASE_URL}/identity/pki/crl?issuer={issuer.kid}"
    ]
    freshest = cert.extensions.get_extension_for_class(x509.FreshestCRL).value
    assert [n.value for n in freshest[0].full_name or []] == [
        f"{BASE_URL}/identity/pki/crl/delta?issuer={issuer.kid}"
    ]
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(d.access_method, d.access_location.value) for d in aia] == [
        (x509.oid.AuthorityInformationAccessOID.OCSP, f"{BASE_URL}/identity/pki/ocsp")
    ]

    # RFC 5280 section 4.1.2.2: positive, at most 20 octets, and here 159 random bits.
    assert 0 < cert.serial_number < 2**159
    assert row.serial == f"{cert.serial_number:040x}"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    cert.verify_directly_issued_by(issuer.certificate)

    stored = await raw_rows(
        pki.settings,
        f"SELECT kind, subject_id, device_serial, status FROM certificates "
        f"WHERE serial = '{row.serial}'",
    )
    assert stored == [
        {"kind": "card", "subject_id": PSEUDONYM, "device_serial": "C-7", "status": "good"}
    ]


@pytest.mark.parametrize(
    "apps",
    [{"health"}, {"medical_insurance", "pension"}, {"social_security"}, set(ALL_APPS)],
    ids=lambda apps: "+".join(sorted(apps)),
)
def test_the_application_list_round_trips_through_the_certificate(apps: set[str]) -> None:
    _, issuer = make_authority()
    now = datetime.now(UTC)
    cert = build_card_certificate(
        load_csr(csr_for(p256())),
        issuer=issuer,
        serial=x509.random_serial_number(),
        pseudonym=PSEUDONYM,
        card_serial="C-1",
        applications=frozenset(apps),
        not_after=now + timedelta(days=30),
        now=now,
        urls=PublicUrls(BASE_URL),
    )
    # Parsed back from DER, as a relying party with no onecard code would see it.
    reparsed = x509.load_der_x509_certificate(cert.public_bytes(serialization.Encoding.DER))
    assert card_applications(reparsed) == apps
    assert APPLICATIONS == ALL_APPS


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"pseudonym": "11010519491231002X"}, "never a national ID number"),
        ({"pseudonym": "110105491231002"}, "never a national ID number"),
        ({"pseudonym": "has space"}, "pseudonym must be"),
        ({"card_serial": "C 1"}, "card serial must be"),
        ({"applications": set()}, "at least one application"),
        ({"applications": {"health", "casino"}}, "unknown application"),
        ({"applications": "health"}, "not one string"),
        ({"not_after": datetime(2000, 1, 1, tzinfo=UTC)}, "in the future"),
        ({"not_after": datetime(2099, 1, 1)}, "timezone-aware"),
    ],
)
async def test_issuing_parameters_are_checked(
    pki: Pki, fields: dict[str, Any], reason: str
) -> None:
    values: dict[str, Any] = {
        "pseudonym": PSEUDONYM,
        "card_serial": "C-1",
        "applications": {"health"},
        "not_after": pki.clock.now + timedelta(days=365),
    }
    values.update(fields)
    async with pki.session() as session:
        with pytest.raises(InvalidRequest, match=reason):
            await pki.service.issue_card_certificate(csr_for(p256()), session=session, **values)


async def test_a_card_never_outlives_its_issuing_ca(pki: Pki) -> None:
    row, _ = await pki.issue_card(years=40)
    async with pki.session() as session:
        issuer = await pki.service.current_issuer(session=session)
    assert row.certificate.not_valid_after_utc == issuer.not_after


async def test_a_terminal_certificate_names_terminal_facility_and_purpose(pki: Pki) -> None:
    key = p256()
    async with pki.session() as session:
        row = await pki.service.issue_terminal_certificate(
            csr_for(key),
            session=session,
            terminal_id="T-PHARM-01",
            facility="第一人民医院 pharmacy",
            purpose="pharmacy",
        )
        await pki.service.verify_chain(row.certificate, session=session)
    cert = row.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "T-PHARM-01"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "第一人民医院 pharmacy"
    )
    assert terminal_purpose(cert) == "pharmacy"
    assert certificate_kind(cert) is CertificateKind.TERMINAL
    assert card_applications(cert) == frozenset()
    assert row.kind == CertificateKind.TERMINAL
    assert row.subject_id == "T-PHARM-01"
    span = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=729) < span < timedelta(days=731)

    async with pki.session() as session:
        with pytest.raises(InvalidRequest, match="purpose must be"):
            await pki.service.issue_terminal_certificate(
                csr_for(p256()),
                session=session,
                terminal_id="T-2",
                facility="desk",
                purpose="Bus Stop!",
            )


async def test_a_virtual_card_gets_a_certificate_that_verifies_its_signatures(
    pki: Pki, tmp_path: Any
) -> None:
    from identity.protocol import challenge_digest
    from identity.simulators.card import VirtualCard

    card = VirtualCard.create(tmp_path / "card.json", "C-100")
    async with pki.session() as session:
        row = await pki.service.issue_card_certificate(
            card.csr(PSEUDONYM),
            session=session,
            pseudonym=PSEUDONYM,
            card_serial=card.serial,
            applications={"health", "transit"},
            not_after=pki.clock.now + timedelta(days=365),
        )
    card.install_certificate(row.pem)
    card.activate("482915", "73019264")
    nonce = bytes(32)
    signature, pin_verified = card.sign_challenge(
        domain="https://id.example.test", terminal_id="T-1", nonce=nonce, pin="482915"
    )
    assert pin_verified
    async with pki.session() as session:
        await pki.service.verify_chain(row.certificate, session=session)
    public = row.certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    digest = challenge_digest(
        domain="https://id.example.test", terminal_id="T-1", nonce=nonce, pin_verified=True
    )
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    public.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_status_urls_default_to_the_platform_public_url(
    make_identity_settings: Callable[..., IdentitySettings],
) -> None:
    settings = make_identity_settings(public_url="https://onecard.example.gov.cn/")
    urls = PkiService(settings).urls
    assert urls.ocsp() == "https://onecard.example.gov.cn/identity/pki/ocsp"
    assert urls.crl("ab") == "https://onecard.example.gov.cn/identity/pki/crl?issuer=ab"
