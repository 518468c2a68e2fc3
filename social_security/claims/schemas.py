"""The plain-JSON form of a bill and of its settlement (the FHIR form is Claim / ClaimResponse,
``social_security.fhir``). Amounts are integer fen; a decimal or a string is refused, not
rounded, with a reason code the counter's system can act on."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from social_security.claims.bill import Adjudication, Bill, BillLine, VisitType
from social_security.claims.reasons import BillRefused, Reason
from social_security.claims.settlement import Settlement


class BillLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sequence: StrictInt = Field(ge=1, description="The line's number on the bill")
    code: str = Field(min_length=1, max_length=64, description="Catalogue code of the item")
    quantity: StrictInt = Field(ge=1, description="Units, a whole number")
    unit_price_fen: StrictInt = Field(ge=0, description="Price of one unit, in fen")


class BillIn(BaseModel):
    """A hospital bill to settle with the card holder's token from the counter's terminal."""

    model_config = ConfigDict(extra="forbid")

    bill_id: str = Field(
        min_length=1,
        max_length=48,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="The hospital's number for this bill: the same number is settled once",
    )
    visit_type: VisitType
    service_date: date
    lines: list[BillLineIn] = Field(min_length=1, max_length=500)


def parse_bill(raw: Any, *, facility: str, citizen: str) -> Bill:
    """The bill in ``raw`` (parsed JSON), or :class:`BillRefused` naming the field and why."""
    try:
        data = BillIn.model_validate(raw)
    except ValidationError as exc:
        raise _refusal(exc) from None
    return Bill(
        bill_id=data.bill_id,
        facility=facility,
        citizen=citizen,
        visit_type=data.visit_type,
        service_date=data.service_date,
        lines=tuple(
            BillLine(
                sequence=line.sequence,
                code=line.code,
                quantity=line.quantity,
                unit_price_fen=line.unit_price_fen,
            )
            for line in data.lines
        ),
    )


def _refusal(exc: ValidationError) -> BillRefused:
    error = exc.errors(include_url=False)[0]
    loc = error.get("loc", ())
    where = ".".join(str(part) for part in loc) or "body"
    line = (
        int(loc[1]) + 1 if len(loc) >= 2 and loc[0] == "lines" and isinstance(loc[1], int) else None
    )
    kind = error.get("type", "")
    if loc and loc[-1] in {"quantity", "unit_price_fen", "sequence"}:
        if kind in {"greater_than_equal", "greater_than"}:
            code = (
                Reason.ZERO_QUANTITY
                if loc[-1] == "quantity" and error.get("input") == 0
                else Reason.NEGATIVE_AMOUNT
            )
            return BillRefused(
                code, f"{where}: must be {error['msg'].removeprefix('Input should be ')}", line
            )
        if kind.startswith("int"):
            return BillRefused(
                Reason.NOT_INTEGER, f"{where}: must be a whole number (fen, units)", line
            )
    return BillRefused(Reason.INVALID_BILL, f"{where}: {error['msg']}", line)


class LineOut(BaseModel):
    sequence: int
    code: str
    amount_fen: int
    catalogue_class: str | None
    excluded_fen: int
    over_cap_fen: int
    first_self_pay_fen: int
    in_scope_fen: int
    reasons: list[str]


class SplitOut(BaseModel):
    """Who pays what (fen): the funds, the personal account and the patient's cash."""

    total_fen: int
    pooled_fen: int = Field(description="Basic medical insurance pooled fund")
    critical_fen: int = Field(description="Critical-illness insurance")
    assistance_fen: int = Field(description="Medical assistance")
    personal_account_fen: int = Field(description="The employee's personal medical account")
    cash_fen: int = Field(description="What the patient pays at the counter")


class SettlementOut(BaseModel):
    """A (pre-)settlement: the split, each line explained, the accumulators after it."""

    claim_id: str | None = Field(description="None for a pre-settlement: nothing was booked")
    status: str = Field(description="presettled, settled or reversed")
    bill_id: str
    scheme: str
    rule_version: int
    hospital_level: int
    split: SplitOut
    excluded_fen: int
    over_cap_fen: int
    first_self_pay_fen: int
    in_scope_fen: int
    deductible_fen: int
    lines: list[LineOut]
    reasons: list[str]
    replaces: str | None = None


def settlement_out(
    adjudication: Adjudication,
    *,
    bill_id: str,
    claim_id: str | None,
    status: str,
    replaces: str | None = None,
) -> SettlementOut:
    a = adjudication
    return SettlementOut(
        claim_id=claim_id,
        status=status,
        bill_id=bill_id,
        scheme=a.scheme,
        rule_version=a.rule_version,
        hospital_level=a.hospital_level,
        split=SplitOut(
            total_fen=a.total_fen,
            pooled_fen=a.pooled_fen,
            critical_fen=a.critical_fen,
            assistance_fen=a.assistance_fen,
            personal_account_fen=a.personal_account_fen,
            cash_fen=a.cash_fen,
        ),
        excluded_fen=a.excluded_fen,
        over_cap_fen=a.over_cap_fen,
        first_self_pay_fen=a.first_self_pay_fen,
        in_scope_fen=a.in_scope_fen,
        deductible_fen=a.deductible_fen,
        lines=[
            LineOut(
                sequence=line.sequence,
                code=line.code,
                amount_fen=line.amount_fen,
                catalogue_class=line.catalogue_class,
                excluded_fen=line.excluded_fen,
                over_cap_fen=line.over_cap_fen,
                first_self_pay_fen=line.first_self_pay_fen,
                in_scope_fen=line.in_scope_fen,
                reasons=list(line.reasons),
            )
            for line in a.lines
        ],
        reasons=list(a.reasons),
        replaces=replaces,
    )


def booked_out(booked: Settlement) -> SettlementOut:
    """A booked (or reversed) claim as the counter sees it."""
    claim = booked.claim
    return settlement_out(
        booked.adjudication,
        bill_id=claim.bill_id,
        claim_id=claim.id,
        status=claim.status,
        replaces=claim.replaces,
    )


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[StrictInt] = Field(
        min_length=1, description="Sequence numbers of the lines refunded"
    )
