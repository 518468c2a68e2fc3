"""``POST /fhir/Patient/{id}/$break-glass``: a clinician's emergency access, with a reason.

The operation takes a FHIR ``Parameters`` resource with ``reason`` (valueString, why the glass
is broken: it goes to the ledger and to the citizen) and optionally ``minutes`` (valueInteger,
at most ``break_glass_minutes``). It answers ``Parameters`` with the grant's ``expires`` and the
``notification`` sent to the citizen (a ``Communication`` in their record, read in the app).
Only a hospital's system may ask, for a patient that exists; the request itself is a level-4
ledger entry with purpose of use ``BTG``, durable before the grant is committed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

import health.fhir.paths  # noqa: F401  (registers the path convertors the route uses)
from health import access, breakglass
from health.citizens import citizens_of
from health.fhir.media import accepts_json, check_body_type, fhir_json, read_json
from health.settings import HealthSettings
from health.store import service
from services.kit.audit import audit_access
from services.kit.auth import require_token
from services.kit.deps import SessionDep
from services.kit.errors import Problem
from services.kit.protection import protection_guard
from services.kit.sqltypes import utcnow
from services.kit.tokens import AccessToken

router = APIRouter(tags=["fhir"], dependencies=[Depends(accepts_json), Depends(protection_guard())])
Token = Annotated[AccessToken, Depends(require_token())]
COMMUNICATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"


@router.post(
    "/fhir/Patient/{resource_id:fhirid}/$break-glass",
    summary="Break the glass: read this patient's records for a while, with a stated reason",
    response_class=Response,
)
async def break_glass(
    resource_id: str, request: Request, session: SessionDep, token: Token
) -> Response:
    access.check_read(token, "Patient")
    reader = await access.reader_of(session, token)
    if not reader.institution:
        raise Problem(403, "break-glass is for a hospital's system, on a clinician's request")
    settings: HealthSettings = request.app.state.runtime.settings
    check_body_type(request)
    reason, minutes = _parameters(await read_json(request), settings.break_glass_minutes)
    patient = await service.read(session=session, resource_type="Patient", resource_id=resource_id)

    grant = await breakglass.grant(
        session,
        client_id=token.client_id,
        requested_by=token.sub,
        patient_key=patient.id,
        reason=reason,
        minutes=minutes,
    )
    until = grant.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    notice = await service.create(
        session=session,
        resource_type="Communication",
        resource=_notification(patient.id, token.client_id, reason, until),
        author=token.client_id,
    )
    citizens = await citizens_of(session, {patient.id})
    # Write-ahead: in the ledger, flagged, before the grant is committed and used.
    await audit_access(
        request,
        action="E",
        entity_type="Patient",
        entity_id=patient.id,
        citizen=citizens.get(patient.id),
        level=4,
        purpose=breakglass.BREAK_THE_GLASS,
        detail=f"break-glass until {until}: {reason}",
    )
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "expires", "valueDateTime": grant.expires_at.isoformat()},
            {
                "name": "notification",
                "valueReference": {"reference": notice.version.relative_url},
            },
        ],
    }
    return fhir_json(body, status_code=200)


def _parameters(body: Any, max_minutes: int) -> tuple[str, int]:
    """(reason, minutes) from a FHIR Parameters resource (parameters.html)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise Problem(400, "$break-glass takes a Parameters resource")
    values = {p.get("name"): p for p in body.get("parameter") or [] if isinstance(p, dict)}
    reason = (values.get("reason") or {}).get("valueString")
    if not isinstance(reason, str) or not 10 <= len(reason.strip()) <= 500:
        raise Problem(422, "Parameters.reason: state why the glass is broken (10-500 characters)")
    minutes = (values.get("minutes") or {}).get("valueInteger", max_minutes)
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= max_minutes:
        raise Problem(422, f"Parameters.minutes: a whole number from 1 to {max_minutes}")
    return reason.strip(), minutes


def _notification(patient_id: str, client_id: str, reason: str, until: str) -> dict[str, Any]:
    """The citizen is told at once (FHIR R4 communication.html), in their own record."""
    return {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": COMMUNICATION_CATEGORY, "code": "notification"}]}],
        "priority": "urgent",
        "subject": {"reference": f"Patient/{patient_id}"},
        "recipient": [{"reference": f"Patient/{patient_id}"}],
        "sent": utcnow().isoformat(),
        "payload": [
            {
                "contentString": (
                    f"Emergency access to your health records by {client_id} until {until}. "
                    f"Reason given: {reason}"
                )
            }
        ],
    }
