"""The virtual card: key made on the card, PIN counted and blocked, PUK, signatures, its file."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from identity.pki.certificates import PublicUrls, build_card_certificate, load_csr
from identity.protocol import challenge_digest
from identity.simulators.card import (
    CardBlocked,
    CardError,
    CardStateError,
    VirtualCard,
    WrongPin,
    WrongPuk,
)
from tests.identity.pki.conftest import make_authority

PIN = "482915"
PUK = "73019264"
PSEUDONYM = "cz_abcdefghijklmnopqrstuvwxyz"
DOMAIN = "https://id.example.test"


def certify(card: VirtualCard) -> x509.Certificate:
    """Issue the card's certificate the way the PKI does, from the card's own CSR."""
    _, issuer = make_authority()
    now = datetime.now(UTC)
    return build_card_certificate(
        load_csr(card.csr(PSEUDONYM)),
        issuer=issuer,
        serial=x509.random_serial_number(),
        pseudonym=PSEUDONYM,
        card_serial=card.serial,
        applications=frozenset({"health"}),
        not_after=now + timedelta(days=30),
        now=now,
        urls=PublicUrls(DOMAIN),
    )


@pytest.fixture
def card(tmp_path: Path) -> VirtualCard:
    card = VirtualCard.create(tmp_path / "cards" / "card.json", "C-0001")
    card.install_certificate(certify(card).public_bytes(serialization.Encoding.PEM))
    card.activate(PIN, PUK)
    return card


def verify(card: VirtualCard, signature: bytes, *, nonce: bytes, pin_verified: bool) -> None:
    cert = card.certificate
    assert cert is not None
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    digest = challenge_digest(
        domain=DOMAIN, terminal_id="T-1", nonce=nonce, pin_verified=pin_verified
    )
    public.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_a_new_card_makes_its_own_key_and_asks_for_a_certificate(tmp_path: Path) -> None:
    card = VirtualCard.create(tmp_path / "card.json", "C-0002")
    csr = load_csr(card.csr(PSEUDONYM))
    assert csr.public_key() == card.public_key
    assert isinstance(card.public_key.curve, ec.SECP256R1)
    assert csr.subject.get_attributes_for_oid(x509.oid.NameOID.SERIAL_NUMBER)[0].value == "C-0002"
    assert card.certificate is None
    assert not card.activated
    with pytest.raises(CardError, match="never overwritten"):
        VirtualCard.create(tmp_path / "card.json", "C-0002")
    with pytest.raises(CardError, match="card serial"):
        VirtualCard.create(tmp_path / "other.json", "bad serial!")


def test_the_card_file_is_private_and_holds_no_pin_or_puk_in_clear(card: VirtualCard) -> None:
    mode = stat.S_IMODE(card.path.stat().st_mode)
    assert mode == 0o600
    text = card.path.read_text()
    assert PIN not in text
    assert PUK not in text
    data = json.loads(text)
    assert set(data["pin"]) == {"salt", "hash", "n", "r", "p"}
    assert data["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----")
    # Atomic writes leave no temporary files behind.
    assert [p.name for p in card.path.parent.iterdir()] == ["card.json"]
    reloaded = VirtualCard.load(card.path)
    assert reloaded.public_key == card.public_key
    assert reloaded.verify_pin(PIN)


def test_a_challenge_signed_with_the_pin_verifies_against_the_certificate(
    card: VirtualCard,
) -> None:
    nonce = bytes(range(32))
    signature, pin_verified = card.sign_challenge(
        domain=DOMAIN, terminal_id="T-1", nonce=nonce, pin=PIN
    )
    assert pin_verified
    verify(card, signature, nonce=nonce, pin_verified=True)
    # The signature binds the PIN statement: it does not verify as "card alone".
    with pytest.raises(InvalidSignature):
        verify(card, signature, nonce=nonce, pin_verified=False)


def test_a_challenge_signed_without_the_pin_says_so(card: VirtualCard) -> None:
    nonce = b"\x01" * 32
    signature, pin_verified = card.sign_challenge(
        domain=DOMAIN, terminal_id="T-1", nonce=nonce, pin=None
    )
    assert not pin_verified
    verify(card, signature, nonce=nonce, pin_verified=False)


def test_a_wrong_pin_gets_no_signature(card: VirtualCard) -> None:
    with pytest.raises(WrongPin, match="2 tries left"):
        card.sign_challenge(domain=DOMAIN, terminal_id="T-1", nonce=bytes(32), pin="000000")
    assert card.pin_tries_left == 2


def test_three_wrong_pins_block_the_pin_and_the_count_survives_a_reload(
    card: VirtualCard,
) -> None:
    assert not card.verify_pin("111111")
    assert not VirtualCard.load(card.path).verify_pin("222222")  # another process, same file
    card = VirtualCard.load(card.path)
    assert card.pin_tries_left == 1
    assert not card.verify_pin("333333")
    assert card.pin_blocked
    with pytest.raises(CardBlocked, match="unblock it with the PUK") as blocked:
        card.verify_pin(PIN)  # even the right PIN
    assert not blocked.value.permanent
    with pytest.raises(CardBlocked):
        card.sign_challenge(domain=DOMAIN, terminal_id="T-1", nonce=bytes(32), pin=PIN)
    # Card alone still works: a blocked PIN blocks what needs the PIN.
    card.sign_challenge(domain=DOMAIN, terminal_id="T-1", nonce=bytes(32), pin=None)


def test_a_right_pin_resets_the_counter(card: VirtualCard) -> None:
    assert not card.verify_pin("111111")
    assert not card.verify_pin("222222")
    assert card.verify_pin(PIN)
    assert card.pin_tries_left == 3
    assert VirtualCard.load(card.path).pin_tries_left == 3


def test_the_puk_unblocks_and_sets_a_new_pin(card: VirtualCard) -> None:
    for wrong in ("111111", "222222", "333333"):
        card.verify_pin(wrong)
    with pytest.raises(WrongPuk, match="9 tries left"):
        card.unblock("00000000", "654321")
    card.unblock(PUK, "654321")
    assert not card.pin_blocked
    assert card.puk_tries_left == 10
    assert card.verify_pin("654321")
    assert not card.verify_pin(PIN)


def test_ten_wrong_puks_block_the_card_for_good(card: VirtualCard) -> None:
    for attempt in range(9):
        with pytest.raises(WrongPuk):
            card.unblock(f"{attempt:08d}", "654321")
    with pytest.raises(CardBlocked, match="blocked for good") as dead:
        card.unblock("99999999", "654321")
    assert dead.value.permanent
    assert card.permanently_blocked
    card = VirtualCard.load(card.path)
    for refused in (
        lambda: card.unblock(PUK, "654321"),  # even the right PUK
        lambda: card.verify_pin(PIN),
        lambda: card.sign_challenge(domain=DOMAIN, terminal_id="T", nonce=bytes(32), pin=None),
        lambda: card.sign(b"data"),
    ):
        with pytest.raises(CardBlocked, match="for good"):
            refused()


def test_change_pin_needs_the_old_one_and_a_well_formed_new_one(card: VirtualCard) -> None:
    with pytest.raises(WrongPin):
        card.change_pin("000000", "135790")
    assert card.pin_tries_left == 2
    for bad in ("12345", "1234567", "12345a", "١٢٣٤٥٦"):  # the last: Arabic-Indic digits
        with pytest.raises(CardError, match="exactly 6 digits"):
            card.change_pin(PIN, bad)
    card.change_pin(PIN, "135790")
    assert card.verify_pin("135790")
    assert "135790" not in card.path.read_text()


def test_activation_is_once_only_and_required_before_use(tmp_path: Path) -> None:
    card = VirtualCard.create(tmp_path / "card.json", "C-0003")
    with pytest.raises(CardStateError, match="not activated"):
        card.verify_pin(PIN)
    with pytest.raises(CardStateError, match="not activated"):
        card.sign_challenge(domain=DOMAIN, terminal_id="T-1", nonce=bytes(32), pin=None)
    with pytest.raises(CardError, match="PUK is exactly 8 digits"):
        card.activate(PIN, "1234")
    card.activate(PIN, PUK)
    with pytest.raises(CardStateError, match="already activated"):
        card.activate("999999", PUK)


def test_a_certificate_for_another_key_is_refused(card: VirtualCard, tmp_path: Path) -> None:
    other = VirtualCard.create(tmp_path / "other.json", "C-0004")
    with pytest.raises(CardError, match="another key"):
        card.install_certificate(certify(other).public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CardError, match="not a PEM certificate"):
        card.install_certificate("garbage")


def test_sign_makes_an_ecdsa_sha256_signature(card: VirtualCard) -> None:
    signature = card.sign(b"prescription 42")
    card.public_key.verify(signature, b"prescription 42", ec.ECDSA(hashes.SHA256()))


def test_a_corrupt_card_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    path.write_text("{not json")
    with pytest.raises(CardError, match="corrupt"):
        VirtualCard.load(path)
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CardError, match="not a virtual card file"):
        VirtualCard.load(path)
    with pytest.raises(CardError, match="no card file"):
        VirtualCard.load(tmp_path / "missing.json")
