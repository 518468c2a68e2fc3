"""FHIR operations over HTTP: ``Patient/$everything`` and ``$validate`` (FHIR R4
operations.html, patient-operation-everything.html, resource-operation-validate.html).

``$everything`` obeys the same rules as a read and a search: the reader must be allowed to read
the Patient itself (health.access), the records it may not see (other hospitals' without
consent or presence, sensitive ones) are left out exactly as search leaves them out, and what
leaves is in the audit ledger first. ``$validate`` judges a resource with the rules a create or
update would apply (health.fhir.validation) and never stores anything.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

import health.fhir.paths  # noqa: F401  (registers the path convertors the routes use)
from health import access
from health.auditing import Touched, record_accesses
from health.fhir import everything
from health.fhir.compartment import PATIENT_COMPARTMENT
from health.fhir.media import (
    accepts_json,
    base_url,
    check_body_type,
    fhir_json,
    read_json,
)
from health.fhir.outcome import Issue
from health.fhir.validation import check_type, is_resource_type, validate_resource
from health.search.cursor import decode_cursor, encode_cursor
from health.search.routes import Restrict
from health.store import history, service
from health.store.versions import Version
from services.kit.auth import require_token
from services.kit.deps import ReadSessionDep, SessionDep
from services.kit.errors import Problem
from services.kit.protection import policy_of, protection_guard
from services.kit.sqltypes import utcnow
from services.kit.tokens import AccessToken

# Defence in depth: the graded-protection table the gateway enforces (issue 4), again here.
router = APIRouter(tags=["fhir"], dependencies=[Depends(accepts_json), Depends(protection_guard())])

Token = Annotated[AccessToken, Depends(require_token())]
_FHIR: dict[int | str, dict[str, Any]] = {200: {"content": {"application/fhir+json": {}}}}

# patient-operation-everything.html: the types a patient's compartment can hold.
_COMPARTMENT_TYPES = frozenset({"Patient", *PATIENT_COMPARTMENT})
_EVERYTHING_PARAMETERS = frozenset({"_since", "_type", "_count", "_cursor", "_format"})
MAX_TYPES = 50


# --- Patient/$everything ----------------------------------------------------------------


@router.get(
    "/fhir/Patient/{resource_id:fhirid}/$everything",
    summary="A patient's whole record (FHIR R4 patient-operation-everything.html)",
    response_class=Response,
    responses=_FHIR,
)
async def everything_get(
    resource_id: str, request: Request, session: ReadSessionDep, token: Token, restrict: Restrict
) -> Response:
    params = list(request.query_params.multi_items())
    return await _everything(request, session, token, restrict, resource_id, params)


@router.post(
    "/fhir/Patient/{resource_id:fhirid}/$everything",
    summary="A patient's whole record, parameters in a Parameters body (operations.html)",
    response_class=Response,
    responses=_FHIR,
)
async def everything_post(
    resource_id: str, request: Request, session: ReadSessionDep, token: Token, restrict: Restrict
) -> Response:
    params = list(request.query_params.multi_items())
    if await request.body():
        check_body_type(request)
        params += _operation_parameters(await read_json(request))
    return await _everything(request, session, token, restrict, resource_id, params)


async def _everything(
    request: Request,
    session: ReadSessionDep,
    token: AccessToken,
    restrict: Restrict,
    patient_id: str,
    params: list[tuple[str, str]],
) -> Response:
    access.check_read(token, "Patient")
    query, cursor_offset = _everything_query(patient_id, params, token)
    reader = await access.reader_of(session, token)
    policy = policy_of(request)
    # The patient first: 404 / 410 as a read says, 403 unless the reader may read them.
    patient = await service.read(session=session, resource_type="Patient", resource_id=patient_id)
    await access.check_may_read(
        session, reader, patient, level=access.record_level(policy, patient)
    )
    result = await everything.page(
        session, query, restrict=restrict, may_read=lambda t: access.may(token, t, "r")
    )
    kept: dict[str, list[everything.Record]] = {"match": [], "include": []}
    touched: list[Touched] = []
    purposes: dict[tuple[str | None, bool], str] = {}
    for mode, records in (("match", result.matches), ("include", result.referenced)):
        for record in records:
            version = record.version
            level = access.level_of(policy, version.resource_type, record.resource)
            try:
                purpose = await _purpose(session, reader, version, level, purposes)
            except Problem:
                continue  # left out, as search leaves out what the reader may not read
            kept[mode].append(record)
            touched.append(
                Touched(version.resource_type, version.id, version.patient_key, level, purpose)
            )
    await record_accesses(request, session, touched, action="R", detail="$everything")
    base = base_url(request)
    return fhir_json(_bundle(base, query, cursor_offset, result, kept))


async def _purpose(
    session: SessionDep,
    reader: access.Reader,
    version: Version,
    level: int,
    known: dict[tuple[str | None, bool], str],
) -> str:
    """access.check_may_read for one record. Below level 4 its answer depends only on the
    record's patient and whether the reader wrote it, so it is asked once for each pair; a
    sensitive record is judged on its own labels."""
    if level >= 4:
        return await access.check_may_read(session, reader, version, level=level)
    key = (version.patient_key, version.author == reader.token.client_id)
    if key not in known:
        known[key] = await access.check_may_read(session, reader, version, level=level)
    return known[key]


def _everything_query(
    patient_id: str, params: list[tuple[str, str]], token: AccessToken
) -> tuple[everything.Everything, int]:
    """The page asked for, and its offset (for the next link); 400 for bad parameters."""
    types: set[str] | None = None
    since = None
    count_text: str | None = None
    after: tuple[str, str] | None = None
    offset = 0
    for name, value in params:
        if name in ("start", "end"):
            raise Problem(
                400,
                f"$everything parameter {name!r} (dates of care) is not supported by this "
                "server; use _since to ask for what changed",
            )
        if name not in _EVERYTHING_PARAMETERS:
            raise Problem(400, f"$everything has no parameter {name[:64]!r}")
        if name == "_type":
            named = _types(value)
            types = named if types is None else types | named
        elif name == "_since":
            since = history.parse_since(value)
        elif name == "_count":
            count_text = value
        elif name == "_cursor":
            offset, key = decode_cursor(value)
            if len(key) != 2 or not all(isinstance(part, str) for part in key):
                raise Problem(400, "_cursor: not a page cursor of $everything")
            after = (key[0], key[1])
    if types is not None and len(types) > MAX_TYPES:
        raise Problem(400, f"_type names at most {MAX_TYPES} resource types")
    query = everything.Everything(
        patient_id=patient_id,
        count=history.parse_count(count_text),
        types=_readable(types, token),
        since=since,
        after=after,
    )
    return query, offset


def _types(value: str) -> set[str]:
    """The types one ``_type`` value names (comma-separated); 400 for one FHIR R4 lacks."""
    named = {t.strip() for t in value.split(",") if t.strip()}
    for resource_type in named:
        if not is_resource_type(resource_type):
            raise Problem(400, f"_type: {resource_type[:64]!r} is not a FHIR R4 resource type")
    return named


def _readable(types: set[str] | None, token: AccessToken) -> frozenset[str] | None:
    """``types`` (None: all) narrowed to what the token's SMART scopes may read: an app with
    patient/Observation.r gets the Observations, the types it may not read are not asked for
    rather than refused. None when nothing needs narrowing."""
    readable = {t for t in _COMPARTMENT_TYPES if access.may(token, t, "r")}
    if types is None:
        return None if readable == _COMPARTMENT_TYPES else frozenset(readable)
    return frozenset(t for t in types if t not in _COMPARTMENT_TYPES or t in readable)


def _operation_parameters(body: Any) -> list[tuple[str, str]]:
    """The parameters of a POSTed operation (operations.html#request: a Parameters resource),
    as (name, value) text pairs like the query string's."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise Problem(400, "the body of POST $everything must be a Parameters resource")
    pairs: list[tuple[str, str]] = []
    for index, parameter in enumerate(body.get("parameter") or []):
        name = parameter.get("name") if isinstance(parameter, dict) else None
        values = [
            v for k, v in (parameter or {}).items() if isinstance(k, str) and k.startswith("value")
        ]
        if not isinstance(name, str) or len(values) != 1:
            raise Problem(
                400,
                f"Parameters.parameter[{index}] needs a name and one value[x]",
                issues=[
                    Issue(
                        "structure",
                        "a name and exactly one value[x]",
                        (f"Parameters.parameter[{index}]",),
                    ).as_json()
                ],
            )
        value = values[0]
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise Problem(400, f"Parameters.parameter[{index}] ({name[:64]}): not a simple value")
        pairs.append((name, str(value)))
    return pairs


def _bundle(
    base: str,
    query: everything.Everything,
    offset: int,
    result: everything.Page,
    kept: dict[str, list[everything.Record]],
) -> dict[str, Any]:
    """The searchset Bundle (patient-operation-everything.html: "a bundle of type searchset");
    links start with the base URL the client used."""
    echo: list[tuple[str, str]] = []
    if query.types is not None:
        echo.append(("_type", ",".join(sorted(query.types))))
    if query.since is not None:
        echo.append(("_since", query.since.isoformat().replace("+00:00", "Z")))
    echo.append(("_count", str(query.count)))
    path = f"{base}/Patient/{query.patient_id}/$everything"
    self_params = list(echo)
    if query.after is not None:
        self_params.append(("_cursor", encode_cursor(offset, list(query.after))))
    links = [{"relation": "self", "url": f"{path}?{urlencode(self_params)}"}]
    last = result.last_key
    if result.has_next and last is not None:
        cursor = encode_cursor(offset + query.count, list(last))
        links.append(
            {"relation": "next", "url": f"{path}?{urlencode([*echo, ('_cursor', cursor)])}"}
        )
    entries = [
        {
            "fullUrl": f"{base}/{record.version.resource_type}/{record.version.id}",
            # Stored JSON spliced in as it is, not re-serialized (as health.search.bundle does).
            "resource": orjson.Fragment(record.version.content),
            "search": {"mode": mode},
        }
        for mode in ("match", "include")
        for record in kept[mode]
    ]
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "meta": {"lastUpdated": utcnow().isoformat()},
        "type": "searchset",
        "link": links,
    }
    if entries:
        bundle["entry"] = entries
    return bundle


# --- $validate --------------------------------------------------------------------------

# resource-operation-validate.html: mode is a code of valueset-resource-validation-mode.
_MODES = frozenset({"create", "update", "delete"})


@router.post(
    "/fhir/{resource_type:resourcetype}/$validate",
    summary="Check a resource without storing it (FHIR R4 resource-operation-validate.html)",
    response_class=Response,
    responses=_FHIR,
)
async def validate_type(
    resource_type: str, request: Request, session: SessionDep, token: Token
) -> Response:
    return await _validate(request, session, token, resource_type, None)


@router.post(
    "/fhir/{resource_type:resourcetype}/{resource_id:fhirid}/$validate",
    summary="Check a resource as an update or delete of this one, storing nothing",
    response_class=Response,
    responses=_FHIR,
)
async def validate_instance(
    resource_type: str, resource_id: str, request: Request, session: SessionDep, token: Token
) -> Response:
    return await _validate(request, session, token, resource_type, resource_id)


async def _validate(
    request: Request,
    session: SessionDep,
    token: AccessToken,
    resource_type: str,
    resource_id: str | None,
) -> Response:
    check_type(resource_type)
    body: Any = None
    if await request.body():
        check_body_type(request)
        body = await read_json(request)
    resource, mode, profiles = _validate_parameters(body, resource_type)
    # The scope of the interaction the mode stands for (a plain check is a would-be create).
    if mode == "update":
        access.check_update(token, resource_type)
    elif mode == "delete":
        access.check_delete(token, resource_type)
    else:
        access.check_create(token, resource_type)
    issues: list[Issue] = []
    if mode == "delete":
        issues += await _deletable(session, token, resource_type, resource_id)
    else:
        if resource is None:
            raise Problem(400, "$validate needs the resource (the body, or a 'resource' parameter)")
        issues += _judge(resource, resource_type)
        if mode == "update":
            issues += await _updatable(session, token, resource, resource_type, resource_id)
    issues += [
        Issue(
            "not-supported",
            f"profile {profile[:200]!r} was not checked: this server validates against the "
            "base FHIR R4 definitions only",
            severity="warning",
        )
        for profile in profiles
    ]
    return fhir_json(_outcome(issues))


def _validate_parameters(body: Any, resource_type: str) -> tuple[Any | None, str | None, list[str]]:
    """(resource, mode, profiles) from the body: the resource itself, or a Parameters with
    ``resource``, ``mode`` and ``profile`` (resource-operation-validate.html). A Parameters
    being validated itself comes wrapped in a Parameters, as the operation's page says."""
    wrapped = (
        isinstance(body, dict)
        and body.get("resourceType") == "Parameters"
        and any(
            isinstance(p, dict) and p.get("name") in ("resource", "mode", "profile")
            for p in body.get("parameter") or []
        )
    )
    if not wrapped:
        return body, None, []
    resource: Any = None
    mode: str | None = None
    profiles: list[str] = []
    for index, parameter in enumerate(body.get("parameter") or []):
        if not isinstance(parameter, dict):
            raise Problem(400, f"Parameters.parameter[{index}] is not an object")
        name = parameter.get("name")
        if name == "resource":
            resource = parameter.get("resource")
        elif name == "mode":
            mode = parameter.get("valueCode")
            if mode not in _MODES:
                raise Problem(
                    400,
                    f"mode {str(mode)[:32]!r} is not one of create, update, delete",
                    issues=[
                        Issue(
                            "value",
                            "mode must be create, update or delete",
                            (f"Parameters.parameter[{index}].valueCode",),
                        ).as_json()
                    ],
                )
        elif name == "profile":
            profile = parameter.get("valueUri") or parameter.get("valueCanonical")
            if isinstance(profile, str):
                profiles.append(profile)
        else:
            raise Problem(400, f"$validate has no parameter {str(name)[:64]!r}")
    return resource, mode, profiles


def _judge(resource: Any, resource_type: str) -> list[Issue]:
    """The issues health.fhir.validation finds (the same a create or update would refuse)."""
    try:
        validate_resource(resource, expected_type=resource_type)
    except Problem as problem:
        return _issues_of(problem)
    return []


async def _updatable(
    session: SessionDep,
    token: AccessToken,
    resource: Any,
    resource_type: str,
    resource_id: str | None,
) -> list[Issue]:
    """An update names its resource (http.html#update: the id in the body is the URL's) and
    only the writer of the current version may change it (health.access)."""
    own_id = resource.get("id") if isinstance(resource, dict) else None
    if resource_id is None:
        raise Problem(400, "mode update validates against a resource: POST [type]/[id]/$validate")
    if own_id != resource_id:
        return [
            Issue(
                "invalid" if own_id else "required",
                f"an update of {resource_type}/{resource_id} must carry id {resource_id!r}",
                (f"{resource_type}.id",),
            )
        ]
    return await _changeable(session, token, resource_type, resource_id)


async def _deletable(
    session: SessionDep, token: AccessToken, resource_type: str, resource_id: str | None
) -> list[Issue]:
    if resource_id is None:
        raise Problem(400, "mode delete validates a resource: POST [type]/[id]/$validate")
    current = await service.current_or_none(
        session=session, resource_type=resource_type, resource_id=resource_id
    )
    if current is None or current.deleted:
        return [Issue("not-found", f"{resource_type}/{resource_id} is not a current resource")]
    return await _changeable(session, token, resource_type, resource_id)


async def _changeable(
    session: SessionDep, token: AccessToken, resource_type: str, resource_id: str
) -> list[Issue]:
    reader = await access.reader_of(session, token)
    current = await service.current_or_none(
        session=session, resource_type=resource_type, resource_id=resource_id
    )
    try:
        access.check_may_change(reader, current, resource_type)
    except Problem as problem:
        return [Issue("forbidden", problem.detail)]
    return []


def _issues_of(problem: Problem) -> list[Issue]:
    found = problem.extensions.get("issues") or []
    issues = [
        Issue(
            str(item.get("code", "invalid")),
            str(item.get("diagnostics", problem.detail)),
            tuple(item.get("expression") or ()),
            str(item.get("severity", "error")),
        )
        for item in found
        if isinstance(item, dict)
    ]
    return issues or [Issue("invalid", problem.detail)]


def _outcome(issues: list[Issue]) -> dict[str, Any]:
    """The answer of $validate: 200 with the issues found, or one saying there are none
    (resource-operation-validate.html: "the outcome of the validation")."""
    if not any(issue.severity in ("error", "fatal") for issue in issues):
        issues = [
            Issue("informational", "no issues: the resource is valid", severity="information"),
            *issues,
        ]
    return {"resourceType": "OperationOutcome", "issue": [issue.as_json() for issue in issues]}
