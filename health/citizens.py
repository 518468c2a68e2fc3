"""Patients are linked to citizens by ``Patient.identifier`` in the platform's citizen system:
the citizen's pseudonymous id (the token ``sub``), never the national ID number (issue 5).

A hospital posts a Patient with that identifier (it reads the pseudonym from the card-tap token
of the patient in front of it); the citizen's own app token then reaches exactly the Patient
records carrying it, and every audit entry names the citizen whose data was touched.
"""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from health.fhir.compartment import CITIZEN_SYSTEM
from health.search.citizen_index import CITIZENS_OF
from health.search.query import find_ids

# At most this many Patient records are linked to one citizen (several hospitals' records).
MAX_PATIENTS_PER_CITIZEN = 100


async def patients_of(session: AsyncSession, citizen: str) -> list[str]:
    """The logical ids of the (current, not deleted) Patients linked to ``citizen``."""
    return await find_ids(
        session,
        "Patient",
        [("identifier", f"{CITIZEN_SYSTEM}|{citizen}")],
        limit=MAX_PATIENTS_PER_CITIZEN,
    )


async def citizens_of(session: AsyncSession, patient_keys: set[str]) -> dict[str, str]:
    """Patient id -> citizen pseudonym, for the patients that are linked to one
    (health.search.citizen_index)."""
    if not patient_keys:
        return {}
    connection = await session.connection()
    rows = await connection.execute(CITIZENS_OF, {"patient_keys": sorted(patient_keys)})
    return {str(patient_id): str(citizen) for patient_id, citizen in rows}
