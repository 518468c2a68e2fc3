"""The ledger entries of the insurance routes: every settlement attempt, read and reversal is
level-3 data about the card holder, written ahead of the answer (DESIGN.md "Audit and graded
protection"), refusals with their reason code included."""

from __future__ import annotations

from fastapi import Request

from services.kit.audit import audit_access

# HL7 v3 PurposeOfUse: healthcare payment (the counter), patient requested (the citizen's own).
PAYMENT = "HPAYMT"
OWN_REQUEST = "PATRQT"


async def audit_claim(
    request: Request,
    citizen: str,
    *,
    action: str,
    entity_id: str | None,
    entity_type: str = "Claim",
    outcome: str = "success",
    detail: str | None = None,
    purpose: str = PAYMENT,
) -> None:
    await audit_access(
        request,
        entity_type=entity_type,
        entity_id=entity_id,
        citizen=citizen,
        level=3,
        action=action,
        purpose=purpose,
        outcome=outcome,
        detail=detail,
    )


async def audit_refused(request: Request, citizen: str, *, action: str, why: str) -> None:
    """A bill refused before anything was booked: who tried, and the reason code."""
    await audit_claim(
        request, citizen, action=action, entity_id=None, outcome="refused", detail=why
    )
