"""The consent index by actor: which patients' Consents could concern a hospital.

A hospital's search is restricted to its own records and those of the patients whose consents
permit it (:func:`health.consent.consenting_patients`). Evaluating every current Consent of the
province for every search does not scale; this table narrows it to the patients with a Consent
whose provisions name the hospital, or name no one (FHIR R4 consent.html#provision: a provision
without actors applies to everyone). Their consents are then evaluated in full, denials and
newer consents included, so the index only ever widens what is read, never decides.

Rows are rewritten with the search index, in the writer's transaction
(:func:`health.search.index.reindex_many`): the index never disagrees with the stored Consents.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Column, Index, String, Table, delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel

# The platform's naming system for registered clients (a hospital's system): Consent actors and
# Organization identifiers name a hospital by its client id in this system.
CLIENT_SYSTEM = "urn:onecard:client"
# The actor of a provision that names no one: it applies to every hospital.
EVERYONE = "*"
# Ids per DELETE ... IN (...), as for the search index: under every driver's parameter limit.
_DELETE_CHUNK = 500

consent_actor = Table(
    "consent_actor",
    SQLModel.metadata,
    Column("actor", String(255), nullable=False, primary_key=True),
    Column("patient_key", String(64), nullable=False, primary_key=True),
    Column("consent_id", String(64), nullable=False, primary_key=True),
)
# Rewrites find a Consent's rows by its id.
Index("ix_consent_actor_consent", consent_actor.c.consent_id)


def actors_of(consent: dict[str, Any]) -> set[str]:
    """The client ids the Consent's provisions (at any depth) name, and :data:`EVERYONE` if
    one names no actor."""
    found: set[str] = set()
    for provision in _provisions(consent.get("provision")):
        actors = provision.get("actor") or []
        if not actors:
            found.add(EVERYONE)
        for actor in actors:
            identifier = (actor.get("reference") or {}).get("identifier") or {}
            value = identifier.get("value")
            if identifier.get("system") == CLIENT_SYSTEM and isinstance(value, str) and value:
                found.add(value[:255])
    return found


def _provisions(provision: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(provision, dict):
        return
    yield provision
    for nested in provision.get("provision") or []:
        yield from _provisions(nested)


async def reindex_consents(
    connection: AsyncConnection,
    consents: Iterable[tuple[str, dict[str, Any] | None, str | None]],
    *,
    fresh: bool,
) -> None:
    """Rewrite the rows of ``(consent id, content or None when deleted, patient key)``;
    ``fresh``: every Consent is new in this transaction (no old rows)."""
    items = list(consents)
    if not items:
        return
    if not fresh:
        await _delete(connection, [consent_id for consent_id, _, _ in items])
    rows = [
        {"actor": actor, "patient_key": patient_key, "consent_id": consent_id}
        for consent_id, content, patient_key in items
        if content is not None and patient_key is not None
        for actor in sorted(actors_of(content))
    ]
    if rows:
        await connection.execute(insert(consent_actor), rows)


async def _delete(connection: AsyncConnection, ids: Sequence[str]) -> None:
    column = consent_actor.c.consent_id
    for start in range(0, len(ids), _DELETE_CHUNK):
        chunk = ids[start : start + _DELETE_CHUNK]
        await connection.execute(
            delete(consent_actor).where(column.in_(chunk) if len(chunk) > 1 else column == chunk[0])
        )
