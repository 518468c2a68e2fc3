"""Status: transitions, signed full and delta CRLs, and nonce-bound OCSP answers over HTTP."""

from __future__ import annotations

import base64
import os
import urllib.parse
from datetime import timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from identity.pki import StatusConflict, UnknownCertificate
from identity.pki.authority import SigningCa
from identity.pki.models import CertificateStatus, IssuedCertificate
from tests.identity.pki.conftest import BASE_URL, Pki, make_authority

OCSP_REQUEST = {"content-type": "application/ocsp-request"}
HOLD = x509.ReasonFlags.certificate_hold


async def issuer(pki: Pki) -> SigningCa:
    async with pki.session() as session:
        return await pki.service.current_issuer(session=session)


async def fetch_crl(
    pki: Pki, ca: SigningCa, *, delta: bool = False, issuer_kid: str | None = None
) -> x509.CertificateRevocationList:
    path = "/identity/pki/crl/delta" if delta else "/identity/pki/crl"
    params = {"issuer": issuer_kid} if issuer_kid else {}
    response = await pki.client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(response.content)
    # Every CRL is signed by the issuing CA of the certificates it lists.
    public = ca.certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(public)
    assert crl.issuer == ca.certificate.subject
    return crl


def number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def entries(crl: x509.CertificateRevocationList) -> dict[int, x509.ReasonFlags | None]:
    listed: dict[int, x509.ReasonFlags | None] = {}
    for revoked in crl:
        try:
            listed[revoked.serial_number] = revoked.extensions.get_extension_for_class(
                x509.CRLReason
            ).value.reason
        except x509.ExtensionNotFound:
            listed[revoked.serial_number] = None
    return listed


def ocsp_request(
    cert: x509.Certificate,
    ca: SigningCa,
    *,
    nonce: bytes | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        cert, ca.certificate, algorithm or hashes.SHA1()
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


async def ask(pki: Pki, request: bytes) -> ocsp.OCSPResponse:
    response = await pki.client.post("/identity/pki/ocsp", content=request, headers=OCSP_REQUEST)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.content)


def check_signed_by(answer: ocsp.OCSPResponse, ca: SigningCa, nonce: bytes | None) -> None:
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    public = ca.certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert answer.signature_hash_algorithm is not None
    public.verify(
        answer.signature, answer.tbs_response_bytes, ec.ECDSA(answer.signature_hash_algorithm)
    )
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert answer.responder_key_hash == ski.digest
    echoed = [e.value.nonce for e in answer.extensions if isinstance(e.value, x509.OCSPNonce)]
    assert echoed == ([nonce] if nonce is not None else [])
    assert answer.next_update_utc is not None
    assert answer.next_update_utc > answer.this_update_utc


async def test_status_moves_good_suspended_good_revoked_and_revocation_is_final(
    pki: Pki,
) -> None:
    card, _ = await pki.issue_card()

    async def status(target: str, reason: str | None = None) -> IssuedCertificate:
        async with pki.session() as session:
            return await pki.service.set_status(
                session=session, serial=card.serial, status=target, reason=reason
            )

    row = await status("suspended")
    assert (row.status, row.revocation_reason) == (CertificateStatus.SUSPENDED, "certificateHold")
    assert (await status("suspended")).status == CertificateStatus.SUSPENDED  # no-op, no error
    row = await status("good")
    assert (row.status, row.revocation_reason, row.revoked_at) == ("good", None, None)
    row = await status("revoked", "key_compromise")
    assert (row.status, row.revocation_reason) == ("revoked", "keyCompromise")
    assert (await status("revoked", "keyCompromise")).status == "revoked"  # same: a no-op

    for target, reason, message in [
        ("good", None, "revocation is final"),
        ("suspended", None, "revocation is final"),
        ("revoked", "superseded", "revocation is final"),
    ]:
        with pytest.raises(StatusConflict, match=message):
            await status(target, reason)
    async with pki.session() as session:
        assert (await pki.service.get_certificate(session=session, serial=card.serial)).status == (
            "revoked"
        )


async def test_status_changes_refuse_unknown_serials_and_wrong_reasons(pki: Pki) -> None:
    card, _ = await pki.issue_card()
    async with pki.session() as session:
        with pytest.raises(UnknownCertificate, match="no certificate with serial"):
            await pki.service.set_status(session=session, serial=12345, status="revoked")
        with pytest.raises(UnknownCertificate, match="not a hexadecimal serial"):
            await pki.service.set_status(session=session, serial="xyz", status="revoked")
        with pytest.raises(StatusConflict, match="suspension's reason is certificateHold"):
            await pki.service.set_status(
                session=session, serial=card.serial, status="suspended", reason="superseded"
            )
        with pytest.raises(StatusConflict, match="not a revocation reason"):
            await pki.service.set_status(
                session=session, serial=card.serial, status="revoked", reason="certificateHold"
            )
        with pytest.raises(StatusConflict, match="unknown revocation reason"):
            await pki.service.set_status(
                session=session, serial=card.serial, status="revoked", reason="bored"
            )
        with pytest.raises(ValueError, match="is not a valid CertificateStatus"):
            await pki.service.set_status(session=session, serial=card.serial, status="lost")
    async with pki.session() as session:
        assert (await pki.service.get_certificate(session=session, serial=card.serial)).status == (
            "good"
        )


async def test_the_full_crl_lists_held_and_revoked_cards_once_reissued(pki: Pki) -> None:
    ca = await issuer(pki)
    held, _ = await pki.issue_card(card_serial="C-HELD")
    revoked, _ = await pki.issue_card(card_serial="C-REVOKED")
    good, _ = await pki.issue_card(card_serial="C-GOOD")

    first = await fetch_crl(pki, ca)
    assert entries(first) == {}
    freshest = first.extensions.get_extension_for_class(x509.FreshestCRL).value
    assert freshest[0].full_name == [
        x509.UniformResourceIdentifier(f"{BASE_URL}/identity/pki/crl/delta?issuer={ca.kid}")
    ]
    aki = first.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    assert aki.key_identifier.hex() == ca.kid
    assert first.next_update_utc == first.last_update_utc + timedelta(hours=24)

    await pki.set_status(held.serial, "suspended")
    await pki.set_status(revoked.serial, "revoked", "keyCompromise")
    # Within the re-issue interval the full CRL stands (the delta carries the news)...
    assert number(await fetch_crl(pki, ca)) == number(first)
    # ...after it, the next full CRL lists both, numbered after the first.
    pki.clock.advance(timedelta(hours=1, minutes=1))
    second = await fetch_crl(pki, ca)
    assert number(second) > number(first)
    assert entries(second) == {
        held.serial_number: HOLD,
        revoked.serial_number: x509.ReasonFlags.key_compromise,
    }
    assert good.serial_number not in entries(second)
    # Unchanged since: served again as it is.
    assert (await fetch_crl(pki, ca)).fingerprint(hashes.SHA256()) == second.fingerprint(
        hashes.SHA256()
    )


async def test_the_delta_crl_carries_a_suspension_and_then_its_removal(pki: Pki) -> None:
    ca = await issuer(pki)
    card, _ = await pki.issue_card()
    base = await fetch_crl(pki, ca)
    empty = await fetch_crl(pki, ca, delta=True)
    indicator = empty.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical
    assert indicator.value.crl_number == number(base)
    assert entries(empty) == {}

    await pki.set_status(card.serial, "suspended")
    suspended = await fetch_crl(pki, ca, delta=True)
    assert suspended.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value == (
        x509.DeltaCRLIndicator(number(base))
    )
    assert number(suspended) > number(empty)
    assert entries(suspended) == {card.serial_number: HOLD}

    await pki.set_status(card.serial, "good")
    resumed = await fetch_crl(pki, ca, delta=True)
    assert number(resumed) > number(suspended)
    assert entries(resumed) == {card.serial_number: x509.ReasonFlags.remove_from_crl}
    # Full and delta CRLs share one sequence (RFC 5280 section 5.2.4).
    assert number(await fetch_crl(pki, ca)) == number(base)

    # The next full CRL no longer lists it; a delta on that base has nothing to say.
    pki.clock.advance(timedelta(hours=1, minutes=1))
    rebased = await fetch_crl(pki, ca)
    assert number(rebased) > number(resumed)
    assert card.serial_number not in entries(rebased)
    after = await fetch_crl(pki, ca, delta=True)
    assert after.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value == (
        x509.DeltaCRLIndicator(number(rebased))
    )
    assert entries(after) == {}


async def test_each_issuing_ca_signs_the_crls_of_its_own_cards(pki: Pki) -> None:
    old = await issuer(pki)
    old_card, _ = await pki.issue_card()
    async with pki.session() as session:
        new = await pki.service.rollover_issuing_ca(session=session)
    new_card, _ = await pki.issue_card()
    await pki.set_status(old_card.serial, "revoked", "superseded")
    await pki.set_status(new_card.serial, "suspended")

    old_crl = await fetch_crl(pki, old, issuer_kid=old.kid)
    new_crl = await fetch_crl(pki, new)  # the current issuer by default
    assert entries(old_crl) == {old_card.serial_number: x509.ReasonFlags.superseded}
    assert entries(new_crl) == {new_card.serial_number: HOLD}


async def test_crl_routes_refuse_unknown_and_malformed_issuers(pki: Pki) -> None:
    root = x509.load_pem_x509_certificates((await pki.client.get("/identity/pki/ca")).content)[-1]
    root_kid = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    for kid, status, detail in [
        ("0" * 40, 404, "no CA with key id"),
        (root_kid.hex(), 404, "not an issuing CA"),
        ("not-a-kid", 422, "issuer"),
    ]:
        response = await pki.client.get("/identity/pki/crl", params={"issuer": kid})
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert detail in response.json()["detail"]


async def test_ocsp_answers_are_signed_nonce_bound_and_track_status(pki: Pki) -> None:
    ca = await issuer(pki)
    card, _ = await pki.issue_card()

    async def status_of(algorithm: hashes.HashAlgorithm | None = None) -> ocsp.OCSPResponse:
        nonce = os.urandom(32)
        answer = await ask(
            pki, ocsp_request(card.certificate, ca, nonce=nonce, algorithm=algorithm)
        )
        check_signed_by(answer, ca, nonce)
        assert answer.serial_number == card.serial_number
        return answer

    assert (await status_of()).certificate_status is ocsp.OCSPCertStatus.GOOD
    await pki.set_status(card.serial, "suspended")
    # RFC 6960 section 2.2: on hold is "revoked" with reason certificateHold.
    held = await status_of(algorithm=hashes.SHA256())
    assert held.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert held.revocation_reason is HOLD
    assert held.revocation_time_utc is not None
    await pki.set_status(card.serial, "good")
    assert (await status_of()).certificate_status is ocsp.OCSPCertStatus.GOOD
    await pki.set_status(card.serial, "revoked", "cessationOfOperation")
    revoked = await status_of()
    assert revoked.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_reason is x509.ReasonFlags.cessation_of_operation

    # Without a nonce the answer carries none.
    plain = await ask(pki, ocsp_request(card.certificate, ca))
    check_signed_by(plain, ca, None)


async def test_ocsp_by_get_decodes_the_url_encoded_base64_request(pki: Pki) -> None:
    ca = await issuer(pki)
    card, _ = await pki.issue_card()
    nonce = os.urandom(16)
    der = ocsp_request(card.certificate, ca, nonce=nonce)
    encoded = base64.b64encode(der).decode()
    for path in (
        urllib.parse.quote(encoded, safe=""),  # RFC 6960 appendix A.1
        base64.urlsafe_b64encode(der).decode().rstrip("="),
    ):
        response = await pki.client.get(f"/identity/pki/ocsp/{path}")
        assert response.status_code == 200
        answer = ocsp.load_der_ocsp_response(response.content)
        check_signed_by(answer, ca, nonce)
        assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD


async def test_ocsp_says_unknown_for_a_serial_we_never_issued(pki: Pki) -> None:
    ca = await issuer(pki)
    card, _ = await pki.issue_card()
    foreign = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            issuer_name_hash=_hash(ca.certificate.subject.public_bytes()),
            issuer_key_hash=_hash(
                ca.certificate.public_key().public_bytes(
                    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
                )
            ),
            serial_number=card.serial_number + 1,
            algorithm=hashes.SHA1(),
        )
        .add_extension(x509.OCSPNonce(b"n" * 20), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    answer = await ask(pki, foreign)
    check_signed_by(answer, ca, b"n" * 20)
    assert answer.certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def _hash(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA1())
    digest.update(data)
    return digest.finalize()


async def test_ocsp_is_unauthorized_for_an_issuer_that_is_not_ours(pki: Pki) -> None:
    _, foreign_ca = make_authority()
    key = ec.generate_private_key(ec.SECP256R1())
    foreign_card = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "x")]))
        .issuer_name(foreign_ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(pki.clock.now)
        .not_valid_after(pki.clock.now + timedelta(days=1))
        .sign(foreign_ca.key, hashes.SHA256())
    )
    answer = await ask(pki, ocsp_request(foreign_card, foreign_ca, nonce=b"x" * 16))
    assert answer.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b"\x30\x03\x02\x01\x01", b"\x30" + b"\xff" * 50],
    ids=["empty", "garbage", "wrong-structure", "bad-length"],
)
async def test_a_malformed_ocsp_request_gets_malformed_request_not_a_500(
    pki: Pki, body: bytes
) -> None:
    answer = await ask(pki, body)
    assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    size = (n.bit_length() + 7) // 8  # DER: the shortest long form (X.690 section 10.1)
    return bytes([0x80 | size]) + n.to_bytes(size, "big")


def der_content(der: bytes) -> bytes:
    """The content of a DER TLV (short or two-byte long form lengths)."""
    if der[1] < 0x80:
        return der[2 : 2 + der[1]]
    size = der[1] & 0x7F
    length = int.from_bytes(der[2 : 2 + size], "big")
    return der[2 + size : 2 + size + length]


def sequence(*parts: bytes) -> bytes:
    body = b"".join(parts)
    return b"\x30" + der_length(len(body)) + body


def two_certificate_request(single: bytes) -> bytes:
    """An OCSPRequest asking about two certificates (RFC 6960 allows it; cryptography
    cannot build one): the single Request of ``single`` (no extensions) twice."""
    tbs = der_content(single)
    request_list = der_content(tbs)
    request = der_content(request_list)
    return sequence(sequence(sequence(request, request)))


async def test_a_request_for_several_certificates_is_refused_as_malformed(pki: Pki) -> None:
    ca = await issuer(pki)
    card, _ = await pki.issue_card()
    single = ocsp_request(card.certificate, ca)
    assert ocsp.load_der_ocsp_request(single).serial_number == card.serial_number
    answer = await ask(pki, two_certificate_request(single))
    assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


async def test_ocsp_nonces_follow_rfc_8954_and_bad_transport_is_refused(pki: Pki) -> None:
    ca = await issuer(pki)
    card, _ = await pki.issue_card()
    long_ok = await ask(pki, ocsp_request(card.certificate, ca, nonce=b"a" * 128))
    check_signed_by(long_ok, ca, b"a" * 128)
    too_long = await ask(pki, ocsp_request(card.certificate, ca, nonce=b"a" * 129))
    assert too_long.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    empty = await ask(pki, ocsp_request(card.certificate, ca, nonce=b""))
    assert empty.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST

    not_base64 = await pki.client.get("/identity/pki/ocsp/%%%not*base64")
    assert not_base64.status_code == 200
    assert ocsp.load_der_ocsp_response(not_base64.content).response_status is (
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )

    wrong_type = await pki.client.post(
        "/identity/pki/ocsp", content=b"{}", headers={"content-type": "application/json"}
    )
    assert wrong_type.status_code == 415
    assert "application/ocsp-request" in wrong_type.json()["detail"]
    oversized = await pki.client.post(
        "/identity/pki/ocsp", content=b"\x30" * 10_000, headers=OCSP_REQUEST
    )
    assert oversized.status_code == 413
    assert oversized.headers["content-type"] == "application/problem+json"


async def test_status_routes_are_public(pki: Pki) -> None:
    # No credentials at all: anyone must be able to check a card's status.
    transport = pki.client._transport  # the same in-process app
    async with httpx.AsyncClient(transport=transport, base_url="http://anyone") as anyone:
        for path in ("/identity/pki/ca", "/identity/pki/crl", "/identity/pki/crl/delta"):
            assert (await anyone.get(path)).status_code == 200
