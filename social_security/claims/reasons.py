"""Reason codes: why a bill was split the way it was, and why a bill was refused.

Two families share one enumeration so that a caller can carry either in one field:

* explanations, attached to a :class:`~social_security.claims.bill.LineResult` or to the whole
  :class:`~social_security.claims.bill.Adjudication` (the order follows issue #6 item 3);
* refusals, raised as :class:`BillRefused` before anything is booked. They play the part of
  openIMIS's claim rejection reasons (openIMIS claim validation: an item not in the registers,
  an insuree not covered, a date outside the policy period...) and of the national medical
  insurance settlement interface's refusal of a pre-settlement.

Every code has a one-line text for a person (:attr:`Reason.text`): the counter clerk, the
citizen reading their explanation of benefit, the hospital's developer reading a refusal.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # Line explanations: what the scheme makes of one item (catalogue class and price cap).
    CLASS_A = "CLASS_A"
    CLASS_B = "CLASS_B"
    CLASS_C = "CLASS_C"
    OFF_CATALOGUE = "OFF_CATALOGUE"
    OVER_PRICE_CAP = "OVER_PRICE_CAP"
    CLASS_B_FIRST_SELF_PAY = "CLASS_B_FIRST_SELF_PAY"
    # Claim explanations: how the in-scope amount was shared out, in the order applied.
    DEDUCTIBLE = "DEDUCTIBLE"
    DEDUCTIBLE_MET = "DEDUCTIBLE_MET"
    POOLED_RATIO = "POOLED_RATIO"
    POOLED_CAP_REACHED = "POOLED_CAP_REACHED"
    OUTPATIENT_NOT_POOLED = "OUTPATIENT_NOT_POOLED"
    CRITICAL_DEDUCTIBLE = "CRITICAL_DEDUCTIBLE"
    CRITICAL_BAND = "CRITICAL_BAND"
    CRITICAL_CAP_REACHED = "CRITICAL_CAP_REACHED"
    ASSISTANCE = "ASSISTANCE"
    ASSISTANCE_CAP_REACHED = "ASSISTANCE_CAP_REACHED"
    ASSISTANCE_CATEGORY_UNKNOWN = "ASSISTANCE_CATEGORY_UNKNOWN"
    PERSONAL_ACCOUNT = "PERSONAL_ACCOUNT"
    PERSONAL_ACCOUNT_EXHAUSTED = "PERSONAL_ACCOUNT_EXHAUSTED"
    CASH = "CASH"
    # Refusals: the bill is not adjudicated and nothing is booked.
    EMPTY_BILL = "EMPTY_BILL"
    UNKNOWN_CODE = "UNKNOWN_CODE"
    NOT_INTEGER = "NOT_INTEGER"
    NEGATIVE_AMOUNT = "NEGATIVE_AMOUNT"
    ZERO_QUANTITY = "ZERO_QUANTITY"
    AMOUNT_TOO_LARGE = "AMOUNT_TOO_LARGE"
    BAD_SEQUENCE = "BAD_SEQUENCE"
    DUPLICATE_LINE = "DUPLICATE_LINE"
    INVALID_BILL = "INVALID_BILL"
    MISSING_BILL_ID = "MISSING_BILL_ID"
    MISSING_SERVICE_DATE = "MISSING_SERVICE_DATE"
    MISSING_AMOUNT = "MISSING_AMOUNT"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    WRONG_CURRENCY = "WRONG_CURRENCY"
    INVALID_RESOURCE = "INVALID_RESOURCE"
    UNSUPPORTED_ELEMENT = "UNSUPPORTED_ELEMENT"
    UNSUPPORTED_CLAIM_TYPE = "UNSUPPORTED_CLAIM_TYPE"
    CLAIM_NOT_ACTIVE = "CLAIM_NOT_ACTIVE"
    OTHER_PATIENT = "OTHER_PATIENT"
    NOT_ENROLLED = "NOT_ENROLLED"
    ENROLMENT_SUSPENDED = "ENROLMENT_SUSPENDED"
    CARD_NOT_ENABLED = "CARD_NOT_ENABLED"
    OUTSIDE_COVERAGE = "OUTSIDE_COVERAGE"
    NO_RULES = "NO_RULES"
    PROVIDER_NOT_DESIGNATED = "PROVIDER_NOT_DESIGNATED"
    VISIT_NOT_OFFERED = "VISIT_NOT_OFFERED"
    BILL_CONFLICT = "BILL_CONFLICT"
    CLAIM_NOT_FOUND = "CLAIM_NOT_FOUND"
    ALREADY_REVERSED = "ALREADY_REVERSED"

    @property
    def text(self) -> str:
        """One line for a person, in plain words."""
        return _TEXTS[self]

    @property
    def is_refusal(self) -> bool:
        """True for the codes that refuse a bill; False for those that explain a split."""
        return self in REFUSALS


REFUSALS = frozenset(
    {
        Reason.EMPTY_BILL,
        Reason.UNKNOWN_CODE,
        Reason.NOT_INTEGER,
        Reason.NEGATIVE_AMOUNT,
        Reason.ZERO_QUANTITY,
        Reason.AMOUNT_TOO_LARGE,
        Reason.BAD_SEQUENCE,
        Reason.DUPLICATE_LINE,
        Reason.INVALID_BILL,
        Reason.MISSING_BILL_ID,
        Reason.MISSING_SERVICE_DATE,
        Reason.MISSING_AMOUNT,
        Reason.AMOUNT_MISMATCH,
        Reason.WRONG_CURRENCY,
        Reason.INVALID_RESOURCE,
        Reason.UNSUPPORTED_ELEMENT,
        Reason.UNSUPPORTED_CLAIM_TYPE,
        Reason.CLAIM_NOT_ACTIVE,
        Reason.OTHER_PATIENT,
        Reason.NOT_ENROLLED,
        Reason.ENROLMENT_SUSPENDED,
        Reason.CARD_NOT_ENABLED,
        Reason.OUTSIDE_COVERAGE,
        Reason.NO_RULES,
        Reason.PROVIDER_NOT_DESIGNATED,
        Reason.VISIT_NOT_OFFERED,
        Reason.BILL_CONFLICT,
        Reason.CLAIM_NOT_FOUND,
        Reason.ALREADY_REVERSED,
    }
)

_TEXTS: dict[Reason, str] = {
    Reason.CLASS_A: "Class A item: fully within the scheme.",
    Reason.CLASS_B: "Class B item: within the scheme after a first self-pay share.",
    Reason.CLASS_C: "Class C item: not covered, the patient pays it in full.",
    Reason.OFF_CATALOGUE: "Not in the scheme's catalogue: the patient pays it in full.",
    Reason.OVER_PRICE_CAP: "Above the catalogue's price cap per unit: the patient pays the excess.",
    Reason.CLASS_B_FIRST_SELF_PAY: "Class B first self-pay: the patient pays this share first.",
    Reason.DEDUCTIBLE: "Annual deductible: the patient pays this part of the in-scope amount.",
    Reason.DEDUCTIBLE_MET: "The annual deductible was already met earlier this year.",
    Reason.POOLED_RATIO: "The pooled fund pays its ratio of what is in scope, past the deductible.",
    Reason.POOLED_CAP_REACHED: "The pooled fund's annual cap is reached: it paid what remained.",
    Reason.OUTPATIENT_NOT_POOLED: "This scheme has no outpatient pooling: the fund pays nothing.",
    Reason.CRITICAL_DEDUCTIBLE: "Part of it is below the critical-illness deductible of the year.",
    Reason.CRITICAL_BAND: "Critical-illness insurance pays its band ratios of the year's self-pay.",
    Reason.CRITICAL_CAP_REACHED: "Critical-illness insurance's annual cap is reached.",
    Reason.ASSISTANCE: "Medical assistance pays its share of the remaining in-scope self-pay.",
    Reason.ASSISTANCE_CAP_REACHED: "Medical assistance's annual cap is reached.",
    Reason.ASSISTANCE_CATEGORY_UNKNOWN: "The assistance category has no rule this year: not paid.",
    Reason.PERSONAL_ACCOUNT: "Paid from the medical personal account.",
    Reason.PERSONAL_ACCOUNT_EXHAUSTED: "The personal account's balance did not cover all it could.",
    Reason.CASH: "Paid by the patient in cash.",
    Reason.EMPTY_BILL: "The bill has no lines.",
    Reason.UNKNOWN_CODE: "The code is not in the catalogue.",
    Reason.NOT_INTEGER: "Quantities and amounts must be whole numbers (amounts in fen).",
    Reason.NEGATIVE_AMOUNT: "Quantities and amounts may not be negative.",
    Reason.ZERO_QUANTITY: "A line must have a quantity of at least 1.",
    Reason.AMOUNT_TOO_LARGE: "The amount is larger than any real bill.",
    Reason.BAD_SEQUENCE: "Line sequence numbers are positive whole numbers.",
    Reason.DUPLICATE_LINE: "Two lines have the same sequence number.",
    Reason.INVALID_BILL: "The bill is not well formed.",
    Reason.MISSING_BILL_ID: "The bill has no bill number.",
    Reason.MISSING_SERVICE_DATE: "The bill has no service date.",
    Reason.MISSING_AMOUNT: "A required amount or quantity is missing.",
    Reason.AMOUNT_MISMATCH: "A line's net amount is not quantity times unit price.",
    Reason.WRONG_CURRENCY: "Amounts must be in Chinese yuan (CNY).",
    Reason.INVALID_RESOURCE: "The FHIR resource is not a valid Claim.",
    Reason.UNSUPPORTED_ELEMENT: "The claim uses an element this service does not settle.",
    Reason.UNSUPPORTED_CLAIM_TYPE: "This type of claim is not settled at the counter.",
    Reason.CLAIM_NOT_ACTIVE: "Only an active claim is settled.",
    Reason.OTHER_PATIENT: "The claim's patient is not the card holder.",
    Reason.NOT_ENROLLED: "The citizen is not enrolled in a medical insurance scheme.",
    Reason.ENROLMENT_SUSPENDED: "The citizen's enrolment is suspended (contributions unpaid).",
    Reason.CARD_NOT_ENABLED: "The card is not enabled for medical insurance.",
    Reason.OUTSIDE_COVERAGE: "The service date is outside the coverage period.",
    Reason.NO_RULES: "No rules of the scheme are in force on the service date.",
    Reason.PROVIDER_NOT_DESIGNATED: "The facility is not a designated medical institution.",
    Reason.VISIT_NOT_OFFERED: "A pharmacy settles outpatient (dispensing) bills only.",
    Reason.BILL_CONFLICT: "This bill number was already settled with different content.",
    Reason.CLAIM_NOT_FOUND: "No such claim.",
    Reason.ALREADY_REVERSED: "The claim was already reversed.",
}


class BillRefused(Exception):
    """A bill that cannot be adjudicated, with the reason code and the line at fault (if any).

    ``detail`` is for the caller (a hospital's developer): it names the line and the value,
    never a citizen's identity.
    """

    def __init__(self, code: Reason, detail: str, line: int | None = None) -> None:
        if not code.is_refusal:
            raise ValueError(f"{code} explains a split, it does not refuse a bill")
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.line = line
