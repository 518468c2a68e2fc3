"""Patients are linked to citizens by ``Patient.identifier`` in the platform's citizen system:
the citizen's pseudonymous id (the token ``sub``), never the national ID number (issue 5).

A hospital posts a Patient with that identifier (it reads the pseudonym from the card-tap token
of the patient in front of it); the citizen's own app token then reaches exactly the Patient
records carrying it, and every audit entry names the citizen whose data was touched.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import bindparam, false, select
from sqlmodel.ext.asyncio.session import AsyncSession

from health.fhir.compartment import CITIZEN_SYSTEM
from health.search.query import find_ids
from health.store.models import ResourceRow

# At most this many Patient records are linked to one citizen (several hospitals' records).
MAX_PATIENTS_PER_CITIZEN = 100

_RESOURCES = ResourceRow.__table__  # type: ignore[attr-defined]
# Built once: every audited request runs it, and building it cost more CPU than running it.
_LINKED_PATIENTS = select(_RESOURCES.c.id, _RESOURCES.c.content).where(
    _RESOURCES.c.resource_type == "Patient",
    _RESOURCES.c.id.in_(bindparam("patient_keys", expanding=True)),
    _RESOURCES.c.deleted == false(),
)


def citizen_of(patient: dict[str, Any]) -> str | None:
    """The pseudonym a Patient resource carries, if any; of several (a data error), the least,
    as a search finds it in the index (health.search.query.citizen_column)."""
    pseudonyms = [
        identifier["value"]
        for identifier in patient.get("identifier") or []
        if identifier.get("system") == CITIZEN_SYSTEM and isinstance(identifier.get("value"), str)
    ]
    return min(pseudonyms) if pseudonyms else None


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
    connection = await session.connection()
    rows = await connection.execute(_LINKED_PATIENTS, {"patient_keys": sorted(patient_keys)})
    linked = {}
    for patient_id, content in rows:
        citizen = citizen_in(content)
        if citizen is not None:
            linked[patient_id] = citizen
    return linked


def citizen_in(content: str) -> str | None:
    """The pseudonym in a stored Patient's JSON, if any."""
    return citizen_of(orjson.loads(content))
