"""A citizen's Consent: which other hospitals may read their records (FHIR R4 consent.html).

The store keeps Consent resources like any other; this module reads them to answer one
question: does the patient's active privacy consent permit this hospital, now? The evaluation
follows the Consent resource's own semantics, reduced to what the platform uses:

- only ``status = active`` consents in the ``patient-privacy`` scope
  (http://terminology.hl7.org/CodeSystem/consentscope) count, and only while
  ``provision.period`` (when given) holds now;
- ``provision.type`` is ``permit`` or ``deny``; nested provisions are exceptions to their
  parent (consent.html#provision "each nested provision is an exception to its parent");
- a provision applies to a hospital when one of its ``actor.reference`` names it: by logical
  reference to the hospital's ``Organization`` or by identifier in the platform's client system
  (:data:`CLIENT_SYSTEM`, value = the hospital system's client id); a provision without actors
  applies to everyone;
- ``provision.securityLabel`` widens a permit to records carrying those labels (level 4,
  sensitive): a plain permit covers the ordinary records only.

The newest matching consent decides (by ``dateTime``, then last update); a deny always wins
over a permit of the same consent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import bindparam, false, literal
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from health.consent_index import CLIENT_SYSTEM, EVERYONE, consent_actor
from health.store.models import ResourceRow

CONSENT_SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"


@dataclass(frozen=True, slots=True)
class Permission:
    """What a patient's consents allow one hospital: nothing, ordinary records, or also the
    records carrying ``labels`` (``system|code``)."""

    allowed: bool
    labels: frozenset[str] = frozenset()
    consent_id: str | None = None

    def covers(self, record_labels: Iterable[tuple[str | None, str]], sensitive: bool) -> bool:
        """Does it cover a record with these ``meta.security`` labels (``sensitive``: level 4)?"""
        if not self.allowed:
            return False
        if not sensitive:
            return True
        return any(f"{system}|{code}" in self.labels for system, code in record_labels)


NOTHING = Permission(False)


async def permission(
    session: AsyncSession,
    *,
    patient_key: str,
    client_id: str,
    organizations: Iterable[str] = (),
    now: datetime | None = None,
) -> Permission:
    """What the consents of Patient ``patient_key`` allow the hospital ``client_id`` (whose
    Organization resources, if the store has them, have the ids ``organizations``)."""
    rows = (
        await session.exec(
            select(ResourceRow).where(
                col(ResourceRow.resource_type) == "Consent",
                col(ResourceRow.patient_key) == patient_key,
                col(ResourceRow.deleted).is_(False),
            )
        )
    ).all()
    consents = [orjson.loads(row.content) for row in rows]
    return evaluate(
        consents,
        client_id=client_id,
        organizations=frozenset(organizations),
        now=now or datetime.now(UTC),
    )


_RESOURCES = ResourceRow.__table__  # type: ignore[attr-defined]
# Built once: every search of a hospital runs it, and building it cost more CPU than running it.
# The current Consents of the patients with a Consent naming the hospital, or no one
# (health.consent_index); all of those patients' Consents, since a newer one may deny.
_CONSENTS_CONCERNING = select(_RESOURCES.c.patient_key, _RESOURCES.c.content).where(
    _RESOURCES.c.resource_type == "Consent",
    _RESOURCES.c.deleted == false(),
    _RESOURCES.c.patient_key.in_(
        select(consent_actor.c.patient_key).where(
            consent_actor.c.actor.in_([bindparam("client_id"), literal(EVERYONE)])
        )
    ),
)


# The same for one patient: a search pinned to a patient (health.search.pinning) needs only
# that patient's decision, however many patients have consented to the hospital.
_CONSENTS_OF_PATIENT_CONCERNING = _CONSENTS_CONCERNING.where(
    _RESOURCES.c.patient_key == bindparam("patient_key")
)


async def consenting_patients(
    session: AsyncSession,
    *,
    client_id: str,
    now: datetime | None = None,
    patient_key: str | None = None,
) -> set[str]:
    """The patients whose consents permit the hospital ``client_id`` now (ordinary records);
    with ``patient_key``, that patient if they do (else none)."""
    connection = await session.connection()
    if patient_key is None:
        rows = await connection.execute(_CONSENTS_CONCERNING, {"client_id": client_id})
    else:
        rows = await connection.execute(
            _CONSENTS_OF_PATIENT_CONCERNING, {"client_id": client_id, "patient_key": patient_key}
        )
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for patient, content in rows:
        by_patient.setdefault(patient, []).append(orjson.loads(content))
    moment = now or datetime.now(UTC)
    return {
        patient
        for patient, consents in by_patient.items()
        if evaluate(consents, client_id=client_id, now=moment).allowed
    }


def evaluate(
    consents: Iterable[dict[str, Any]],
    *,
    client_id: str,
    organizations: frozenset[str] = frozenset(),
    now: datetime,
) -> Permission:
    """The decision of the newest applicable active privacy consent (see the module doc)."""
    active = [c for c in consents if _is_active_privacy_consent(c, now)]
    active.sort(key=lambda c: (c.get("dateTime", ""), c.get("meta", {}).get("lastUpdated", "")))
    for consent in reversed(active):
        decision = _provision(consent.get("provision") or {}, client_id, organizations, now)
        if decision is not None:
            allowed, labels = decision
            return Permission(allowed, frozenset(labels), consent.get("id")) if allowed else NOTHING
    return NOTHING


def _is_active_privacy_consent(consent: dict[str, Any], now: datetime) -> bool:
    if consent.get("resourceType") != "Consent" or consent.get("status") != "active":
        return False
    codings = (consent.get("scope") or {}).get("coding") or []
    if not any(
        c.get("system") == CONSENT_SCOPE_SYSTEM and c.get("code") == "patient-privacy"
        for c in codings
    ):
        return False
    return _in_period((consent.get("provision") or {}).get("period"), now)


def _provision(
    provision: dict[str, Any], client_id: str, organizations: frozenset[str], now: datetime
) -> tuple[bool, list[str]] | None:
    """(permit?, labels) of the most specific provision that applies to the hospital, or None
    when none does."""
    if not _in_period(provision.get("period"), now):
        return None
    # Nested provisions are exceptions to their parent: the deepest applicable one decides.
    for nested in provision.get("provision") or []:
        decided = _provision(nested, client_id, organizations, now)
        if decided is not None:
            return decided
    actors = provision.get("actor") or []
    if actors and not any(
        _names(a.get("reference") or {}, client_id, organizations) for a in actors
    ):
        return None
    kind = provision.get("type", "deny")
    labels = [
        f"{label.get('system')}|{label.get('code')}"
        for label in provision.get("securityLabel") or []
        if label.get("code")
    ]
    return kind == "permit", labels


def _names(reference: dict[str, Any], client_id: str, organizations: frozenset[str]) -> bool:
    identifier = reference.get("identifier") or {}
    if identifier.get("system") == CLIENT_SYSTEM and identifier.get("value") == client_id:
        return True
    literal = reference.get("reference")
    return (
        isinstance(literal, str)
        and literal.startswith("Organization/")
        and (literal.removeprefix("Organization/") in organizations)
    )


def _in_period(period: dict[str, Any] | None, now: datetime) -> bool:
    """FHIR Period: ``start`` and ``end`` inclusive, either absent (datatypes.html#Period)."""
    if not period:
        return True
    start, end = _instant(period.get("start"), low=True), _instant(period.get("end"), low=False)
    return (start is None or start <= now) and (end is None or now <= end)


def _instant(value: Any, *, low: bool) -> datetime | None:
    """A FHIR dateTime (possibly only a year, or a year and month, or a date) as the first
    (``low``) or last instant it covers (datatypes.html#dateTime: precision is a range)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) in (4, 7, 10):
            year = int(value[:4])
            month = int(value[5:7]) if len(value) >= 7 else 1
            day = int(value[8:10]) if len(value) == 10 else 1
            first = datetime(year, month, day, tzinfo=UTC)
            if low:
                return first
            if len(value) == 4:
                after = first.replace(year=year + 1)
            elif len(value) == 7:
                after = first.replace(year=year + month // 12, month=month % 12 + 1)
            else:
                after = first + timedelta(days=1)
            return after - timedelta(microseconds=1)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
