"""Rules of the citizen registry: who may be registered, and what a desk may see of them."""

from __future__ import annotations

import base64
import logging
import secrets
from datetime import UTC, datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from identity.citizens import repository
from identity.citizens.models import Citizen
from identity.citizens.schemas import CitizenCreate, CitizenPublic
from identity.field_crypto import BlindIndex, FieldCipher
from identity.national_id import NationalId, NationalIdError, NationalIdMismatch, mask
from identity.national_id import parse_national_id as parse
from services.kit.errors import Problem

log = logging.getLogger(__name__)

# Names the field in key derivation, associated data and blind index: changing it orphans data.
NATIONAL_ID_PURPOSE = "citizen.national_id"
PSEUDONYM_PREFIX = "cz_"


class InvalidCitizenData(Problem):
    """422: a number, or what is stated alongside it, that the registry cannot accept."""

    def __init__(self, detail: str) -> None:
        super().__init__(422, detail)


class CitizenAlreadyRegistered(Problem):
    """409: the unique blind index already holds this number."""

    def __init__(self) -> None:
        super().__init__(409, "a citizen with this national ID number is already registered")


class CitizenNotFound(Problem):
    """404: no citizen matches; the detail never repeats what was searched for."""

    def __init__(self, detail: str) -> None:
        super().__init__(404, detail)


def new_pseudonym() -> str:
    """A random, unguessable citizen id: 128 bits as 26 lowercase base32 characters."""
    return PSEUDONYM_PREFIX + base64.b32encode(secrets.token_bytes(16)).decode()[:26].lower()


async def register(
    *, session: AsyncSession, cipher: FieldCipher, index: BlindIndex, data: CitizenCreate
) -> Citizen:
    """Register a citizen; the number is kept only sealed and as a blind index."""
    number = _parse(data.national_id)
    try:
        number.check_consistency(birth_date=data.birth_date, sex=data.sex)
    except NationalIdMismatch as exc:
        raise InvalidCitizenData(str(exc)) from None
    pseudonym = new_pseudonym()
    citizen = Citizen(
        pseudonym=pseudonym,
        name=data.name,
        national_id_ciphertext=cipher.encrypt(
            number.number, purpose=NATIONAL_ID_PURPOSE, row=pseudonym
        ),
        national_id_index=index.digest(number.number, purpose=NATIONAL_ID_PURPOSE),
        birth_date=number.birth_date,
        sex=number.sex,
        phone=data.phone,
        created_at=datetime.now(UTC),
    )
    try:
        # No look-up first: the unique blind index decides, so two racing registrations of
        # one number cannot both pass a check and both insert.
        await repository.add(session=session, citizen=citizen)
    except repository.DuplicateCitizen as exc:
        if exc.column != "national_id_index":
            raise  # a pseudonym collision (about 2^-69 at a billion citizens): a fault, not 409
        raise CitizenAlreadyRegistered() from None
    log.info("citizen registered", extra={"citizen": pseudonym})
    return citizen


async def get(*, session: AsyncSession, pseudonym: str) -> Citizen:
    """The citizen with this pseudonymous id, or 404."""
    citizen = await repository.by_pseudonym(session=session, pseudonym=pseudonym)
    if citizen is None:
        raise CitizenNotFound("no citizen has this id")
    return citizen


async def find_by_national_id(*, session: AsyncSession, index: BlindIndex, number: str) -> Citizen:
    """The citizen registered under this national ID number, found by its blind index, or 404."""
    parsed = _parse(number)
    citizen = await repository.by_national_id_index(
        session=session, index=index.digest(parsed.number, purpose=NATIONAL_ID_PURPOSE)
    )
    if citizen is None:
        raise CitizenNotFound("no citizen is registered with this national ID number")
    return citizen


def public_view(*, citizen: Citizen, cipher: FieldCipher) -> CitizenPublic:
    """What a registration desk sees of a citizen: masked number and phone."""
    number = cipher.decrypt(
        citizen.national_id_ciphertext, purpose=NATIONAL_ID_PURPOSE, row=citizen.pseudonym
    )
    return CitizenPublic(
        id=citizen.pseudonym,
        name=citizen.name,
        birth_date=citizen.birth_date,
        sex=citizen.sex,
        national_id_masked=mask(number),
        phone_masked=_mask_phone(citizen.phone),
        created_at=citizen.created_at,
    )


def _parse(number: str) -> NationalId:
    # The schemas check the number already; this keeps the service whole for other callers.
    try:
        return parse(number)
    except NationalIdError as exc:
        raise InvalidCitizenData(f"national_id: {exc}") from None


def _mask_phone(phone: str | None) -> str | None:
    # "+8613812345678" -> "138****5678": personal information shown on a screen is
    # de-identified (GB/T 35273-2020 section 7.2), the middle four digits as usual in China.
    if phone is None:
        return None
    national = phone.removeprefix("+86")
    return f"{national[:3]}****{national[-4:]}"
