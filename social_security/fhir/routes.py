"""The FHIR face of medical insurance (FHIR R4 financial module), under ``/insurance/fhir``.

    POST /insurance/fhir/Claim/$submit              use=claim: settle; use=predetermination:
                                                    pre-settle (claim-operation-submit.html)
    GET  /insurance/fhir/ClaimResponse/{id}         a claim this counter booked
    GET  /insurance/fhir/ExplanationOfBenefit       the citizen's own, newest first
    GET  /insurance/fhir/ExplanationOfBenefit/{id}
    GET  /insurance/fhir/Coverage                   the citizen's medical coverages
    POST /insurance/fhir/CoverageEligibilityRequest the counter's eligibility check today

The counter's routes take the card holder's token from a card tap at a medical-insurance
terminal (``social_security.claims.counter``); the citizen's routes the citizen's own token
(``sub``) with a SMART ``patient/`` scope. Refusals are OperationOutcomes; every access is a
ledger entry (level 3).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.kit.auth import require_token
from services.kit.deps import SessionDep, no_store
from services.kit.protection import protection_guard
from services.kit.tokens import AccessToken
from social_security.claims import reference, settlement
from social_security.claims.auditing import OWN_REQUEST, audit_claim, audit_refused
from social_security.claims.codec import adjudication_from_json, bill_from_json
from social_security.claims.counter import CounterDep
from social_security.claims.reasons import BillRefused
from social_security.claims.reference_cache import reference_cache
from social_security.fhir import resources
from social_security.fhir.claim import bill_from_claim
from social_security.fhir.outcome import FHIR_JSON, FhirInvalid
from social_security.models import AccountRow, ClaimRow, EnrolmentRow, YearTotalRow
from social_security.schemes import MEDICAL_SCHEMES, AccountKind

FHIR_BASE = "/insurance/fhir"
MAX_BODY = 1_000_000  # a bill of 500 lines is about 150 kB


router = APIRouter(
    prefix=FHIR_BASE,
    tags=["insurance fhir"],
    dependencies=[Depends(protection_guard()), Depends(no_store)],
)


def _fhir(resource: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(resource), status_code=status, media_type=FHIR_JSON)


async def _claim_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise FhirInvalid.one(400, f"the Claim is larger than {MAX_BODY} bytes", code="too-costly")
    try:
        # Decimals, not floats: an amount is read exactly or refused (FHIR R4 datatypes.html
        # #decimal: "decimals ... SHALL NOT be converted to floating point").
        parsed = json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise FhirInvalid.one(400, "the body is not JSON", code="structure") from None
    if not isinstance(parsed, dict):
        raise FhirInvalid.one(400, "the body is not a JSON object", code="structure")
    return parsed


def _refused(exc: BillRefused) -> FhirInvalid:
    expression = f"Claim.item[{exc.line - 1}]" if exc.line is not None else None
    return FhirInvalid.one(
        422, exc.detail, code="business-rule", expression=expression, reason=exc.code.value
    )


# -- the counter -----------------------------------------------------------------------------


@router.post(
    "/Claim/$submit",
    summary="Settle (use=claim) or pre-settle (use=predetermination) a Claim with the card",
)
async def submit(request: Request, counter: CounterDep, session: SessionDep) -> Response:
    resource = await _claim_body(request)
    use = resource.get("use", "claim")
    if use not in ("claim", "predetermination"):
        raise FhirInvalid.one(
            422,
            "Claim.use must be claim (settle) or predetermination (pre-settle)",
            code="not-supported",
            expression="Claim.use",
        )
    try:
        bill = bill_from_claim(resource, facility=counter.facility, citizen=counter.citizen)
        if use == "predetermination":
            adjudication = await settlement.presettle(session, bill, reference_cache(request))
        else:
            booked = await settlement.settle(session, bill, counter, reference_cache(request))
    except (BillRefused, FhirInvalid) as exc:
        code = exc.code.value if isinstance(exc, BillRefused) else ",".join(exc.reasons)
        await audit_refused(request, counter.citizen, action="C", why=f"{code}: {exc.detail}")
        raise _refused(exc) if isinstance(exc, BillRefused) else exc from None
    if use == "predetermination":
        await audit_claim(
            request,
            counter.citizen,
            action="E",
            entity_id=bill.bill_id,
            detail="pre-settlement",
        )
        return _fhir(
            resources.claim_response(
                adjudication, claim_id="pre-" + _fhir_id(bill.bill_id), bill=bill, preauth=True
            )
        )
    claim = booked.claim
    await audit_claim(
        request,
        counter.citizen,
        action="C",
        entity_id=claim.id,
        detail="replayed" if booked.replayed else "settled",
    )
    return _fhir(_claim_response_of(claim))


@router.get("/ClaimResponse/{claim_id}", summary="A ClaimResponse this counter booked")
async def read_claim_response(
    claim_id: str, request: Request, counter: CounterDep, session: SessionDep
) -> Response:
    booked = await settlement.claims_of(session, claim_id, counter)
    await audit_claim(
        request, counter.citizen, entity_type="ClaimResponse", action="R", entity_id=claim_id
    )
    return _fhir(_claim_response_of(booked.claim))


@router.post(
    "/CoverageEligibilityRequest",
    summary="Is the card holder covered today, and what is left of this year's fund?",
)
async def eligibility(request: Request, counter: CounterDep, session: SessionDep) -> Response:
    today = datetime.now(UTC).date()
    standings = await _standings(session, counter.citizen, today)
    await audit_claim(
        request,
        counter.citizen,
        entity_type="Coverage",
        action="E",
        entity_id=None,
        detail="eligibility",
    )
    return _fhir(
        resources.coverage_eligibility_response(standings, citizen=counter.citizen, on=today)
    )


# -- the citizen -----------------------------------------------------------------------------

CoverageReader = Annotated[AccessToken, Depends(require_token("patient/Coverage.r"))]
EobReader = Annotated[AccessToken, Depends(require_token("patient/ExplanationOfBenefit.r"))]


@router.get("/Coverage", summary="My medical-insurance coverages (a searchset Bundle)")
async def my_coverage(request: Request, token: CoverageReader, session: SessionDep) -> Response:
    rows = await _medical_enrolments(session, token.sub)
    await audit_claim(
        request, token.sub, entity_type="Coverage", action="R", entity_id=None, purpose=OWN_REQUEST
    )
    return _fhir(_bundle(request, [resources.coverage(row, token.sub) for row in rows]))


@router.get("/ExplanationOfBenefit", summary="My explanations of benefit, newest first")
async def my_eobs(request: Request, token: EobReader, session: SessionDep) -> Response:
    result = await session.exec(
        select(ClaimRow)
        .where(ClaimRow.citizen == token.sub)
        .order_by(ClaimRow.settled_at.desc())  # type: ignore[attr-defined]
        .limit(100)
    )
    eobs = [_eob_of(row) for row in result]
    await audit_claim(
        request,
        token.sub,
        entity_type="ExplanationOfBenefit",
        action="R",
        entity_id=None,
        purpose=OWN_REQUEST,
    )
    return _fhir(_bundle(request, eobs))


@router.get("/ExplanationOfBenefit/{claim_id}", summary="One of my explanations of benefit")
async def my_eob(
    claim_id: str, request: Request, token: EobReader, session: SessionDep
) -> Response:
    row = await session.get(ClaimRow, claim_id)
    if row is None or row.citizen != token.sub:
        raise settlement.ClaimNotFound()
    await audit_claim(
        request,
        token.sub,
        entity_type="ExplanationOfBenefit",
        action="R",
        entity_id=claim_id,
        purpose=OWN_REQUEST,
    )
    return _fhir(_eob_of(row))


# -- rendering -------------------------------------------------------------------------------


def _claim_response_of(claim: ClaimRow) -> dict[str, Any]:
    adjudication, _ = adjudication_from_json(claim.adjudication)
    return resources.claim_response(
        adjudication,
        claim_id=claim.id,
        bill=bill_from_json(claim.bill),
        status="active" if claim.status == "settled" else "cancelled",
        preauth=False,
        created=claim.settled_at,
    )


def _eob_of(claim: ClaimRow) -> dict[str, Any]:
    adjudication, _ = adjudication_from_json(claim.adjudication)
    return resources.explanation_of_benefit(
        adjudication,
        claim_id=claim.id,
        bill=bill_from_json(claim.bill),
        status="active" if claim.status == "settled" else "cancelled",
        created=claim.settled_at,
    )


def _bundle(request: Request, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A searchset Bundle (FHIR R4 bundle.html) of ``entries``, all of them (no paging: a
    citizen's coverages are few; explanations of benefit are capped at the newest 100)."""
    base = str(request.base_url).rstrip("/") + FHIR_BASE
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(entries),
        "link": [{"relation": "self", "url": str(request.url)}],
        "entry": [
            {
                "fullUrl": f"{base}/{e['resourceType']}/{e['id']}",
                "resource": e,
                "search": {"mode": "match"},
            }
            for e in entries
        ],
    }


def _fhir_id(text: str) -> str:
    """A FHIR id (datatypes.html#id: [A-Za-z0-9-.]{1,64}) made from a bill id."""
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text)[:60]


async def _medical_enrolments(session: AsyncSession, citizen: str) -> list[EnrolmentRow]:
    result = await session.exec(
        select(EnrolmentRow)
        .where(EnrolmentRow.citizen == citizen)
        .where(EnrolmentRow.scheme.in_([s.value for s in MEDICAL_SCHEMES]))  # type: ignore[attr-defined]
        .order_by(EnrolmentRow.start_date)  # type: ignore[arg-type]
    )
    return list(result)


async def _standings(session: AsyncSession, citizen: str, today: date) -> list[resources.Standing]:
    account = await session.get(AccountRow, (citizen, AccountKind.MEDICAL.value))
    standings = []
    for row in await _medical_enrolments(session, citizen):
        totals = await session.get(YearTotalRow, (citizen, row.scheme, today.year))
        try:
            rules = (await reference.rules_for(session, row.scheme, today)).rules
        except BillRefused:
            rules = None
        standings.append(
            resources.Standing(
                enrolment=row,
                year_to_date=settlement.year_to_date(totals),
                pooled_cap_fen=rules.annual_pooled_cap_fen if rules else None,
                personal_account_fen=account.balance_fen if account else None,
            )
        )
    return standings
