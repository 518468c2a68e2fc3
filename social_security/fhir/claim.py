"""A hospital's FHIR R4 Claim (claim.html) read into the :class:`Bill` the engine adjudicates.

Two stages, two statuses (FHIR R4 http.html: 400 for content that cannot be read, 422 for a
readable resource that breaks the server's business rules):

1. The resource is validated as an R4 Claim with ``fhir.resources`` (its R4B models read R4
   content; unknown elements, wrong types and missing required elements are refused) -> 400.
2. What settlement needs is checked, every problem collected and refused at once -> 422: the
   hospital's bill number, the visit type, the service date, each line's catalogue code, a
   positive whole quantity, a unit price in CNY that is a whole number of fen, ``net`` and
   ``total`` agreeing with them, and the patient being the card holder.

Every issue names its element by FHIRPath (0-based indexes: ``Claim.item[2]`` is the third
line) and carries a reason code from :class:`~social_security.fhir.outcome.Reason`. No
diagnostic repeats an identifier or amount from the request: it may hold personal data.

Money is read as :class:`~decimal.Decimal` and turned into integer fen exactly; never a float.
A caller that parses the body itself should use ``json.loads(body, parse_float=Decimal)``;
a float from plain ``json.loads`` still converts exactly for prices of up to 15 significant
digits, because fhir.resources reads it through its shortest decimal representation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.claim import Claim, ClaimItem
from fhir.resources.R4B.money import Money
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from social_security.claims.bill import Bill, BillLine, VisitType
from social_security.claims.reasons import Reason
from social_security.fhir.outcome import FhirInvalid, Issue

CATALOGUE_SYSTEM = "urn:onecard:insurance-catalogue"
CITIZEN_SYSTEM = "urn:onecard:citizen"
CLAIM_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/claim-type"
CURRENCY = "CNY"  # ISO 4217

# FHIR R4 claim-type codes: an inpatient stay is billed on an institutional claim; a clinic
# visit on a professional one, a dispensing on a pharmacy one. Oral and vision claims have no
# counterpart in China's basic medical insurance and are refused.
_VISIT_TYPES = {
    "institutional": VisitType.INPATIENT,
    "professional": VisitType.OUTPATIENT,
    "pharmacy": VisitType.OUTPATIENT,
}

# The hospital's bill number is stored in a 64-character column (ClaimRow.bill_id).
_BILL_ID_MAX = 64
# No line or bill above 10 trillion yuan: far beyond any real bill, and far below the range of
# a 64-bit column, so sums of many lines cannot overflow storage.
MAX_AMOUNT_FEN = 10**15
_MAX_QUANTITY = 10**9
# A refusal lists at most this many issues; a resource with hundreds of errors is one mistake.
_MAX_ISSUES = 20
_FEN_PER_YUAN = 100


def bill_from_claim(resource: Mapping[str, Any], *, facility: str, citizen: str) -> Bill:
    """The bill in ``resource`` (a FHIR R4 Claim as parsed JSON) for ``citizen`` (the token's
    pseudonymous card holder) at ``facility``; raises :class:`FhirInvalid` (400 or 422)."""
    claim = _validated(resource, citizen=citizen)
    issues: list[Issue] = []
    _check_status(claim, issues)
    _check_patient(claim, citizen, issues)
    bill_id = _bill_id(claim, issues)
    visit_type = _visit_type(claim, issues)
    lines = _lines(claim, issues)
    _check_total(claim, lines, issues)
    service_date = _service_date(claim, issues)
    if issues:
        raise FhirInvalid(422, issues[:_MAX_ISSUES])
    # Each is None only alongside an issue, so past this point none is.
    assert bill_id is not None
    assert visit_type is not None
    assert service_date is not None
    return Bill(
        bill_id=bill_id,
        facility=facility,
        citizen=citizen,
        visit_type=visit_type,
        service_date=service_date,
        lines=tuple(lines),
    )


def _validated(resource: Mapping[str, Any], *, citizen: str) -> Claim:
    """The resource as a validated R4 Claim, or a 400 naming each structural problem."""
    if not isinstance(resource, Mapping):
        raise FhirInvalid.one(400, "the body is not a JSON object", code="structure")
    if resource.get("resourceType") != "Claim":
        raise FhirInvalid.one(
            400,
            "the resource is not a Claim: resourceType must be 'Claim'",
            code="invalid",
            expression="resourceType",
            reason=Reason.INVALID_RESOURCE,
        )
    content = dict(resource)
    if content.get("patient") is None:
        # Claim.patient is 1..1 in R4; at the counter the patient is whoever tapped the card,
        # so a hospital system may leave it out and it is the token's citizen.
        content["patient"] = {"identifier": {"system": CITIZEN_SYSTEM, "value": citizen}}
    try:
        return Claim.model_validate(content)
    except ValidationError as error:
        issues = [_structural_issue(detail) for detail in error.errors(include_input=False)]
        raise FhirInvalid(400, issues[:_MAX_ISSUES]) from None


def _structural_issue(detail: ErrorDetails) -> Issue:
    path = _fhirpath(detail["loc"])
    kind = detail["type"]
    if kind == "extra_forbidden":
        code, message = "structure", f"unknown element {path}"
    elif kind in ("missing", "model_field_validation.missing"):
        code, message = "required", f"{path} is required"
    else:
        # pydantic's own message, first line only (some span several lines of indentation).
        first_line = " ".join(detail["msg"].split("\n")[0].split())
        code, message = "value", f"{path}: {first_line}"
    return Issue(code=code, diagnostics=message, expression=(path,), reason=Reason.INVALID_RESOURCE)


def _fhirpath(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a FHIRPath expression (``Claim.item[0].unitPrice.value``)."""
    path = "Claim"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "resource_type":
            path = "resourceType"
        elif part.isidentifier():
            path += f".{part}"
        # else: a validator's label (e.g. "function-after[...]"), not an element
    return path


def _check_status(claim: Claim, issues: list[Issue]) -> None:
    # FHIR R4 fm-status: only an active claim asks for payment; draft, cancelled and
    # entered-in-error ones are not settled.
    if claim.status != "active":
        issues.append(
            _issue(
                "only an active Claim is settled",
                "Claim.status",
                Reason.CLAIM_NOT_ACTIVE,
                code="business-rule",
            )
        )


def _check_patient(claim: Claim, citizen: str, issues: list[Issue]) -> None:
    """The patient must be the card holder: a card never settles someone else's bill."""
    identifier = claim.patient.identifier
    if identifier is None or identifier.system != CITIZEN_SYSTEM:
        issues.append(
            _issue(
                f"Claim.patient must name the card holder by an identifier in {CITIZEN_SYSTEM}",
                "Claim.patient.identifier",
                Reason.OTHER_PATIENT,
                code="business-rule",
            )
        )
    elif identifier.value != citizen:
        issues.append(
            _issue(
                "Claim.patient is not the holder of the card presented",
                "Claim.patient.identifier.value",
                Reason.OTHER_PATIENT,
                code="business-rule",
            )
        )


def _bill_id(claim: Claim, issues: list[Issue]) -> str | None:
    """Claim.identifier[0].value: the hospital's bill number, with the facility the claim's
    idempotency key."""
    identifiers = claim.identifier or []
    value = identifiers[0].value if identifiers else None
    if value is None or not value.strip():
        issues.append(
            _issue(
                "the hospital's bill number is required in Claim.identifier[0].value",
                "Claim.identifier[0].value",
                Reason.MISSING_BILL_ID,
                code="required",
            )
        )
        return None
    if len(value) > _BILL_ID_MAX:
        issues.append(
            _issue(
                f"the bill number is longer than {_BILL_ID_MAX} characters",
                "Claim.identifier[0].value",
                Reason.MISSING_BILL_ID,
            )
        )
        return None
    return value


def _visit_type(claim: Claim, issues: list[Issue]) -> VisitType | None:
    for coding in claim.type.coding or []:
        if coding.system == CLAIM_TYPE_SYSTEM and coding.code in _VISIT_TYPES:
            return _VISIT_TYPES[coding.code]
    issues.append(
        _issue(
            f"Claim.type must be institutional, professional or pharmacy in {CLAIM_TYPE_SYSTEM}",
            "Claim.type",
            Reason.UNSUPPORTED_CLAIM_TYPE,
            code="code-invalid",
        )
    )
    return None


def _service_date(claim: Claim, issues: list[Issue]) -> date | None:
    """Claim.billablePeriod.start, else the earliest item.servicedDate or servicedPeriod.start;
    a full date is needed (the rules in force and the insurance year depend on the day)."""
    if claim.billablePeriod is not None and claim.billablePeriod.start is not None:
        return _day(claim.billablePeriod.start, "Claim.billablePeriod.start", issues)
    days: list[date] = []
    for index, item in enumerate(claim.item or []):
        served = item.servicedDate
        if served is None and item.servicedPeriod is not None:
            served = item.servicedPeriod.start
        if served is not None:
            day = _day(served, f"Claim.item[{index}].serviced", issues)
            if day is not None:
                days.append(day)
    if days:
        return min(days)
    issues.append(
        _issue(
            "the date of service is required: Claim.billablePeriod.start or item.servicedDate",
            "Claim.billablePeriod.start",
            Reason.MISSING_SERVICE_DATE,
            code="required",
        )
    )
    return None


def _day(value: object, path: str, issues: list[Issue]) -> date | None:
    if isinstance(value, datetime):
        return value.date()  # the day as the hospital wrote it, in its own time zone
    if isinstance(value, date):
        return value
    issues.append(
        _issue("the date of service needs a day", path, Reason.MISSING_SERVICE_DATE, code="value")
    )
    return None


def _lines(claim: Claim, issues: list[Issue]) -> list[BillLine]:
    items = claim.item or []
    if not items:
        issues.append(
            _issue("the bill has no items", "Claim.item", Reason.EMPTY_BILL, code="required")
        )
    lines: list[BillLine] = []
    seen: set[int] = set()
    for index, item in enumerate(items):
        path = f"Claim.item[{index}]"
        if item.sequence is None:  # 1..1 in R4: fhir.resources has refused it already
            continue
        if item.sequence in seen:
            issues.append(
                _issue(
                    f"item sequence {item.sequence} is used twice",
                    f"{path}.sequence",
                    Reason.DUPLICATE_LINE,
                )
            )
        seen.add(item.sequence)
        line = _line(item, item.sequence, path, issues)
        if line is not None:
            lines.append(line)
    return lines


def _line(item: ClaimItem, sequence: int, path: str, issues: list[Issue]) -> BillLine | None:
    before = len(issues)
    code = _catalogue_code(item, path, issues)
    quantity = _quantity(item, path, issues)
    unit_price = _fen(item.unitPrice, f"{path}.unitPrice", issues)
    # Claim.item.factor scales net (claim.html: net = quantity * unitPrice * factor) and
    # item.detail breaks a line down further; a bill line here is quantity x unit price only.
    if item.factor is not None and item.factor != 1:
        issues.append(
            _issue(
                "item.factor is not supported: bill the line at its unit price",
                f"{path}.factor",
                Reason.UNSUPPORTED_ELEMENT,
                code="not-supported",
            )
        )
    if item.detail:
        issues.append(
            _issue(
                "item.detail is not supported: submit each detail as its own item",
                f"{path}.detail",
                Reason.UNSUPPORTED_ELEMENT,
                code="not-supported",
            )
        )
    if len(issues) > before or code is None or quantity is None or unit_price is None:
        return None
    amount = quantity * unit_price
    if amount > MAX_AMOUNT_FEN:
        issues.append(
            _issue("the line amount is too large", path, Reason.AMOUNT_TOO_LARGE, code="value")
        )
        return None
    if item.net is not None:
        net = _fen(item.net, f"{path}.net", issues)
        if net is not None and net != amount:
            issues.append(
                _issue(
                    "item.net is not quantity x unitPrice",
                    f"{path}.net.value",
                    Reason.AMOUNT_MISMATCH,
                )
            )
            return None
    return BillLine(sequence=sequence, code=code, quantity=quantity, unit_price_fen=unit_price)


def _catalogue_code(item: ClaimItem, path: str, issues: list[Issue]) -> str | None:
    """The first coding in the insurance catalogue (a hospital may send its own local code
    beside it: FHIR codings of one concept are translations of each other)."""
    for index, coding in enumerate(item.productOrService.coding or []):
        if coding.system == CATALOGUE_SYSTEM:
            if coding.code:
                return str(coding.code)
            issues.append(
                _issue(
                    "the catalogue coding has no code",
                    f"{path}.productOrService.coding[{index}].code",
                    Reason.UNKNOWN_CODE,
                    code="code-invalid",
                )
            )
            return None
    issues.append(
        _issue(
            f"the item has no code in the insurance catalogue ({CATALOGUE_SYSTEM})",
            f"{path}.productOrService.coding",
            Reason.UNKNOWN_CODE,
            code="code-invalid",
        )
    )
    return None


def _quantity(item: ClaimItem, path: str, issues: list[Issue]) -> int | None:
    expression = f"{path}.quantity.value"
    if item.quantity is None or item.quantity.value is None:
        _refuse("the quantity is required", expression, issues)
        return None
    value = _decimal(item.quantity.value)
    if value < 0:
        _refuse("the quantity is negative", expression, issues, Reason.NEGATIVE_AMOUNT)
        return None
    if value == 0:
        _refuse("the quantity is zero", expression, issues, Reason.ZERO_QUANTITY)
        return None
    if value > _MAX_QUANTITY:
        _refuse("the quantity is too large", expression, issues, Reason.AMOUNT_TOO_LARGE)
        return None
    if value != value.to_integral_value():
        _refuse("the quantity must be a whole number", expression, issues, Reason.NOT_INTEGER)
        return None
    return int(value)


def _fen(money: Money | None, path: str, issues: list[Issue]) -> int | None:
    """A Money in CNY as integer fen, exactly: a value with a fraction of a fen is refused,
    never rounded (the hospital's bill and the settlement must agree to the fen)."""
    expression = f"{path}.value"
    if money is None or money.value is None:
        _refuse("the amount is required", expression, issues)
        return None
    if money.currency != CURRENCY:
        issues.append(
            _issue(
                f"the amount must be in {CURRENCY}",
                f"{path}.currency",
                Reason.WRONG_CURRENCY,
                code="value",
            )
        )
        return None
    value = _decimal(money.value)
    if value < 0:
        _refuse("the amount is negative", expression, issues, Reason.NEGATIVE_AMOUNT)
        return None
    # Compared before any arithmetic (comparisons are exact): 1e999999 never becomes an int.
    if value > MAX_AMOUNT_FEN // _FEN_PER_YUAN:
        _refuse("the amount is too large", expression, issues, Reason.AMOUNT_TOO_LARGE)
        return None
    fen = _whole_fen(value)
    if fen is None:
        _refuse(
            "the amount has more than 2 decimals (not a whole number of fen)",
            expression,
            issues,
            Reason.NOT_INTEGER,
        )
        return None
    return fen


def _whole_fen(value: Decimal) -> int | None:
    """``value`` yuan as fen, or None when it has a nonzero digit below the fen.

    Read from the decimal digits, not by multiplying: Decimal arithmetic rounds to 28
    significant digits, which would let "1.000000000000000000000000000001" pass as 100 fen.
    """
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # NaN and infinities are refused by fhir.resources
    while exponent < -2 and digits and digits[-1] == 0:  # trailing zeros add no value
        digits, exponent = digits[:-1], exponent + 1
    if exponent < -2:
        return None
    # At most 13 integer digits (the bound above) and 2 decimals: exact within 28 digits.
    return int(Decimal((sign, digits, exponent)).scaleb(2))


def _decimal(value: Decimal | float | int) -> Decimal:
    """A JSON number as a Decimal; a float through its shortest representation (repr), which
    is the decimal text it was parsed from."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _check_total(claim: Claim, lines: list[BillLine], issues: list[Issue]) -> None:
    """Claim.total, when given, must be the sum of the lines (checked once every line read)."""
    if claim.total is None or len(lines) != len(claim.item or []):
        return
    total = _fen(claim.total, "Claim.total", issues)
    if total is not None and total != sum(line.amount_fen for line in lines):
        issues.append(
            _issue(
                "Claim.total is not the sum of the items",
                "Claim.total.value",
                Reason.AMOUNT_MISMATCH,
            )
        )


def _refuse(
    message: str,
    expression: str,
    issues: list[Issue],
    reason: Reason = Reason.MISSING_AMOUNT,
) -> None:
    """Record a refused amount or quantity (``None`` for the caller to return)."""
    code = "required" if reason is Reason.MISSING_AMOUNT else "value"
    issues.append(_issue(message, expression, reason, code=code))


def _issue(message: str, expression: str, reason: Reason, *, code: str = "business-rule") -> Issue:
    return Issue(code=code, diagnostics=message, expression=(expression,), reason=reason)
