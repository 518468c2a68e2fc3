"""Who may do what in the FHIR store (FHIR R4 http.html; issue 5 "Who may do what").

First the SMART App Launch v2 scope of the token for the resource type and the interaction
(scopes-and-launch-context.html: c create, r read, u update, d delete, s search); a scope in any
context (``system/``, ``user/``, ``patient/``) grants the letter. Then whose records:

- a hospital's system (an institution: its token's subject is its own client id) reads what it
  wrote; another hospital's records of a patient only with that patient's Consent
  (:mod:`health.consent`) or under break-glass (:mod:`health.breakglass`); it changes only what
  it wrote;
- a person (a card holder, at a hospital's terminal or in their own app) reads only the
  compartment of the Patient records linked to them (:mod:`health.citizens`): at a terminal
  that is the patient's presence, which lets the hospital read what other hospitals wrote;
  sensitive records (level 4, by security label) only in the citizen's own app, or with
  consent or break-glass; a person writes only their own Consent;
- records in no patient's compartment (Organization, Practitioner, Location ...) hold no
  personal data: the scope decides.

Refusals are 403 (RFC 6750 section 3.1 ``insufficient_scope`` for scopes), rendered as
OperationOutcome under /fhir.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from health import breakglass, consent
from health.citizens import patients_of
from health.store.versions import Version
from services.kit.errors import Problem
from services.kit.protection import ProtectionPolicy
from services.kit.tokens import AccessToken, scope_allows

_CONTEXTS = ("system", "user", "patient")


def may(token: AccessToken, resource_type: str, letter: str) -> bool:
    """Does a SMART v2 scope, in any context, grant ``letter`` (c r u d s) on the type?"""
    return any(scope_allows(token.scope, f"{c}/{resource_type}.{letter}") for c in _CONTEXTS)


def _require(token: AccessToken, resource_type: str, letter: str, what: str) -> None:
    if may(token, resource_type, letter):
        return
    needed = f"system/{resource_type}.{letter}"
    raise Problem(
        403,
        f"the token's scopes do not allow {what} of {resource_type} "
        f"(needs {needed}, or the same in a user/ or patient/ context)",
        headers={
            "WWW-Authenticate": (
                f'Bearer realm="onecard", error="insufficient_scope", scope="{needed}"'
            )
        },
    )


def check_create(token: AccessToken, resource_type: str) -> None:
    """May the token create resources of this type (``.c``)?"""
    _require(token, resource_type, "c", "create")


def check_read(token: AccessToken, resource_type: str) -> None:
    """May the token read (and vread) resources of this type (``.r``)?"""
    _require(token, resource_type, "r", "read")


def check_update(token: AccessToken, resource_type: str) -> None:
    """May the token update or patch resources of this type (``.u``)?"""
    _require(token, resource_type, "u", "update")


def check_delete(token: AccessToken, resource_type: str) -> None:
    """May the token delete resources of this type (``.d``)?"""
    _require(token, resource_type, "d", "delete")


def check_search(token: AccessToken, resource_type: str) -> None:
    """May the token search resources of this type (``.s``)? Conditional interactions search."""
    _require(token, resource_type, "s", "search")


def check_history(token: AccessToken, resource_type: str | None) -> None:
    """May the token read the history of a type, or of the system when ``resource_type`` is None.

    History reads past versions, so it needs ``r``; the whole system's history needs ``*``.
    """
    _require(token, resource_type or "*", "r", "history")


def author_of(token: AccessToken) -> str:
    """Who a write is recorded as written by: the client (the hospital's system)."""
    return token.client_id


# --- Whose records --------------------------------------------------------------------------

# HL7 v3 ActReason purposes of use written to the audit ledger (AuditEvent.purposeOfEvent).
TREATMENT = "TREAT"
PATIENT_REQUEST = "PATRQT"
BREAK_THE_GLASS = breakglass.BREAK_THE_GLASS
APP_PURPOSE = "mobile_app"


@dataclass(frozen=True, slots=True)
class Reader:
    """Who is reading, decided once per request."""

    token: AccessToken
    # A hospital's system, authenticated by its registered key.
    institution: bool
    # A person: the Patient records linked to them (empty for an institution).
    patients: frozenset[str] = frozenset()
    # The citizen's own app (not a terminal at a counter).
    own_app: bool = False


async def reader_of(session: AsyncSession, token: AccessToken) -> Reader:
    """The reader behind ``token``, looked up once per request (the session is the request's
    unit of work): a person's linked Patients cost a search."""
    key = ("health.access.reader", token.jti)
    cached: Reader | None = session.info.get(key)
    if cached is not None:
        return cached
    if token.sub == token.client_id:
        reader = Reader(token, institution=True)
    else:
        purpose = (token.act or {}).get("purpose")
        patients = frozenset(await patients_of(session, token.sub))
        reader = Reader(token, institution=False, patients=patients, own_app=purpose == APP_PURPOSE)
    session.info[key] = reader
    return reader


def record_level(policy: ProtectionPolicy, version: Version) -> int:
    """The protection level of one stored record (its type, raised by its security labels)."""
    return stored_level(policy, version.resource_type, version.content)


def stored_level(policy: ProtectionPolicy, resource_type: str, content: str | None) -> int:
    """``record_level`` of a record's stored JSON, parsed only when it carries labels: a
    search's page is mostly records without, and parsing each cost more than the rest of its
    screening."""
    if not content or '"security"' not in content:
        return policy.record_level(resource_type)
    return level_of(policy, resource_type, orjson.loads(content))


def level_of(policy: ProtectionPolicy, resource_type: str, resource: dict[str, Any]) -> int:
    return policy.record_level(resource_type, security_labels(resource))


def security_labels(resource: dict[str, Any]) -> list[tuple[str | None, str]]:
    """``meta.security`` as (system, code) pairs (FHIR R4 security-labels.html)."""
    labels = (resource.get("meta") or {}).get("security") or []
    return [(label.get("system"), label.get("code", "")) for label in labels]


async def readable_patients(
    session: AsyncSession, reader: Reader, *, only: str | None = None
) -> tuple[set[str], SelectOfScalar[str]]:
    """For a hospital's search: the patients whose records it may read because of their
    consent, and those it may read under break-glass (its own records it always reads).
    ``only``: a search that can find the records of this one patient only (pinned to it):
    only that patient's consents are read.

    The second is a query, for the search to run as a subquery of its own statements: a
    search then costs no round trip to the database for the grants."""
    client_id = reader.token.client_id
    consented = await consent.consenting_patients(session, client_id=client_id, patient_key=only)
    return consented, breakglass.granted_patients(client_id)


async def check_may_read(
    session: AsyncSession, reader: Reader, version: Version, *, level: int
) -> str:
    """The purpose of use under which ``reader`` may read ``version``; else 403."""
    if version.patient_key is None:
        return TREATMENT  # no patient's record: the scope decided
    sensitive = level >= 4
    if not reader.institution:
        if version.patient_key not in reader.patients:
            raise _refused("the record belongs to another patient than the card holder")
        if reader.own_app:
            return PATIENT_REQUEST
        if not sensitive:
            return TREATMENT  # the patient is present at the hospital's terminal
        raise _refused(
            "a sensitive record (level 4) is shown at a counter only with the citizen's "
            "consent or under break-glass; the citizen reads it in their own app"
        )
    client_id = reader.token.client_id
    if version.author == client_id:
        return TREATMENT
    permission = await consent.permission(
        session, patient_key=version.patient_key, client_id=client_id
    )
    labels = security_labels(orjson.loads(version.content)) if version.content else []
    if permission.covers(labels, sensitive):
        return TREATMENT
    if await breakglass.active_grant(session, client_id=client_id, patient_key=version.patient_key):
        return BREAK_THE_GLASS
    raise _refused(
        "another hospital wrote this record: reading it needs the patient's presence (a token "
        "from a card tap at your terminal), the patient's consent, or break-glass "
        "(POST Patient/{id}/$break-glass with a reason)"
    )


def check_may_change(reader: Reader, version: Version | None, resource_type: str) -> None:
    """Only the hospital that wrote a record changes or deletes it; a person writes only the
    Consent resources of their own compartment."""
    if reader.institution:
        if version is not None and version.author not in (None, reader.token.client_id):
            raise _refused("only the hospital that wrote a record may change or delete it")
        return
    if resource_type != "Consent":
        raise _refused("a card holder writes only their own Consent")
    if version is not None and version.patient_key not in reader.patients:
        raise _refused("the Consent belongs to another patient than the card holder")


def check_new_record(reader: Reader, resource_type: str, patient_key: str | None) -> None:
    """A person's new Consent must be about their own Patient record."""
    if reader.institution:
        return
    if resource_type != "Consent" or patient_key not in reader.patients:
        raise _refused("a card holder writes only the Consent of their own Patient record")


def _refused(why: str) -> Problem:
    return Problem(403, why)
