"""Registering a terminal: a client of kind terminal and a certificate from its own CSR."""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from identity.pki.certificates import certificate_kind
from identity.pki.models import CertificateKind
from identity.simulators.terminal import VirtualTerminal, register, tap, terminal_csr
from identity.terminals.bootstrap import add_terminal
from identity.terminals.cards import jwk_thumbprint
from services.kit.tokens import unverified_claims
from tests.identity.terminals.conftest import ISSUER, Taps


async def test_a_registered_terminal_gets_a_certificate_and_its_own_tokens(taps: Taps) -> None:
    registered = await register(
        taps.http,
        admin_token=await taps.identity.token("terminal.manage"),
        facility="Line 3 bus 1024",
        purpose="bus",
        base_url=ISSUER,
    )
    info = registered.info
    terminal_id = registered.credentials.client_id
    assert terminal_id.startswith("term_")
    assert info["purpose"] == "bus"
    assert info["application"] == "transit"
    assert info["scopes"] == ["terminal.auth"]
    assert info["name"] == "bus at Line 3 bus 1024"
    # The key it registered is the key of its CSR, under the RFC 7638 thumbprint.
    assert info["kid"] == jwk_thumbprint(registered.credentials.private_key.public_key())

    certificate = x509.load_pem_x509_certificate(info["certificate"].encode())
    assert certificate_kind(certificate) is CertificateKind.TERMINAL
    subject = {a.oid: a.value for a in certificate.subject}
    assert subject[NameOID.COMMON_NAME] == terminal_id
    assert subject[NameOID.ORGANIZATION_NAME] == "Line 3 bus 1024"
    assert subject[NameOID.ORGANIZATIONAL_UNIT_NAME] == "bus"
    assert certificate.public_key() == registered.credentials.private_key.public_key()
    assert f"{certificate.serial_number:040x}" == info["certificate_serial"]

    # It authenticates its own requests with that key: a short terminal.auth token.
    token = await VirtualTerminal(registered.credentials).access_token(taps.http)
    claims = unverified_claims(token)
    assert claims["sub"] == claims["client_id"] == terminal_id
    assert claims["scope"] == "terminal.auth"

    again = await taps.http.get(
        f"/identity/terminals/{terminal_id}", headers=await taps.identity.auth("terminal.manage")
    )
    assert again.status_code == 200
    assert again.json()["certificate"] == info["certificate"]


async def test_registration_needs_the_terminal_manage_scope(taps: Taps) -> None:
    body = {
        "facility": "Central Pharmacy",
        "purpose": "pharmacy",
        "csr": terminal_csr(ec.generate_private_key(ec.SECP256R1())),
    }
    anonymous = await taps.http.post("/identity/terminals", json=body)
    assert anonymous.status_code == 401
    wrong = await taps.http.post(
        "/identity/terminals", json=body, headers=await taps.identity.auth("client.manage")
    )
    assert wrong.status_code == 403
    created = await taps.http.post(
        "/identity/terminals", json=body, headers=await taps.identity.auth("terminal.manage")
    )
    assert created.status_code == 201
    assert created.headers["location"] == "/identity/terminals/" + created.json()["terminal_id"]


def _tampered(csr_pem: str) -> str:
    """The CSR with one bit of its signature flipped: no proof of possession any more."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


async def test_bad_registrations_are_refused_with_the_reason(taps: Taps) -> None:
    headers = await taps.identity.auth("terminal.manage")
    csr = terminal_csr(ec.generate_private_key(ec.SECP256R1()))
    cases = [
        ({"facility": "x", "purpose": "mobile_app", "csr": csr}, "not a registered terminal"),
        ({"facility": "x", "purpose": "casino", "csr": csr}, "unknown purpose"),
        ({"facility": "x", "purpose": "bus", "csr": "garbage"}, "CSR is not PEM"),
        ({"facility": "x", "purpose": "bus", "csr": _tampered(csr)}, "CSR signature"),
        ({"facility": "", "purpose": "bus", "csr": csr}, "facility"),
        ({"facility": "x", "purpose": "bus", "csr": csr, "jwk": {}}, "jwk"),
    ]
    for body, reason in cases:
        response = await taps.http.post("/identity/terminals", json=body, headers=headers)
        assert response.status_code == 422, body
        assert reason in response.json()["detail"], response.json()["detail"]
    # Nothing was half-written: no terminal client, no terminal certificate.
    for table in ("clients", "certificates"):
        rows = await taps.rows(f"SELECT count(*) AS n FROM {table} WHERE kind = 'terminal'")
        assert rows == [{"n": 0}], table
    missing = await taps.http.get("/identity/terminals/term_0000000000000000", headers=headers)
    assert missing.status_code == 404


async def test_the_console_registers_a_terminal_without_http(taps: Taps) -> None:
    new = await add_terminal(
        taps.identity.app.state.runtime.db,
        taps.identity.settings,
        facility="Provincial Library",
        purpose="library",
        pki=taps.pki,
    )
    assert new.certificate_pem.startswith("-----BEGIN CERTIFICATE-----")
    card = await taps.card(applications=frozenset({"library"}))
    result = await tap(taps.http, terminal=VirtualTerminal(new.credentials), card=card)
    assert result.claims["act"]["purpose"] == "library"
    assert result.claims["scope"] == "library.borrow"
