"""The counter's settlement routes, plain JSON (``/insurance/settlements``); the FHIR form of the
same flow is ``Claim/$submit`` (``social_security.fhir.routes``).

    POST /insurance/settlements/preview   pre-settlement: the split now, nothing booked
    POST /insurance/settlements           settlement: booked once per (facility, bill id)
    GET  /insurance/settlements/{id}      a claim this counter booked for this card holder
    POST /insurance/settlements/{id}/reversal
    POST /insurance/settlements/{id}/refund

Every attempt is a ledger entry (level 3, written ahead): who settled whose bill where, and
the outcome, refusals with their reason code included.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response

from services.kit.deps import ReadSessionDep, SessionDep, no_store
from services.kit.errors import Problem, problem_doc
from services.kit.protection import protection_guard
from social_security.claims import settlement
from social_security.claims.auditing import audit_claim, audit_refused
from social_security.claims.counter import CounterDep
from social_security.claims.reasons import BillRefused
from social_security.claims.reference_cache import reference_cache
from social_security.claims.schemas import (
    BillIn,
    RefundIn,
    SettlementOut,
    booked_out,
    parse_bill,
    settlement_out,
)

router = APIRouter(
    prefix="/insurance/settlements",
    tags=["settlement"],
    dependencies=[Depends(protection_guard()), Depends(no_store)],
    responses={
        403: problem_doc("The token is not a card tap at a medical-insurance terminal"),
        409: problem_doc("The bill id is taken by another bill, or the claim cannot change so"),
        422: problem_doc("The bill is refused: ``code`` is the reason, nothing was booked"),
    },
)
# The bill's JSON schema in the OpenAPI document; the body is validated by ``parse_bill`` so
# that a refusal carries its reason code (a decimal amount is NOT_INTEGER, not a 422 shape).
_BILL_BODY = {
    "requestBody": {"content": {"application/json": {"schema": BillIn.model_json_schema()}}}
}
RawBody = Annotated[Any, Body()]


def refused(exc: BillRefused) -> Problem:
    extensions: dict[str, Any] = {"code": exc.code.value}
    if exc.line is not None:
        extensions["line"] = exc.line
    return Problem(422, exc.detail, title="Bill refused", **extensions)


@router.post(
    "/preview", summary="Pre-settle a bill: the split now, nothing booked", openapi_extra=_BILL_BODY
)
async def preview(
    body: RawBody, counter: CounterDep, session: ReadSessionDep, request: Request
) -> SettlementOut:
    try:
        bill = parse_bill(body, facility=counter.facility, citizen=counter.citizen)
        adjudication = await settlement.presettle(session, bill, reference_cache(request))
    except BillRefused as exc:
        await audit_refused(request, counter.citizen, action="E", why=f"{exc.code}: {exc.detail}")
        raise refused(exc) from None
    await audit_claim(
        request, counter.citizen, action="E", entity_id=bill.bill_id, detail="pre-settlement"
    )
    return settlement_out(adjudication, bill_id=bill.bill_id, claim_id=None, status="presettled")


@router.post(
    "",
    status_code=201,
    summary="Settle a bill with the card: booked once per facility and bill id",
    openapi_extra=_BILL_BODY,
)
async def settle(
    body: RawBody, counter: CounterDep, session: SessionDep, request: Request, response: Response
) -> SettlementOut:
    try:
        bill = parse_bill(body, facility=counter.facility, citizen=counter.citizen)
        booked = await settlement.settle(session, bill, counter, reference_cache(request))
    except BillRefused as exc:
        await audit_refused(request, counter.citizen, action="C", why=f"{exc.code}: {exc.detail}")
        raise refused(exc) from None
    claim = booked.claim
    detail = "replayed" if booked.replayed else "settled"
    await audit_claim(request, counter.citizen, action="C", entity_id=claim.id, detail=detail)
    if booked.replayed:
        response.status_code = 200
    response.headers["Location"] = f"{request.url.path}/{claim.id}"
    return booked_out(booked)


@router.get("/{claim_id}", summary="A claim this facility booked for the card holder")
async def read(
    claim_id: str, counter: CounterDep, session: SessionDep, request: Request
) -> SettlementOut:
    booked = await settlement.claims_of(session, claim_id, counter)
    await audit_claim(request, counter.citizen, action="R", entity_id=claim_id)
    return booked_out(booked)


@router.post("/{claim_id}/reversal", summary="Reverse a settled claim (all of it)")
async def reverse(
    claim_id: str, counter: CounterDep, session: SessionDep, request: Request
) -> SettlementOut:
    reversed_claim = await settlement.reverse(session, claim_id, counter)
    await audit_claim(request, counter.citizen, action="U", entity_id=claim_id, detail="reversed")
    return booked_out(reversed_claim)


@router.post(
    "/{claim_id}/refund", summary="Refund lines of a settled claim; the rest is settled again"
)
async def refund(
    claim_id: str, data: RefundIn, counter: CounterDep, session: SessionDep, request: Request
) -> SettlementOut:
    try:
        result = await settlement.refund(session, claim_id, frozenset(data.lines), counter)
    except BillRefused as exc:
        raise refused(exc) from None
    detail = f"refund -> {result.claim.id}"
    await audit_claim(request, counter.citizen, action="U", entity_id=claim_id, detail=detail)
    return booked_out(result)
