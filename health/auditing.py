"""Every access to the store goes to the audit ledger (issue 4, issue 5 "Who may do what").

One entry per patient whose records a request touched (FHIR AuditEvent.entity with the patient
role): the citizen whose data it was (by pseudonym), what (type and, for one record, its id),
the purpose of use, the level. Level-3 entries are durable before the answer leaves, or the
answer is a 503 (services.kit.audit); for a write, before its transaction commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fastapi import Request
from sqlmodel.ext.asyncio.session import AsyncSession

from health.citizens import citizens_of
from services.kit.audit import audit_access


@dataclass(frozen=True, slots=True)
class Touched:
    """One record a request read or wrote."""

    resource_type: str
    resource_id: str
    patient_key: str | None
    level: int
    purpose: str | None = None


async def record_accesses(
    request: Request,
    session: AsyncSession,
    touched: Iterable[Touched],
    *,
    action: str | None = None,
    detail: str | None = None,
    citizens: Mapping[str, str] | None = None,
) -> None:
    """Audit ``touched`` (grouped by patient and purpose) before the response leaves.

    ``citizens`` maps the touched patients to their citizens when the caller read them with
    the records already (a patient it leaves out is linked to no citizen); by default they
    are looked up here."""
    groups: dict[tuple[str | None, str | None], list[Touched]] = {}
    for item in touched:
        groups.setdefault((item.patient_key, item.purpose), []).append(item)
    if not groups:
        return
    if citizens is None:
        citizens = await citizens_of(session, {key for key, _ in groups if key is not None})
    entries = []
    for (patient_key, purpose), items in groups.items():
        types = sorted({t.resource_type for t in items})
        one = items[0] if len(items) == 1 else None
        entries.append(
            audit_access(
                request,
                action=action,
                entity_type=types[0] if len(types) == 1 else "Bundle",
                entity_id=one.resource_id if one is not None else None,
                citizen=citizens.get(patient_key) if patient_key is not None else None,
                level=max(t.level for t in items),
                purpose=purpose,
                detail=detail or (None if one else f"{len(items)} records: {', '.join(types)}"),
            )
        )
    await asyncio.gather(*entries)
