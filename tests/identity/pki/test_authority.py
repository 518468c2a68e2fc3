"""The root and issuing CAs: created once, race-safe, keys sealed at rest, rolled over safely."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from identity.pki import CertificateRejected, KeyStoreError
from identity.pki.service import PkiService
from identity.settings import IdentitySettings
from services.kit.database import Database
from tests.harness import serve_asgi
from tests.identity.pki.conftest import (
    BASE_URL,
    Pki,
    make_authority,
    pki_app,
    raw_rows,
    wipe_pki,
)

CA_ROWS = "SELECT kid, role, status, encrypted_key_pem, certificate_pem FROM ca_keys"


async def ca_chain(pki: Pki) -> list[x509.Certificate]:
    response = await pki.client.get("/identity/pki/ca")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pem-certificate-chain"
    return x509.load_pem_x509_certificates(response.content)


def live(rows: list[dict[str, object]], role: str, status: str = "current") -> list[str]:
    return [str(r["kid"]) for r in rows if r["role"] == role and r["status"] == status]


async def test_first_start_creates_a_p256_root_and_issuing_ca_with_rfc5280_profiles(
    pki: Pki,
) -> None:
    issuing, root = await ca_chain(pki)

    assert root.issuer == root.subject
    root.verify_directly_issued_by(root)
    basic = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca
    assert basic.value.path_length == 1
    usage = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    assert (root.not_valid_after_utc - root.not_valid_before_utc).days >= 20 * 365

    issuing.verify_directly_issued_by(root)
    basic = issuing.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca
    assert basic.value.path_length == 0
    aki = issuing.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert 5 * 365 <= (issuing.not_valid_after_utc - issuing.not_valid_before_utc).days < 6 * 365
    for cert in (root, issuing):
        public = cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert isinstance(public.curve, ec.SECP256R1)
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


async def test_a_second_start_reuses_the_authority_instead_of_minting_another(
    pki: Pki,
) -> None:
    before = await ca_chain(pki)
    async with serve_asgi(pki_app(pki.settings)) as again:
        after = x509.load_pem_x509_certificates((await again.get("/identity/pki/ca")).content)
    assert after == before
    rows = await raw_rows(pki.settings, CA_ROWS)
    assert len(rows) == 2
    assert len(live(rows, "root")) == 1
    assert len(live(rows, "issuing")) == 1


async def test_two_processes_starting_at_once_agree_on_one_authority(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    # Two service objects with connections of their own stand for two processes.
    for _ in range(3):
        await wipe_pki(pki.settings)
        services = [PkiService(pki.settings, public_base_url=BASE_URL) for _ in range(2)]
        dbs = [Database.for_settings(pki.settings) for _ in range(2)]
        try:
            with caplog.at_level(logging.INFO, logger="identity.pki.service"):
                await asyncio.gather(*(s.start(db=db) for s, db in zip(services, dbs, strict=True)))
            issuers = []
            for service, db in zip(services, dbs, strict=True):
                async with db.sessionmaker() as session:
                    issuers.append((await service.current_issuer(session=session)).kid)
        finally:
            for db in dbs:
                await db.dispose()
        rows = await raw_rows(pki.settings, CA_ROWS)
        assert len(rows) == 2, rows
        assert issuers[0] == issuers[1] == live(rows, "issuing")[0]
    # Whether the two actually collided depends on scheduling (on a loaded machine one may
    # finish first); the outcome above must hold either way, so it is what is asserted.


async def test_ca_keys_are_encrypted_at_rest_and_useless_without_the_secret(
    pki: Pki,
    make_identity_settings: Callable[..., IdentitySettings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = await raw_rows(pki.settings, CA_ROWS)
    assert len(rows) == 2
    for row in rows:
        sealed = str(row["encrypted_key_pem"])
        assert sealed.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert not any("BEGIN PRIVATE KEY" in str(value) for value in row.values())
        with pytest.raises(TypeError):
            serialization.load_pem_private_key(sealed.encode(), password=None)
        with pytest.raises(ValueError, match=r"(?i)incorrect password|bad decrypt"):
            serialization.load_pem_private_key(sealed.encode(), password=b"guess")

    # A process holding another key encryption key cannot use these CAs: it refuses to start.
    intruder = PkiService(make_identity_settings(), public_base_url=BASE_URL)
    with pytest.raises(KeyStoreError, match="cannot be decrypted"):
        await intruder.start(db=pki.db)
    assert not any("PRIVATE KEY" in record.getMessage() for record in caplog.records)


async def test_rollover_keeps_old_cards_verifying_and_new_cards_chain_to_the_new_ca(
    pki: Pki,
) -> None:
    old_card, _ = await pki.issue_card(card_serial="C-OLD")
    async with pki.session() as session:
        old_issuer = await pki.service.current_issuer(session=session)
        new_issuer = await pki.service.rollover_issuing_ca(session=session)
    new_card, _ = await pki.issue_card(card_serial="C-NEW")

    assert new_issuer.kid != old_issuer.kid
    assert old_card.issuer_kid == old_issuer.kid
    assert new_card.issuer_kid == new_issuer.kid
    assert new_card.certificate.issuer == new_issuer.certificate.subject
    new_issuer.certificate.verify_directly_issued_by(
        (await ca_chain(pki))[-1]  # the same root signs both generations
    )

    # Both chains verify, in this process and in one that never saw the old CA as current.
    fresh = PkiService(pki.settings, public_base_url=BASE_URL, clock=pki.clock)
    for service in (pki.service, fresh):
        async with pki.session() as session:
            await service.verify_chain(old_card.certificate, session=session)
            await service.verify_chain(new_card.certificate, session=session)

    chain = await ca_chain(pki)
    assert [c.subject for c in chain] == [
        new_issuer.certificate.subject,
        old_issuer.certificate.subject,
        chain[-1].subject,
    ]
    rows = await raw_rows(pki.settings, CA_ROWS)
    assert live(rows, "issuing", "retired") == [old_issuer.kid]
    assert live(rows, "issuing", "current") == [new_issuer.kid]


async def test_a_prepared_next_ca_is_published_before_it_signs_anything(pki: Pki) -> None:
    async with pki.session() as session:
        current = await pki.service.current_issuer(session=session)
        prepared = await pki.service.prepare_next_issuing_ca(session=session)
        again = await pki.service.prepare_next_issuing_ca(session=session)
    assert again.kid == prepared.kid
    assert prepared.certificate in await ca_chain(pki)
    card, _ = await pki.issue_card()
    assert card.issuer_kid == current.kid

    async with pki.session() as session:
        promoted = await pki.service.rollover_issuing_ca(session=session)
    assert promoted.kid == prepared.kid
    card, _ = await pki.issue_card()
    assert card.issuer_kid == prepared.kid


async def test_verify_chain_refuses_foreign_forged_and_expired_certificates(pki: Pki) -> None:
    card, key = await pki.issue_card()
    async with pki.session() as session:
        ours = await pki.service.current_issuer(session=session)

    _, foreign = make_authority()
    foreign_card = (
        x509.CertificateBuilder()
        .subject_name(card.certificate.subject)
        .issuer_name(foreign.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(pki.clock.now - timedelta(minutes=1))
        .not_valid_after(pki.clock.now + timedelta(days=30))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(foreign.key.public_key()), False
        )
        .sign(foreign.key, hashes.SHA256())
    )
    # Same names and the Authority Key Identifier of our CA, but signed with another key.
    forged = (
        x509.CertificateBuilder()
        .subject_name(card.certificate.subject)
        .issuer_name(ours.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(pki.clock.now - timedelta(minutes=1))
        .not_valid_after(pki.clock.now + timedelta(days=30))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ours.key.public_key()), False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(foreign.key, hashes.SHA256())
    )
    async with pki.session() as session:
        with pytest.raises(CertificateRejected, match="not issued by an onecard issuing CA"):
            await pki.service.verify_chain(foreign_card, session=session)
        with pytest.raises(CertificateRejected, match="does not verify"):
            await pki.service.verify_chain(forged, session=session)
        with pytest.raises(CertificateRejected, match="not issued by an onecard"):
            await pki.service.verify_chain(ours.certificate, session=session)  # a CA is no card

    pki.clock.advance(timedelta(days=5 * 365))
    async with pki.session() as session:
        with pytest.raises(CertificateRejected, match="does not verify"):
            await pki.service.verify_chain(card.certificate, session=session)
