"""HTTP routes of the card lifecycle (``/identity/cards``); the rules live in the service.

Who may do what:

- the issuer's desk and administrators (scope ``card.manage``, router-level): issue,
  activate, resume, replace, cancel, list a citizen's cards;
- the card holder (scope ``card.self``, ``sub`` = the citizen) or an administrator: report a
  card lost (suspend), get an e-card for the phone, read one card; the holder alone: ``/mine``.

Status changes take :data:`CardWorkDep` instead of the kit's session: the same unit of work,
plus the card statuses to write to Redis *after* the commit and before the response, so that
the next request anywhere with a token naming a suspended card is refused, and the cache never
claims what the database (the truth) does not hold.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError
from redis.exceptions import RedisError
from sqlmodel.ext.asyncio.session import AsyncSession

from identity.cards import service
from identity.cards.schemas import (
    SERIAL_PATTERN,
    CardIssue,
    CardIssued,
    CardPublic,
    CardReplace,
    ElectronicCardIssue,
)
from identity.pki.routes import get_pki
from identity.pki.service import PkiService
from identity.settings import IdentitySettings
from services.kit.app import app_runtime
from services.kit.auth import REALM, CurrentToken, require_token
from services.kit.deps import SessionDep, no_store
from services.kit.errors import Problem, problem_doc
from services.kit.revocation import Revocations
from services.kit.sqltypes import utcnow
from services.kit.tokens import AccessToken

log = logging.getLogger(__name__)

MANAGE = "card.manage"
SELF = "card.self"
PREFIX = "/identity/cards"
# DESIGN.md "Assurance": two factors (card + PIN) to bind a new phone to the card.
ECARD_ACR = "2"


Responses = dict[int | str, dict[str, Any]]
_COMMON: Responses = {
    401: problem_doc("No valid bearer token, or it was revoked (its card suspended...)"),
    403: problem_doc("The token lacks the scope, or the card is not the caller's"),
    422: problem_doc("The request (or its CSR) is not valid; the detail says what is wrong"),
}
_READ: Responses = {404: problem_doc("No such card (or citizen)")}
_CHANGE: Responses = {
    **_READ,
    409: problem_doc("The card's status does not allow this; the detail names status and step"),
    503: problem_doc("Saved, but the status cache could not be updated (see the detail)"),
}

# The issuer's desk and administrators: one router-level requirement.
admin = APIRouter(
    prefix=PREFIX,
    tags=["cards"],
    dependencies=[Depends(no_store), Depends(require_token(MANAGE))],
    responses=_COMMON,
)
# The holder or an administrator, decided per route (see Actor).
holder = APIRouter(
    prefix=PREFIX, tags=["cards"], dependencies=[Depends(no_store)], responses=_COMMON
)
# The one router app.py includes.
router = APIRouter()


def _well_formed(serial: str) -> str:
    if not service.serial_is_well_formed(serial):
        # PydanticCustomError: the message as written, without a "Value error, " prefix.
        raise PydanticCustomError("card_serial", "not a card serial: its check digit is wrong")
    return serial


Serial = Annotated[
    str,
    Path(
        description="Card serial: C (physical) or E (electronic), 3-digit region, "
        "9 digits, Luhn check digit",
        pattern=SERIAL_PATTERN,
        examples=["C0001234567897"],
    ),
    AfterValidator(_well_formed),
]


# -- who is asking ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """An administrator (``holder`` None) or the citizen ``holder`` acting on their own card."""

    token: AccessToken
    holder: str | None


async def _actor(token: CurrentToken) -> Actor:
    if token.has_scope(MANAGE):
        return Actor(token=token, holder=None)
    if token.has_scope(SELF):
        return Actor(token=token, holder=token.sub)
    raise Problem(
        403,
        f"token lacks scope {MANAGE} (an administrator) or {SELF} (the card's holder)",
        headers={
            "WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope", '
            f'scope="{SELF}"'
        },
    )


ActorDep = Annotated[Actor, Depends(_actor)]
HolderToken = Annotated[AccessToken, Depends(require_token(SELF))]


# -- the unit of work of a status change -----------------------------------------------------


@dataclass
class CardWork:
    session: AsyncSession
    pki: PkiService
    outbox: service.StatusOutbox


async def _card_work(request: Request) -> AsyncIterator[CardWork]:
    runtime = app_runtime(request)
    if runtime.db is None:
        raise RuntimeError("the card lifecycle needs the identity database")
    pki, outbox = get_pki(request), service.StatusOutbox()
    # The kit's unit of work: committed when the route returns, rolled back if it raises.
    async with runtime.db.unit_of_work() as session:
        yield CardWork(session=session, pki=pki, outbox=outbox)
    # Committed: the database and the certificates are final. Now the cache every service
    # checks on every request, before the caller hears "done".
    try:
        await outbox.publish(Revocations(runtime.redis))
    except RedisError as exc:
        log.error(
            "card status saved but not published",
            extra={"cards": sorted(outbox.pending), "error": str(exc)},
        )
        raise Problem(
            503,
            "the card's new status is saved (database and certificate) but could not be "
            "published to the services' status cache; run `onecard card sweep` to publish it",
            cards=sorted(outbox.pending),
        ) from None


CardWorkDep = Annotated[CardWork, Depends(_card_work, scope="function")]


def _region(request: Request) -> str:
    # A deployment names its issuing region with ONECARD_CARD_REGION.
    settings = app_runtime(request).settings
    return (
        settings.card_region if isinstance(settings, IdentitySettings) else service.DEFAULT_REGION
    )


def _created(response: Response, issued: service.IssuedCard) -> CardIssued:
    # RFC 9110 section 15.3.2: 201 names the created resource.
    response.headers["Location"] = f"{PREFIX}/{issued.card.serial}"
    return issued.view(now=utcnow())


# -- administrators and the issuer's desk ----------------------------------------------------


@admin.post(
    "",
    status_code=201,
    summary="Issue a physical card from the CSR its chip made",
    responses={
        **_CHANGE,
        409: problem_doc("The citizen has a live physical card, or the key is in use"),
    },
)
async def issue_card(
    data: CardIssue, work: CardWorkDep, request: Request, response: Response
) -> CardIssued:
    issued = await service.issue(
        session=work.session,
        pki=work.pki,
        outbox=work.outbox,
        citizen=data.citizen,
        applications=data.applications,
        csr_pem=data.csr,
        region=_region(request),
        now=utcnow(),
    )
    return _created(response, issued)


@admin.get("", summary="Every card of a citizen, newest first", responses=_READ)
async def list_cards(
    session: SessionDep,
    citizen: Annotated[str, Query(min_length=1, max_length=64, description="Pseudonymous id")],
) -> list[CardPublic]:
    now = utcnow()
    cards = await service.of_citizen(session=session, citizen=citizen)
    return [service.public_view(card, now=now) for card in cards]


@admin.post(
    "/{serial}/activate", summary="Mark an issued card active (its PIN is set)", responses=_CHANGE
)
async def activate_card(serial: Serial, work: CardWorkDep) -> CardPublic:
    now = utcnow()
    card = await service.activate(
        session=work.session, pki=work.pki, outbox=work.outbox, serial=serial, now=now
    )
    return service.public_view(card, now=now)


@admin.post(
    "/{serial}/resume", summary="Lift a suspension (after an identity check)", responses=_CHANGE
)
async def resume_card(serial: Serial, work: CardWorkDep) -> CardPublic:
    now = utcnow()
    card = await service.resume(
        session=work.session, pki=work.pki, outbox=work.outbox, serial=serial, now=now
    )
    return service.public_view(card, now=now)


@admin.post(
    "/{serial}/replace",
    status_code=201,
    summary="Issue a new card for a lost or damaged one; the old one is revoked",
    responses=_CHANGE,
)
async def replace_card(
    serial: Serial, data: CardReplace, work: CardWorkDep, request: Request, response: Response
) -> CardIssued:
    issued = await service.replace(
        session=work.session,
        pki=work.pki,
        outbox=work.outbox,
        serial=serial,
        csr_pem=data.csr,
        applications=data.applications,
        region=_region(request),
        now=utcnow(),
    )
    return _created(response, issued)


@admin.post(
    "/{serial}/cancel", summary="Withdraw a card for good (its e-card with it)", responses=_CHANGE
)
async def cancel_card(serial: Serial, work: CardWorkDep) -> CardPublic:
    now = utcnow()
    card = await service.cancel(
        session=work.session, pki=work.pki, outbox=work.outbox, serial=serial, now=now
    )
    return service.public_view(card, now=now)


# -- the holder (or an administrator) --------------------------------------------------------


@holder.get("/mine", summary="The cards of the citizen asking (scope card.self)")
async def my_cards(session: SessionDep, token: HolderToken) -> list[CardPublic]:
    now = utcnow()
    cards = await service.mine(session=session, holder=token.sub)
    return [service.public_view(card, now=now) for card in cards]


@holder.get(
    "/{serial}",
    summary="One card and its status (the holder, or an administrator)",
    responses=_READ,
)
async def read_card(serial: Serial, session: SessionDep, actor: ActorDep) -> CardPublic:
    card = await service.get(session=session, serial=serial, holder=actor.holder)
    return service.public_view(card, now=utcnow())


@holder.post(
    "/{serial}/suspend",
    summary="Report a card lost: suspended at once, everywhere (the holder, or an admin)",
    responses=_CHANGE,
)
async def suspend_card(serial: Serial, work: CardWorkDep, actor: ActorDep) -> CardPublic:
    now = utcnow()
    card = await service.suspend(
        session=work.session,
        pki=work.pki,
        outbox=work.outbox,
        serial=serial,
        holder=actor.holder,
        now=now,
    )
    return service.public_view(card, now=now)


@holder.post(
    "/{serial}/ecard",
    status_code=201,
    summary="Issue an electronic card for the phone against an active physical card",
    responses={
        **_CHANGE,
        403: problem_doc("Not the caller's card, or the holder's token is not card + PIN"),
    },
)
async def issue_electronic_card(
    serial: Serial,
    data: ElectronicCardIssue,
    work: CardWorkDep,
    actor: ActorDep,
    request: Request,
    response: Response,
) -> CardIssued:
    if actor.holder is not None:
        _check_card_and_pin(actor.token, serial)
    issued = await service.issue_electronic(
        session=work.session,
        pki=work.pki,
        outbox=work.outbox,
        serial=serial,
        csr_pem=data.csr,
        holder=actor.holder,
        region=_region(request),
        now=utcnow(),
    )
    return _created(response, issued)


def _check_card_and_pin(token: AccessToken, serial: str) -> None:
    """A holder binds a new phone with the physical card itself and its PIN (acr=2)."""
    if token.acr != ECARD_ACR or token.card != serial:
        raise Problem(
            403,
            f"an electronic card is issued to its holder on a tap of physical card {serial} "
            f"with its PIN (a token with acr={ECARD_ACR} and card={serial})",
        )


router.include_router(admin)
router.include_router(holder)
