"""Patients are linked to citizens by ``Patient.identifier`` in the platform's citizen system:
the citizen's pseudonymous id (the token ``sub``), never the national ID number (issue 5).

A hospital posts a Patient with that identifier (it reads the pseudonym from the card-tap token
of the patient in front of it); the citizen's own app token then reaches exactly the Patient
records carrying it, and every audit entry names the citizen whose data was touched.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from health.search.query import find_ids
from health.store.models import ResourceRow

CITIZEN_SYSTEM = "urn:onecard:citizen"
# At most this many Patient records are linked to one citizen (several hospitals' records).
MAX_PATIENTS_PER_CITIZEN = 100


def citizen_of(patient: dict[str, Any]) -> str | None:
    """The pseudonym a Patient resource carries, if any."""
    for identifier in patient.get("identifier") or []:
        if identifier.get("system") == CITIZEN_SYSTEM and isinstance(identifier.get("value"), str):
            value: str = identifier["value"]
            return value
    return None


async def patients_of(session: AsyncSession, citizen: str) -> list[str]:
    """The logical ids of the (current, not deleted) Patients linked to ``citizen``."""
    return await find_ids(
        session,
        "Patient",
        [("identifier", f"{CITIZEN_SYSTEM}|{citizen}")],
        limit=MAX_PATIENTS_PER_CITIZEN,
    )


async def citizens_of(session: AsyncSession, patient_keys: set[str]) -> dict[str, str]:
    """Patient id -> citizen pseudonym, for the patients that are linked to one."""
    if not patient_keys:
        return {}
    rows = (
        await session.exec(
            select(ResourceRow.id, ResourceRow.content).where(
                col(ResourceRow.resource_type) == "Patient",
                col(ResourceRow.id).in_(sorted(patient_keys)),
                col(ResourceRow.deleted).is_(False),
            )
        )
    ).all()
    linked = {}
    for patient_id, content in rows:
        citizen = citizen_of(orjson.loads(content))
        if citizen is not None:
            linked[patient_id] = citizen
    return linked
