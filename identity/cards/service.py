"""The card's state machine, and the certificate and status cache kept in step with it.

::

    issue ──> issued ──activate──> active <──suspend/resume──> suspended
                 │                   │                            │
                 └──── replace (revoked) / cancel (cancelled) ────┘
              any live card (issued, active, suspended) past its notAfter: expired

An electronic card is issued *active* against an active physical card and follows it:
suspending, resuming, replacing, cancelling or expiring the physical card does the same to its
live e-card. A citizen has at most one live physical card and one live e-card; a new e-card
(a new phone) supersedes the previous one.

Each status has its certificate status (RFC 5280 section 5.3.1) and its entry in the status
cache every service reads (:class:`services.kit.revocation.Revocations`):

    card        certificate                           Redis card-status
    issued      suspended (certificateHold)           "issued"
    active      good                                  (none)
    suspended   suspended (certificateHold)           "suspended"
    revoked     revoked (superseded)                  "revoked"
    cancelled   revoked (cessationOfOperation)        "cancelled"
    expired     (expired by its own notAfter)         "expired"

A card is unusable until it is activated, as with identity cards whose certificates are held
until the card reaches its holder: a card stolen on its way to the holder authenticates nobody.

Every function here runs inside the caller's unit of work and flushes, never commits: the card
row and its certificate's status change together or not at all. Redis changes are collected in a
:class:`StatusOutbox` and published by the caller once the transaction has committed, so the
cache never runs ahead of the database (the truth).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlmodel.ext.asyncio.session import AsyncSession

from identity.cards import repository
from identity.cards.models import LIVE, Card, CardKind, CardStatus
from identity.cards.schemas import CardIssued, CardPublic
from identity.citizens import service as citizens
from identity.pki import AuthorityUnavailable, InvalidRequest, StatusConflict
from identity.pki.authority import key_id
from identity.pki.certificates import load_csr
from identity.pki.models import CertificateStatus, IssuedCertificate, as_utc
from identity.pki.service import PkiService
from services.kit.errors import Problem
from services.kit.revocation import Revocations

log = logging.getLogger(__name__)

# Asked of the PKI for a new card, which caps it at the issuing CA's own notAfter.
CARD_VALIDITY = timedelta(days=5 * 365)
# The issuing region of a deployment (3 digits) when its settings name none.
DEFAULT_REGION = "000"
# How many cards one expiry sweep handles; the next sweep takes the rest.
EXPIRY_BATCH = 500

_PREFIX = {CardKind.PHYSICAL: "C", CardKind.ELECTRONIC: "E"}
_CERTIFICATE_STATUS = {
    CardStatus.ISSUED: CertificateStatus.SUSPENDED,
    CardStatus.ACTIVE: CertificateStatus.GOOD,
    CardStatus.SUSPENDED: CertificateStatus.SUSPENDED,
    CardStatus.REVOKED: CertificateStatus.REVOKED,
    CardStatus.CANCELLED: CertificateStatus.REVOKED,
}
_REASON = {
    CardStatus.ISSUED: x509.ReasonFlags.certificate_hold,
    CardStatus.SUSPENDED: x509.ReasonFlags.certificate_hold,
    CardStatus.REVOKED: x509.ReasonFlags.superseded,
    CardStatus.CANCELLED: x509.ReasonFlags.cessation_of_operation,
}


# -- serials ---------------------------------------------------------------------------------


def luhn_digit(digits: str) -> str:
    """The Luhn check digit of ``digits`` (ISO/IEC 7812-1 annex B), as bank cards carry.

    Hand-written: eight lines, and it catches every mistyped digit and most swaps at a desk.
    """
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str((10 - total % 10) % 10)


def new_serial(kind: CardKind, region: str) -> str:
    """``C`` (physical) or ``E`` (electronic), 3-digit region, 9 random digits, check digit.

    Readable aloud at a counter and typed without confusion (digits only after the letter);
    the check digit turns a typo into "no such card format" rather than someone else's card.
    """
    if len(region) != 3 or not region.isascii() or not region.isdigit():
        raise ValueError("a card region is 3 digits")
    body = region + f"{secrets.randbelow(10**9):09d}"
    return _PREFIX[kind] + body + luhn_digit(body)


def serial_is_well_formed(serial: str) -> bool:
    return (
        len(serial) == 14
        and serial[0] in "CE"
        and serial[1:].isascii()
        and serial[1:].isdigit()
        and luhn_digit(serial[1:13]) == serial[13]
    )


# -- the status cache ------------------------------------------------------------------------


def cache_value(status: CardStatus) -> str | None:
    """A card's entry in Redis: none when it is active, else its status."""
    return None if status is CardStatus.ACTIVE else status.value


@dataclass
class StatusOutbox:
    """Card statuses to write to Redis once the database transaction has committed."""

    pending: dict[str, str | None] = field(default_factory=dict)

    def record(self, card: Card) -> None:
        self.pending[card.serial] = cache_value(CardStatus(card.status))

    async def publish(self, revocations: Revocations) -> None:
        """Write every recorded status; what was written is forgotten (a retry resumes)."""
        for serial, value in list(self.pending.items()):
            await revocations.set_card_status(serial, value)
            del self.pending[serial]


# -- reading ---------------------------------------------------------------------------------


def effective_status(card: Card, *, now: datetime) -> CardStatus:
    """The status as of ``now``: a live card past its notAfter is expired, swept or not."""
    status = CardStatus(card.status)
    if status in LIVE and as_utc(card.not_after) <= now:
        return CardStatus.EXPIRED
    return status


def public_view(card: Card, *, now: datetime) -> CardPublic:
    return CardPublic(
        serial=card.serial,
        kind=CardKind(card.kind),
        citizen=card.citizen_pseudonym,
        parent=card.parent_serial,
        status=effective_status(card, now=now),
        held_by_parent=card.held_by_parent,
        applications=card.application_list,
        certificate_serial=card.certificate_serial,
        not_after=as_utc(card.not_after),
        created_at=as_utc(card.created_at),
        activated_at=as_utc(card.activated_at) if card.activated_at else None,
        status_changed_at=as_utc(card.status_changed_at),
        replaced_by=card.replaced_by,
    )


@dataclass(frozen=True)
class IssuedCard:
    card: Card
    certificate_pem: str

    def view(self, *, now: datetime) -> CardIssued:
        return CardIssued(
            **public_view(self.card, now=now).model_dump(), certificate=self.certificate_pem
        )


async def get(*, session: AsyncSession, serial: str, holder: str | None) -> Card:
    """A card, for an administrator (``holder`` None) or for the citizen who holds it."""
    card = await repository.get(session, serial=serial)
    if card is None:
        raise _unknown(serial)
    _check_holder(card, holder)
    return card


async def of_citizen(*, session: AsyncSession, citizen: str) -> Sequence[Card]:
    """Every card of a registered citizen, newest first (404 for an unknown citizen)."""
    await citizens.get(session=session, pseudonym=citizen)
    return await repository.of_citizen(session, citizen=citizen)


async def mine(*, session: AsyncSession, holder: str) -> Sequence[Card]:
    """The cards of the citizen asking, newest first."""
    return await repository.of_citizen(session, citizen=holder)


# -- issuing ---------------------------------------------------------------------------------


async def issue(
    *,
    session: AsyncSession,
    pki: PkiService,
    outbox: StatusOutbox,
    citizen: str,
    applications: Iterable[str],
    csr_pem: str,
    region: str,
    now: datetime,
) -> IssuedCard:
    """Issue a physical card: certify the key the card made; usable once activated."""
    card_key = _check_csr(csr_pem, citizen=citizen)
    await citizens.get(session=session, pseudonym=citizen)
    # A card past its expiry that no sweep has reached yet must not block its successor.
    await _expire_due(session=session, outbox=outbox, citizen=citizen, now=now)
    existing = await repository.live_card(session, citizen=citizen, kind=CardKind.PHYSICAL)
    if existing is not None:
        raise Problem(
            409,
            f"the citizen already has live physical card {existing.serial} "
            f"({effective_status(existing, now=now)}); replace or cancel it first",
            card=existing.serial,
        )
    return await _new_card(
        session=session,
        pki=pki,
        outbox=outbox,
        citizen=citizen,
        kind=CardKind.PHYSICAL,
        parent=None,
        status=CardStatus.ISSUED,
        applications=applications,
        csr_pem=csr_pem,
        card_key=card_key,
        not_after=now + CARD_VALIDITY,
        region=region,
        now=now,
    )


async def replace(
    *,
    session: AsyncSession,
    pki: PkiService,
    outbox: StatusOutbox,
    serial: str,
    csr_pem: str,
    applications: Iterable[str] | None,
    region: str,
    now: datetime,
) -> IssuedCard:
    """A new physical card for the same citizen; the old one (and its e-card) is revoked."""
    old = await _lock(session, serial)
    if old.kind == CardKind.ELECTRONIC:
        raise _conflict(
            old,
            now=now,
            transition="replace",
            hint="an electronic card is not replaced: issue a new one against the physical "
            f"card {old.parent_serial} (POST /identity/cards/{old.parent_serial}/ecard)",
        )
    _require(
        old,
        now=now,
        transition="replace",
        allowed=LIVE,
        hint="only a live card is replaced; issue a new card (POST /identity/cards)",
    )
    card_key = _check_csr(csr_pem, citizen=old.citizen_pseudonym)
    children = await _children(session, old)
    # The old card goes first: the partial unique index admits one live card per citizen.
    await _move(session=session, pki=pki, outbox=outbox, card=old, to=CardStatus.REVOKED, now=now)
    await _follow(session=session, pki=pki, outbox=outbox, parent=old, children=children, now=now)
    new = await _new_card(
        session=session,
        pki=pki,
        outbox=outbox,
        citizen=old.citizen_pseudonym,
        kind=CardKind.PHYSICAL,
        parent=None,
        status=CardStatus.ISSUED,
        applications=applications if applications is not None else old.application_list,
        csr_pem=csr_pem,
        card_key=card_key,
        not_after=now + CARD_VALIDITY,
        region=region,
        now=now,
    )
    old.replaced_by = new.card.serial
    await repository.save(session, old)
    log.info("card replaced", extra={"card": old.serial, "replaced_by": new.card.serial})
    return new


async def issue_electronic(
    *,
    session: AsyncSession,
    pki: PkiService,
    outbox: StatusOutbox,
    serial: str,
    csr_pem: str,
    holder: str | None,
    region: str,
    now: datetime,
) -> IssuedCard:
    """An e-card for the holder's phone, against their active physical card ``serial``.

    It is active at once, enabled for the physical card's applications, and expires with it.
    A previous live e-card of the citizen (the old phone) is revoked as superseded.
    """
    # Locked for the whole transaction: a suspension racing this issue waits, then finds
    # the new e-card and suspends it too.
    parent = await _lock(session, serial)
    _check_holder(parent, holder)
    if parent.kind == CardKind.ELECTRONIC:
        raise _conflict(
            parent,
            now=now,
            transition="ecard",
            hint="an electronic card is issued against a physical card, not another e-card",
        )
    _require(
        parent,
        now=now,
        transition="ecard",
        allowed=(CardStatus.ACTIVE,),
        hint="an electronic card is issued only against an active physical card",
    )
    card_key = _check_csr(csr_pem, citizen=parent.citizen_pseudonym)
    previous = await repository.live_card(
        session, citizen=parent.citizen_pseudonym, kind=CardKind.ELECTRONIC
    )
    if previous is not None:
        previous = await _lock(session, previous.serial)
        await _move(
            session=session, pki=pki, outbox=outbox, card=previous, to=CardStatus.REVOKED, now=now
        )
    new = await _new_card(
        session=session,
        pki=pki,
        outbox=outbox,
        citizen=parent.citizen_pseudonym,
        kind=CardKind.ELECTRONIC,
        parent=parent.serial,
        status=CardStatus.ACTIVE,
        applications=parent.application_list,
        csr_pem=csr_pem,
        card_key=card_key,
        not_after=as_utc(parent.not_after),
        region=region,
        now=now,
    )
    if previous is not None:
        previous.replaced_by = new.card.serial
        await repository.save(session, previous)
    return new


# -- status changes --------------------------------------------------------------------------


async def activate(
    *, session: AsyncSession, pki: PkiService, outbox: StatusOutbox, serial: str, now: datetime
) -> Card:
    """The holder has set the card's PIN at the desk: the card (and its certificate) go live."""
    card = await _lock(session, serial)
    _require(
        card,
        now=now,
        transition="activate",
        allowed=(CardStatus.ISSUED,),
        hint="only an issued card is activated",
    )
    await _move(session=session, pki=pki, outbox=outbox, card=card, to=CardStatus.ACTIVE, now=now)
    return card


async def suspend(
    *,
    session: AsyncSession,
    pki: PkiService,
    outbox: StatusOutbox,
    serial: str,
    holder: str | None,
    now: datetime,
) -> Card:
    """Report a card lost: suspended at once, its e-card with it.

    Suspending a suspended card is accepted and changes nothing in the database (a holder may
    press "report lost" twice); its status is published again all the same.
    """
    card = await _lock(session, serial)
    _check_holder(card, holder)
    if effective_status(card, now=now) is CardStatus.SUSPENDED:
        if card.held_by_parent:
            # Now held on its own account too: resuming the physical card will not lift it.
            card.held_by_parent = False
            await repository.save(session, card)
        outbox.record(card)
        return card
    _require(
        card,
        now=now,
        transition="suspend",
        allowed=(CardStatus.ACTIVE,),
        hint="only an active card is suspended (a card lost before activation is replaced "
        "or cancelled)",
    )
    children = await _children(session, card)
    await _move(
        session=session, pki=pki, outbox=outbox, card=card, to=CardStatus.SUSPENDED, now=now
    )
    await _follow(session=session, pki=pki, outbox=outbox, parent=card, children=children, now=now)
    log.info("card suspended", extra={"card": card.serial, "by_holder": holder is not None})
    return card


async def resume(
    *, session: AsyncSession, pki: PkiService, outbox: StatusOutbox, serial: str, now: datetime
) -> Card:
    """Lift a suspension (after an identity check at the counter); its e-card comes back too."""
    unlocked = await repository.get(session, serial=serial)
    if unlocked is None:
        raise _unknown(serial)
    # Locks go parent first, then e-card, in every transaction: no deadlock between them.
    parent = (
        None if unlocked.parent_serial is None else await _lock(session, unlocked.parent_serial)
    )
    card = await _lock(session, serial)
    _require(
        card,
        now=now,
        transition="resume",
        allowed=(CardStatus.SUSPENDED,),
        hint="only a suspended card is resumed",
    )
    if parent is not None:
        parent_status = effective_status(parent, now=now)
        if card.held_by_parent or parent_status is not CardStatus.ACTIVE:
            raise Problem(
                409,
                f"card {card.serial} is suspended because its physical card {parent.serial} "
                f"is {parent_status}; resume that card",
                card_status=CardStatus.SUSPENDED.value,
                transition="resume",
            )
    children = await _children(session, card)
    await _move(session=session, pki=pki, outbox=outbox, card=card, to=CardStatus.ACTIVE, now=now)
    await _follow(session=session, pki=pki, outbox=outbox, parent=card, children=children, now=now)
    return card


async def cancel(
    *, session: AsyncSession, pki: PkiService, outbox: StatusOutbox, serial: str, now: datetime
) -> Card:
    """Withdraw a card for good (its e-card with it); its certificate is revoked."""
    card = await _lock(session, serial)
    _require(
        card,
        now=now,
        transition="cancel",
        allowed=LIVE,
        hint="only a live card is cancelled",
    )
    children = await _children(session, card)
    await _move(
        session=session, pki=pki, outbox=outbox, card=card, to=CardStatus.CANCELLED, now=now
    )
    await _follow(session=session, pki=pki, outbox=outbox, parent=card, children=children, now=now)
    return card


async def expire_cards(
    *, session: AsyncSession, outbox: StatusOutbox, now: datetime, limit: int = EXPIRY_BATCH
) -> list[Card]:
    """The sweep: persist ``expired`` for live cards past their notAfter, e-cards with them.

    Certificates need no change: each expires by its own notAfter, and an e-card's is never
    later than its physical card's (it is issued to expire with it).
    """
    expired: list[Card] = []
    for due in await repository.due_for_expiry(session, now=now, limit=limit):
        card = await repository.lock(session, serial=due.serial)
        if card is None or effective_status(card, now=now) is not CardStatus.EXPIRED:
            continue  # changed since it was listed
        if CardStatus(card.status) is CardStatus.EXPIRED:
            continue  # its physical card's expiry took it earlier in this sweep
        expired.extend(await _expire(session=session, outbox=outbox, card=card, now=now))
    if expired:
        log.info("cards expired", extra={"count": len(expired)})
    return expired


async def republish(*, session: AsyncSession, outbox: StatusOutbox, since: datetime) -> int:
    """Queue the status of every card the cache must know, to rebuild it (Redis holds only
    what may be rebuilt, DESIGN.md): issued and suspended cards, and any changed since
    ``since`` (a final status to set, or an active one to clear)."""
    cards = await repository.to_publish(session, changed_since=since)
    for card in cards:
        outbox.record(card)
    return len(cards)


# -- internals -------------------------------------------------------------------------------


async def _lock(session: AsyncSession, serial: str) -> Card:
    card = await repository.lock(session, serial=serial)
    if card is None:
        raise _unknown(serial)
    return card


def _unknown(serial: str) -> Problem:
    return Problem(404, f"no card {serial}")


def _check_holder(card: Card, holder: str | None) -> None:
    if holder is not None and card.citizen_pseudonym != holder:
        raise Problem(403, f"card {card.serial} is not yours: a citizen acts on their own cards")


def _conflict(card: Card, *, now: datetime, transition: str, hint: str) -> Problem:
    status = effective_status(card, now=now)
    return Problem(
        409,
        f"cannot {transition} card {card.serial}: it is {status}; {hint}",
        card_status=status.value,
        transition=transition,
    )


def _require(
    card: Card,
    *,
    now: datetime,
    transition: str,
    allowed: Sequence[CardStatus],
    hint: str,
) -> None:
    if effective_status(card, now=now) not in allowed:
        raise _conflict(card, now=now, transition=transition, hint=hint)


def _check_csr(csr_pem: str, *, citizen: str) -> str:
    """Parse the card's CSR (the PKI's checks) and see that it asks in the holder's name.

    Returns the key id of the card's key. The certificate's subject comes from our records,
    not the CSR; the CN check catches a request made for another citizen at a busy desk.
    """
    try:
        csr = load_csr(csr_pem)
    except InvalidRequest as exc:
        raise Problem(422, f"csr: {exc}") from None
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise Problem(422, "csr: the subject has no CN; the card asks in its holder's name (CN)")
    if len(names) > 1 or names[0].value != citizen:
        # Not repeated: a CN is not ours to echo (it could be anything, an ID number too).
        raise Problem(422, "csr: the subject CN is not this citizen's pseudonymous id")
    public = csr.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)  # load_csr admits EC P-256 only
    return key_id(public)


async def _new_card(
    *,
    session: AsyncSession,
    pki: PkiService,
    outbox: StatusOutbox,
    citizen: str,
    kind: CardKind,
    parent: str | None,
    status: CardStatus,
    applications: Iterable[str],
    csr_pem: str,
    card_key: str,
    not_after: datetime,
    region: str,
    now: datetime,
) -> IssuedCard:
    holder_of_key = await repository.with_key(session, key_id=card_key)
    if holder_of_key is not None:
        raise _key_in_use(holder_of_key.serial)
    serial = await _unused_serial(session, kind=kind, region=region)
    certificate = await _certify(
        session=session,
        pki=pki,
        csr_pem=csr_pem,
        citizen=citizen,
        serial=serial,
        applications=applications,
        not_after=not_after,
    )
    if status is CardStatus.ISSUED:
        # Held until the holder activates the card (see the module docstring).
        await _set_certificate(session=session, pki=pki, serial=certificate.serial, to=status)
    card = Card(
        serial=serial,
        citizen_pseudonym=citizen,
        kind=kind,
        parent_serial=parent,
        status=status,
        applications=" ".join(sorted(set(applications))),
        certificate_serial=certificate.serial,
        key_id=card_key,
        not_after=as_utc(certificate.not_after),
        created_at=now,
        activated_at=now if status is CardStatus.ACTIVE else None,
        status_changed_at=now,
    )
    try:
        await repository.add(session, card)
    except repository.DuplicateCard as exc:
        if exc.rule == "key":
            raise _key_in_use(None) from None
        raise Problem(
            409,
            f"the citizen got another live {kind} card at the same moment; "
            f"look it up (GET /identity/cards?citizen=...) and replace or cancel it",
        ) from None
    outbox.record(card)
    log.info(
        "card issued",
        extra={"card": serial, "kind": kind.value, "certificate": certificate.serial},
    )
    return IssuedCard(card=card, certificate_pem=certificate.pem)


def _key_in_use(serial: str | None) -> Problem:
    where = f"card {serial}" if serial else "another card"
    return Problem(
        409,
        f"this key pair is already certified for {where}; every card generates a key pair "
        "of its own, and a key is never certified twice",
    )


async def _unused_serial(session: AsyncSession, *, kind: CardKind, region: str) -> str:
    # 10^9 serials per region and prefix: a collision is rare, and retried; the primary key
    # has the last word.
    for _ in range(8):
        serial = new_serial(kind, region)
        if await repository.get(session, serial=serial) is None:
            return serial
    raise Problem(503, f"no free card serial found in region {region}; try again")


async def _certify(
    *,
    session: AsyncSession,
    pki: PkiService,
    csr_pem: str,
    citizen: str,
    serial: str,
    applications: Iterable[str],
    not_after: datetime,
) -> IssuedCertificate:
    try:
        return await pki.issue_card_certificate(
            csr_pem,
            session=session,
            pseudonym=citizen,
            card_serial=serial,
            applications=applications,
            not_after=not_after,
        )
    except InvalidRequest as exc:
        raise Problem(422, f"the certificate cannot be issued: {exc}") from None
    except AuthorityUnavailable as exc:
        raise Problem(503, f"the card CA is not available: {exc}") from None


async def _set_certificate(
    *, session: AsyncSession, pki: PkiService, serial: str, to: CardStatus
) -> None:
    try:
        await pki.set_status(
            session=session, serial=serial, status=_CERTIFICATE_STATUS[to], reason=_REASON.get(to)
        )
    except StatusConflict as exc:
        # The certificate was revoked behind the card's back (by the PKI directly).
        raise Problem(409, f"the card's certificate cannot follow: {exc}") from None


async def _move(
    *,
    session: AsyncSession,
    pki: PkiService,
    outbox: StatusOutbox,
    card: Card,
    to: CardStatus,
    now: datetime,
) -> None:
    """Change one card's status, its certificate's with it; Redis is queued."""
    await _set_certificate(session=session, pki=pki, serial=card.certificate_serial, to=to)
    card.status = to
    card.status_changed_at = now
    if to is CardStatus.ACTIVE and card.activated_at is None:
        card.activated_at = now
    if to is not CardStatus.SUSPENDED:
        card.held_by_parent = False
    await repository.save(session, card)
    outbox.record(card)


async def _children(session: AsyncSession, card: Card) -> Sequence[Card]:
    """The live e-cards of a physical card, locked before any certificate changes.

    Every transaction takes card locks first (parent, then e-cards) and the PKI's issuer lock
    last, so two of them can never each hold what the other waits for.
    """
    if card.kind != CardKind.PHYSICAL:
        return ()
    return await repository.live_children(session, parent_serial=card.serial)


async def _follow(
    *,
    session: AsyncSession,
    pki: PkiService,
    outbox: StatusOutbox,
    parent: Card,
    children: Sequence[Card],
    now: datetime,
) -> None:
    """Bring the live e-cards of ``parent`` (a physical card) to its new status."""
    to = CardStatus(parent.status)
    for child in children:
        current = CardStatus(child.status)
        if to is CardStatus.SUSPENDED:
            if current is CardStatus.ACTIVE:
                child.held_by_parent = True
                await _move(session=session, pki=pki, outbox=outbox, card=child, to=to, now=now)
        elif to is CardStatus.ACTIVE:
            # Only what the parent's suspension held comes back; a lost phone stays suspended.
            if current is CardStatus.SUSPENDED and child.held_by_parent:
                await _move(session=session, pki=pki, outbox=outbox, card=child, to=to, now=now)
        else:
            await _move(session=session, pki=pki, outbox=outbox, card=child, to=to, now=now)


async def _expire(
    *, session: AsyncSession, outbox: StatusOutbox, card: Card, now: datetime
) -> list[Card]:
    cards = [card]
    if card.kind == CardKind.PHYSICAL:
        cards.extend(await repository.live_children(session, parent_serial=card.serial))
    for each in cards:
        each.status = CardStatus.EXPIRED
        each.status_changed_at = now
        each.held_by_parent = False
        await repository.save(session, each)
        outbox.record(each)
    return cards


async def _expire_due(
    *, session: AsyncSession, outbox: StatusOutbox, citizen: str, now: datetime
) -> None:
    for kind in CardKind:
        card = await repository.live_card(session, citizen=citizen, kind=kind)
        if card is not None and effective_status(card, now=now) is CardStatus.EXPIRED:
            locked = await _lock(session, card.serial)
            await _expire(session=session, outbox=outbox, card=locked, now=now)
