"""Card serials, the card's table against its migration, and rebuilding the status cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from identity.cards.models import CardKind
from identity.cards.service import (
    StatusOutbox,
    luhn_digit,
    new_serial,
    republish,
    serial_is_well_formed,
)
from identity.pki.certificates import PublicUrls, build_card_certificate, load_csr
from identity.simulators.card import CardError, CardStateError, VirtualCard
from services.kit.revocation import Revocations
from tests.identity.cards.conftest import Desk
from tests.identity.pki.conftest import make_authority

PSEUDONYM = "cz_abcdefghijklmnopqrstuvwxyz"


def test_luhn_digits_match_the_iso_7812_worked_examples() -> None:
    # ISO/IEC 7812-1 annex B and the usual test numbers of card schemes.
    assert luhn_digit("7992739871") == "3"
    assert luhn_digit("411111111111111") == "1"
    assert luhn_digit("000") == "0"


def test_serials_are_readable_checked_and_say_their_kind() -> None:
    serials = {new_serial(CardKind.PHYSICAL, "330") for _ in range(200)}
    assert len(serials) == 200
    for serial in serials:
        assert len(serial) == 14
        assert serial.startswith("C330")
        assert serial_is_well_formed(serial)
    electronic = new_serial(CardKind.ELECTRONIC, "330")
    assert electronic.startswith("E330")
    assert serial_is_well_formed(electronic)

    # Luhn catches every single-digit typo and every adjacent swap but 09 <-> 90 (ISO/IEC
    # 7812-1): test a swap it is meant to catch, not a random one.
    serial = next(s for s in sorted(serials) if {s[5], s[6]} not in ({"0", "9"},) and s[5] != s[6])
    typo = serial[:5] + str((int(serial[5]) + 1) % 10) + serial[6:]
    swapped = serial[:5] + serial[6] + serial[5] + serial[7:]
    assert not serial_is_well_formed(typo)
    assert not serial_is_well_formed(swapped)
    for bad in ("", "C33012345678", "X3301234567890", "C33O123456789O", "C٣٣٠1234567890"):
        assert not serial_is_well_formed(bad)
    with pytest.raises(ValueError, match="3 digits"):
        new_serial(CardKind.PHYSICAL, "33")


def _only_cards(obj: Any, name: str | None, kind: str, reflected: bool, other: Any) -> bool:
    table = obj if kind == "table" else getattr(obj, "table", None)
    return getattr(table, "name", None) == "cards"


async def test_the_model_matches_migration_0005(desk: Desk) -> None:
    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"include_object": _only_cards, "compare_server_default": True}
        )
        differences: list[Any] = compare_metadata(context, SQLModel.metadata)
        return differences

    async with desk.db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_republish_rebuilds_the_status_cache_from_the_database(desk: Desk) -> None:
    _, _, active = await desk.issued_card()
    _, _, issued = await desk.issued_card(active=False)
    await desk.step(active["serial"], "suspend")
    redis = desk.identity.app.state.runtime.redis
    # Redis lost everything (it holds only what may be rebuilt).
    revocations = Revocations(redis)
    for serial in (active["serial"], issued["serial"]):
        await revocations.set_card_status(serial, None)

    outbox = StatusOutbox()
    async with desk.session() as session:
        count = await republish(
            session=session, outbox=outbox, since=datetime.now(UTC) - timedelta(hours=1)
        )
    await outbox.publish(revocations)
    assert count == 2
    assert outbox.pending == {}
    assert await desk.cached_status(active["serial"]) == "suspended"
    assert await desk.cached_status(issued["serial"]) == "issued"


# -- the virtual card learns its serial when it is issued -------------------------------------


def _certificate_for(card: VirtualCard, serial: str) -> bytes:
    """A card certificate for ``card``'s key naming card ``serial``, as the PKI builds it."""
    _, issuer = make_authority()
    now = datetime.now(UTC)
    certificate = build_card_certificate(
        load_csr(card.csr(PSEUDONYM)),
        issuer=issuer,
        serial=x509.random_serial_number(),
        pseudonym=PSEUDONYM,
        card_serial=serial,
        applications=frozenset({"health"}),
        not_after=now + timedelta(days=30),
        now=now,
        urls=PublicUrls("https://id.example.test"),
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def test_a_card_made_before_issue_takes_its_serial_from_its_certificate(
    tmp_path: Path,
) -> None:
    card = VirtualCard.create(tmp_path / "card.json")
    assert not card.has_serial
    with pytest.raises(CardStateError, match="no serial yet"):
        _ = card.serial
    csr = load_csr(card.csr(PSEUDONYM))
    assert csr.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER) == []

    card.install_certificate(_certificate_for(card, "C0001234567897"))
    assert card.serial == "C0001234567897"
    reloaded = VirtualCard.load(tmp_path / "card.json")
    assert reloaded.serial == "C0001234567897"
    assert reloaded.certificate is not None


def test_a_card_keeps_its_serial_for_life(tmp_path: Path) -> None:
    card = VirtualCard.create(tmp_path / "card.json")
    card.assign_serial("C0001234567897")
    card.assign_serial("C0001234567897")  # the same again is no change
    with pytest.raises(CardStateError, match="already has serial C0001234567897"):
        card.assign_serial("C0009999999996")
    with pytest.raises(CardError, match="is for card C0009999999996, not this card"):
        card.install_certificate(_certificate_for(card, "C0009999999996"))
    assert card.certificate is None
    with pytest.raises(CardError, match="card serial is 1-64"):
        VirtualCard.create(tmp_path / "other.json").assign_serial("bad serial!")
