"""HTTP routes of the citizen registry (``/identity/citizens``); the rules live in the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, Response

from identity.citizens import service
from identity.citizens.schemas import CitizenCreate, CitizenPublic, NationalIdLookup
from identity.field_crypto import BlindIndex, FieldCipher
from identity.settings import IdentitySettings
from services.kit.audit import audit_access
from services.kit.auth import require_token
from services.kit.deps import SessionDep, no_store
from services.kit.errors import problem_doc

# Every route here handles personal data: a registration desk's (or administrator's) token
# with scope ``citizen.manage``, checked once for the whole router.
router = APIRouter(
    prefix="/identity/citizens",
    tags=["citizens"],
    dependencies=[Depends(no_store), Depends(require_token("citizen.manage"))],
    responses={422: problem_doc("The request is not valid; the detail says what is wrong")},
)


class CitizenCrypto:
    """The registry's cipher and blind index, built once per app from its settings."""

    def __init__(self, settings: IdentitySettings) -> None:
        self.cipher = FieldCipher.from_settings(settings)
        self.index = BlindIndex.from_settings(settings)


async def load_crypto(app: FastAPI) -> None:
    """Start-up hook: build the keys now, so a bad key stops the service instead of a request."""
    settings = app.state.runtime.settings
    if not isinstance(settings, IdentitySettings):
        raise TypeError("the citizen registry runs in the identity service")
    app.state.citizen_crypto = CitizenCrypto(settings)


async def _crypto(request: Request) -> CitizenCrypto:
    # async: runs on the event loop, so two first requests cannot build the keys at once.
    crypto: CitizenCrypto | None = getattr(request.app.state, "citizen_crypto", None)
    if crypto is None:
        await load_crypto(request.app)
        crypto = request.app.state.citizen_crypto
    return crypto


CryptoDep = Annotated[CitizenCrypto, Depends(_crypto)]


@router.post(
    "",
    status_code=201,
    summary="Register a citizen",
    responses={409: problem_doc("A citizen with this national ID number is already registered")},
)
async def register_citizen(
    data: CitizenCreate,
    session: SessionDep,
    crypto: CryptoDep,
    request: Request,
    response: Response,
) -> CitizenPublic:
    citizen = await service.register(
        session=session, cipher=crypto.cipher, index=crypto.index, data=data
    )
    await _audit(request, citizen.pseudonym, "C")
    # RFC 9110 section 15.3.2: 201 names the created resource.
    response.headers["Location"] = f"{router.prefix}/{citizen.pseudonym}"
    return service.public_view(citizen=citizen, cipher=crypto.cipher)


# POST, not GET with the number in the query: URLs end up in access logs, proxies and browser
# history (RFC 9110 section 17.9).
@router.post(
    "/lookup",
    summary="Find a citizen by national ID number",
    responses={404: problem_doc("No citizen is registered with this national ID number")},
)
async def lookup_citizen(
    query: NationalIdLookup, session: SessionDep, crypto: CryptoDep, request: Request
) -> CitizenPublic:
    citizen = await service.find_by_national_id(
        session=session, index=crypto.index, number=query.national_id
    )
    await _audit(request, citizen.pseudonym, "R")
    return service.public_view(citizen=citizen, cipher=crypto.cipher)


@router.get(
    "/{pseudonym}",
    summary="A citizen by pseudonymous id",
    responses={404: problem_doc("No citizen has this id")},
)
async def read_citizen(
    pseudonym: str, session: SessionDep, crypto: CryptoDep, request: Request
) -> CitizenPublic:
    citizen = await service.get(session=session, pseudonym=pseudonym)
    await _audit(request, citizen.pseudonym, "R")
    return service.public_view(citizen=citizen, cipher=crypto.cipher)


async def _audit(request: Request, pseudonym: str, action: str) -> None:
    """The registry holds a citizen's name, phone and national ID number: every access is in
    the ledger (durable first: level 3) before the answer leaves or the registration commits,
    and the citizen sees it in their access log."""
    await audit_access(
        request,
        action=action,
        entity_type="Citizen",
        entity_id=pseudonym,
        citizen=pseudonym,
        level=3,
    )
