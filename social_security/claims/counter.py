"""Who is at the counter: the card holder's token from a terminal of a designated facility.

The hospital's system submits the bill with the token the identity service issued for the card
tap at its billing counter (DESIGN.md "The card and the terminal"): ``sub`` is the citizen,
``act`` the terminal and its facility, ``card`` the card serial. Only a terminal whose purpose
belongs to the medical-insurance application (identity/scopes.py ``PURPOSES``: the hospital
counter, the pharmacy) could have had the card enabled for medical insurance checked at the tap.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from services.kit.auth import require_token
from services.kit.errors import Problem
from services.kit.tokens import AccessToken
from social_security.claims.reasons import Reason
from social_security.claims.settlement import Counter

SETTLE = "insurance.settle"
MEDICAL_INSURANCE_PURPOSES = frozenset({"hospital_counter", "pharmacy"})


def counter_of(token: AccessToken) -> Counter:
    act = token.act or {}
    facility, terminal, purpose = act.get("facility"), act.get("sub"), act.get("purpose")
    if not isinstance(facility, str) or not isinstance(terminal, str) or token.card is None:
        raise Problem(
            403,
            "settlement needs the card holder's token from a card tap at a designated "
            "facility's terminal (act.facility and card)",
            code=Reason.CARD_NOT_ENABLED.value,
        )
    if purpose not in MEDICAL_INSURANCE_PURPOSES:
        raise Problem(
            403,
            f"a card tapped at a {purpose} terminal is not used for medical insurance; tap it "
            "at the billing counter or the pharmacy",
            code=Reason.CARD_NOT_ENABLED.value,
        )
    return Counter(citizen=token.sub, facility=facility, terminal=terminal, card=token.card)


async def _counter(
    token: Annotated[AccessToken, Depends(require_token(SETTLE))],
) -> Counter:
    return counter_of(token)


CounterDep = Annotated[Counter, Depends(_counter)]
