"""HTTP routes of the citizen's lookups (``/social-security/*``) and the catalogue lookup
(``/insurance/catalogue``), for the mobile app (issue 6 item 5); the reads live in
:mod:`social_security.benefits.queries`.

Who may see what: a citizen sees only their own data. The citizen is always the token's
``sub`` (scope ``benefits.read``), never a path or query parameter, so there is no id to change
in a URL. Every answer holding personal data is in the audit ledger before it leaves (level 3:
``audit_access`` waits for the ledger's receipt, and a 503 is answered without the data when
it does not come). The catalogue is public reference data: any valid token reads it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from services.kit.audit import audit_access
from services.kit.auth import CurrentToken, require_token
from services.kit.context import REQUEST_ID_HEADER, current_request_id
from services.kit.deps import SessionDep, no_store
from services.kit.errors import Problem, problem_doc
from services.kit.protection import protection_guard
from services.kit.sqltypes import utcnow
from services.kit.tokens import AccessToken
from social_security.benefits.pension import MONTHS_DIVISOR_BY_AGE
from social_security.benefits.queries import (
    accounts,
    catalogue,
    claims,
    common,
    contributions,
    enrolment,
    medical_year,
    pension,
    statement,
)
from social_security.benefits.schemas import (
    Cards,
    CardSummary,
    CatalogueEntry,
    CatalogueMatches,
    ClaimPage,
    ContributionPage,
    Enrolments,
    MedicalAccount,
    MedicalYear,
    PaymentPage,
    Pension,
    YearStatement,
)
from social_security.schemes import Scheme
from social_security.settings import SocialSecuritySettings

PREFIX = "/social-security"
CATALOGUE_PREFIX = "/insurance/catalogue"
SCOPE = "benefits.read"
# HL7 v3 ActReason PATRQT ("patient requested"): the data subject reading their own data
# (AuditEvent.purposeOfEvent, as the health store records its patients' own reads).
PURPOSE_OWN_DATA = "PATRQT"
# DESIGN.md: health and social-security data are MLPS 2.0 level 3.
AUDIT_LEVEL = 3
# The card's status is the identity service's to tell: ask, briefly (the app shows the rest
# of the page without it when identity is slow).
IDENTITY_TIMEOUT = httpx.Timeout(3.0, connect=1.0)
IDENTITY_CARDS_PATH = "/identity/cards/mine"
SERIAL_TAIL = 4


Responses = dict[int | str, dict[str, Any]]
_COMMON: Responses = {
    401: problem_doc("No valid bearer token, or it was revoked (its card suspended...)"),
    403: problem_doc("The token lacks scope benefits.read, or its assurance is too low"),
    422: problem_doc("A query parameter is not valid; the detail says which"),
    503: problem_doc("The audit ledger did not confirm the access: nothing was served"),
}

citizen_router = APIRouter(
    prefix=PREFIX,
    tags=["benefits"],
    # Defence in depth: the graded-protection table the gateway enforces, again here.
    dependencies=[Depends(no_store), Depends(protection_guard())],
    responses=_COMMON,
)
catalogue_router = APIRouter(
    prefix=CATALOGUE_PREFIX,
    tags=["catalogue"],
    dependencies=[Depends(protection_guard())],
    responses={
        401: _COMMON[401],
        403: problem_doc("The token's assurance is too low for this route's protection level"),
        422: _COMMON[422],
    },
)
# The one router app.py includes.
router = APIRouter()

Citizen = Annotated[AccessToken, Depends(require_token(SCOPE))]
Limit = Annotated[int, Query(ge=1, le=200, description="Page size")]
Offset = Annotated[int, Query(ge=0, description="How many items to skip")]
Year = Annotated[int, Path(ge=1990, le=2100, examples=[2026])]
YearFilter = Annotated[int | None, Query(ge=1990, le=2100, description="Only this year")]


async def _audit(request: Request, token: AccessToken, entity_type: str, entity_id: str) -> None:
    """The citizen's own read, in the ledger before the answer leaves."""
    await audit_access(
        request,
        entity_type=entity_type,
        entity_id=entity_id,
        citizen=token.sub,
        level=AUDIT_LEVEL,
        purpose=PURPOSE_OWN_DATA,
    )


def _today() -> date:
    # Dates the citizen sees (enrolment end, rules in force) are China Standard Time dates.
    return utcnow().astimezone(common.CHINA_STANDARD_TIME).date()


# -- enrolment, contributions, statement -----------------------------------------------------


@citizen_router.get("/benefits", summary="My benefits summary: enrolment status in each scheme")
async def my_enrolments(request: Request, session: SessionDep, token: Citizen) -> Enrolments:
    answer = await enrolment.enrolments(session=session, citizen=token.sub, today=_today())
    await _audit(request, token, "Enrolment", "enrolments")
    return answer


@citizen_router.get("/contributions", summary="My contributions, newest first")
async def my_contributions(
    request: Request,
    session: SessionDep,
    token: Citizen,
    scheme: Annotated[Scheme | None, Query(description="Only this scheme")] = None,
    year: YearFilter = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ContributionPage:
    answer = await contributions.contributions(
        session=session, citizen=token.sub, scheme=scheme, year=year, limit=limit, offset=offset
    )
    await _audit(request, token, "Contribution", "contributions")
    return answer


@citizen_router.get(
    "/statement/{year}",
    summary="My yearly rights statement: contributions, account credits, benefits, claims",
)
async def my_statement(
    request: Request, session: SessionDep, token: Citizen, year: Year
) -> YearStatement:
    answer = await statement.year_statement(session=session, citizen=token.sub, year=year)
    await _audit(request, token, "RightsStatement", f"statement/{year}")
    return answer


# -- pension and payments --------------------------------------------------------------------


@citizen_router.get("/pension", summary="My pension account and an estimate of my pension")
async def my_pension(
    request: Request,
    session: SessionDep,
    token: Citizen,
    retirement_age: Annotated[
        int,
        Query(
            ge=min(MONTHS_DIVISOR_BY_AGE),
            le=max(MONTHS_DIVISOR_BY_AGE),
            description="The age to estimate for (employees: it sets the months divisor)",
        ),
    ] = 60,
) -> Pension:
    answer = await pension.pension(
        session=session, citizen=token.sub, retirement_age=retirement_age, today=_today()
    )
    await _audit(request, token, "PensionAccount", "pension")
    return answer


@citizen_router.get("/payments", summary="Benefits paid to me, newest first")
async def my_payments(
    request: Request,
    session: SessionDep,
    token: Citizen,
    year: YearFilter = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> PaymentPage:
    answer = await contributions.payments(
        session=session, citizen=token.sub, year=year, limit=limit, offset=offset
    )
    await _audit(request, token, "BenefitPayment", "payments")
    return answer


# -- medical insurance -----------------------------------------------------------------------


@citizen_router.get(
    "/medical-account", summary="My medical personal account: balance and ledger, newest first"
)
async def my_medical_account(
    request: Request, session: SessionDep, token: Citizen, limit: Limit = 50, offset: Offset = 0
) -> MedicalAccount:
    answer = await accounts.medical_account(
        session=session, citizen=token.sub, limit=limit, offset=offset
    )
    await _audit(request, token, "MedicalAccount", "medical-account")
    return answer


@citizen_router.get("/claims", summary="My settled claims and who paid what, newest first")
async def my_claims(
    request: Request,
    session: SessionDep,
    token: Citizen,
    year: YearFilter = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ClaimPage:
    answer = await claims.claims(
        session=session, citizen=token.sub, year=year, limit=limit, offset=offset
    )
    await _audit(request, token, "Claim", "claims")
    return answer


@citizen_router.get(
    "/medical-year/{year}",
    summary="My medical year: deductible used, pooled fund used, cap remaining",
)
async def my_medical_year(
    request: Request, session: SessionDep, token: Citizen, year: Year
) -> MedicalYear:
    answer = await medical_year.medical_year(
        session=session, citizen=token.sub, year=year, today=_today()
    )
    await _audit(request, token, "MedicalYear", f"medical-year/{year}")
    return answer


# -- the card (the identity service's to tell) -----------------------------------------------


class _IdentityCard(BaseModel):
    """The fields of identity's CardPublic the app is shown; the rest is dropped unread."""

    model_config = ConfigDict(extra="ignore")

    serial: str
    status: str
    applications: list[str]
    not_after: datetime


_IDENTITY_CARDS = TypeAdapter(list[_IdentityCard])


def identity_client(settings: SocialSecuritySettings) -> httpx.AsyncClient:
    """The app's one client for the identity service (made at start-up, closed at shutdown:
    a client per lookup would pay a new connection and TLS context every time)."""
    return httpx.AsyncClient(
        base_url=settings.identity_url, timeout=IDENTITY_TIMEOUT, trust_env=False
    )


def _identity(request: Request) -> httpx.AsyncClient:
    http: httpx.AsyncClient | None = getattr(request.app.state, "identity_http", None)
    if http is None:
        raise RuntimeError("social_security.app did not make the identity client")
    return http


async def _cards_from_identity(request: Request) -> list[_IdentityCard]:
    """``GET /identity/cards/mine`` with the citizen's own token (services decide on the
    user's token, never a machine token: DESIGN.md "Public entry")."""
    headers = {"Authorization": request.headers["authorization"]}
    request_id = current_request_id()
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    unreachable = Problem(
        503,
        "the identity service, which keeps card statuses, cannot be reached right now; "
        "retry shortly (your other lookups still work)",
        headers={"Retry-After": "2"},
    )
    try:
        response = await _identity(request).get(IDENTITY_CARDS_PATH, headers=headers)
    except (httpx.HTTPError, OSError):
        raise unreachable from None
    if response.status_code in (401, 403):
        # The citizen's token does not let them read their cards (e.g. no scope card.self):
        # the same refusal, said to be identity's.
        try:
            why = str(response.json().get("detail", ""))
        except ValueError:
            why = ""
        raise Problem(
            response.status_code,
            f"the identity service refused the card lookup: {why or response.reason_phrase}",
        )
    if response.status_code >= 500:
        raise unreachable
    if response.status_code != 200:
        raise Problem(502, f"the identity service answered {response.status_code}")
    try:
        return _IDENTITY_CARDS.validate_json(response.content)
    except ValidationError:
        raise Problem(502, "the identity service's answer was not a list of cards") from None


@citizen_router.get(
    "/card",
    summary="My cards' status (from the identity service)",
    responses={
        502: problem_doc("The identity service answered something unexpected"),
        503: problem_doc("The identity service (or the audit ledger) is unreachable"),
    },
)
async def my_card(request: Request, token: Citizen) -> Cards:
    found = await _cards_from_identity(request)
    answer = Cards(
        cards=[
            CardSummary(
                serial_tail=card.serial[-SERIAL_TAIL:],
                status=card.status,
                applications=card.applications,
                valid_until=card.not_after,
            )
            for card in found
        ]
    )
    await _audit(request, token, "Card", "mine")
    return answer


# -- the catalogue (reference data: any valid token) -----------------------------------------


@catalogue_router.get("", summary="Search the catalogue by name prefix")
async def search_catalogue(
    session: SessionDep,
    _token: CurrentToken,
    q: Annotated[str, Query(min_length=1, max_length=100, description="Start of the name")],
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
) -> CatalogueMatches:
    return await catalogue.catalogue_search(session=session, prefix=q, limit=limit, today=_today())


@catalogue_router.get(
    "/{code}",
    summary="A drug, item or service: its class and price cap",
    responses={404: problem_doc("No item with this code is in the catalogue today")},
)
async def catalogue_item(
    session: SessionDep,
    _token: CurrentToken,
    code: Annotated[str, Path(min_length=1, max_length=64)],
) -> CatalogueEntry:
    entry = await catalogue.catalogue_entry(session=session, code=code, today=_today())
    if entry is None:
        raise Problem(404, f"no item with code {code!r} is in the catalogue today")
    return entry


router.include_router(citizen_router)
router.include_router(catalogue_router)
