"""The FHIR R4 REST interactions over HTTP (http.html): HTTP only, rules in ``service``.

Every answer is ``application/fhir+json``; writes answer with ``Location``, ``ETag`` and
``Last-Modified`` and a body chosen by ``Prefer: return=minimal|representation|OperationOutcome``
(http.html#ops, RFC 7240). Search (``GET /fhir/{type}``) lives in ``health.search``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

import health.fhir.paths  # noqa: F401  (registers the path convertors the routes use)
from health import access
from health.auditing import Touched, record_accesses
from health.fhir.media import (
    JSON_PATCH,
    accepts_json,
    base_url,
    check_body_type,
    fhir_json,
    read_json,
)
from health.fhir.outcome import information
from health.fhir.validation import check_type
from health.store import batch, history, service, transaction
from health.store.entries import Context
from health.store.versions import Version, parse_if_match
from services.kit.auth import require_token
from services.kit.deps import ReadSessionDep, SessionDep
from services.kit.errors import Problem
from services.kit.protection import policy_of, protection_guard
from services.kit.tokens import AccessToken

# Defence in depth: the graded-protection table the gateway enforces (issue 4), again here.
router = APIRouter(tags=["fhir"], dependencies=[Depends(accepts_json), Depends(protection_guard())])

Token = Annotated[AccessToken, Depends(require_token())]
_FHIR: dict[int | str, dict[str, Any]] = {200: {"content": {"application/fhir+json": {}}}}
_RETURN = re.compile(r"\s*return\s*=\s*\"?([A-Za-z]+)\"?\s*")

TYPE = "{resource_type:resourcetype}"
ID = "{resource_id:fhirid}"


def _prefer_return(request: Request) -> str | None:
    """``Prefer: return=...`` (RFC 7240 section 4.2, FHIR R4 http.html#ops), if asked."""
    for part in re.split(r"[,;]", request.headers.get("prefer", "")):
        match = _RETURN.fullmatch(part)
        if match and match.group(1) in ("minimal", "representation", "OperationOutcome"):
            return match.group(1)
    return None


def _headers(version: Version, base: str, *, location: bool) -> dict[str, str]:
    headers = {"ETag": version.etag, "Last-Modified": version.last_modified}
    if location:
        headers["Location"] = f"{base}/{version.version_url}"
    return headers


def _written(request: Request, written: service.Written, base: str) -> Response:
    """The answer to a create, update or patch."""
    version = written.version
    status = 201 if written.created else 200
    headers = _headers(version, base, location=True)
    prefer = _prefer_return(request) or "representation"
    if prefer == "minimal":
        return Response(status_code=status, headers=headers)
    if prefer == "OperationOutcome":
        what = (
            "matched an existing"
            if written.matched
            else "created"
            if written.created
            else "updated"
        )
        body = information(f"{what} {version.relative_url}, version {version.version_id}")
        return fhir_json(body, status_code=status, headers=headers)
    return fhir_json(version.content.encode(), status_code=status, headers=headers)


def _deleted(request: Request, version: Version | None) -> Response:
    headers = {"ETag": version.etag} if version is not None else {}
    if _prefer_return(request) == "OperationOutcome":
        what = f"deleted {version.relative_url}" if version else "nothing to delete"
        return fhir_json(information(what), status_code=200, headers=headers)
    return Response(status_code=204, headers=headers)


def _if_match(request: Request) -> int | None:
    return parse_if_match(request.headers.get("if-match"))


async def _resource_body(request: Request) -> Any:
    check_body_type(request)
    return await read_json(request)


# --- whole system -----------------------------------------------------------------------


@router.post(
    "/fhir",
    summary="Process a transaction or batch Bundle (FHIR R4 http.html#transaction)",
    response_class=Response,
    responses=_FHIR,
)
# fhirclient (SMART on FHIR) keeps its base URL with a trailing slash and posts Bundles to
# "[base]/": served here rather than by a 307 to "[base]", which would make the client upload
# a large Bundle twice and point it at the Host the app saw, not the gateway's.
@router.post("/fhir/", include_in_schema=False, response_class=Response)
async def process_bundle(request: Request, session: SessionDep, token: Token) -> Response:
    body = await _resource_body(request)
    kind = body.get("type") if isinstance(body, dict) else None
    context = Context(
        token=token,
        base=base_url(request),
        # Transaction and batch answers carry resources only when asked (http.html#ops).
        return_representation=_prefer_return(request) == "representation",
        reader=await access.reader_of(session, token),
        policy=policy_of(request),
    )
    if kind == "transaction":
        result = await transaction.transaction(session=session, bundle=body, context=context)
    elif kind == "batch":
        result = await batch.batch(session=session, bundle=body, context=context)
    else:
        raise Problem(400, "POST /fhir takes a Bundle of type transaction or batch")
    # Written and read records, one ledger entry per patient, before the commit.
    await record_accesses(request, session, context.touched, detail=f"{kind} Bundle")
    return fhir_json(result)


@router.get(
    "/fhir/_history",
    summary="History of every resource (FHIR R4 http.html#history)",
    response_class=Response,
    responses=_FHIR,
)
async def history_system(request: Request, session: SessionDep, token: Token) -> Response:
    access.check_history(token, None)
    return await _history(request, session, token, None, None, "_history")


# --- one type ---------------------------------------------------------------------------


@router.post(
    f"/fhir/{TYPE}",
    summary="Create a resource; conditional with If-None-Exist (http.html#create)",
    response_class=Response,
    responses={201: {"content": {"application/fhir+json": {}}}},
    status_code=201,
)
async def create(
    resource_type: str, request: Request, session: SessionDep, token: Token
) -> Response:
    check_type(resource_type)
    access.check_create(token, resource_type)
    if_none_exist = _create_condition(request)
    if if_none_exist is not None:
        access.check_search(token, resource_type)
    reader = await access.reader_of(session, token)
    written = await service.create(
        session=session,
        resource_type=resource_type,
        resource=await _resource_body(request),
        author=access.author_of(token),
        if_none_exist=if_none_exist,
    )
    if written.matched:
        await _audit_read(request, session, token, written.version)
    else:
        access.check_new_record(reader, resource_type, written.version.patient_key)
        await _audit_write(request, session, token, written.version, action="C")
    return _written(request, written, base_url(request))


def _create_condition(request: Request) -> str | None:
    """The condition of a conditional create (http.html#ccreate): the ``If-None-Exist``
    header, or the search in the POST's own query string.

    The query form is what fhirpy sends (``SearchSet.get_or_create`` and
    ``Resource.create(**search)`` post to ``Patient?identifier=...``, as Aidbox reads it). A
    query has no other meaning on a create (http.html#create), and ignoring it would create
    the very duplicate the client asked to avoid, so it is read as the condition."""
    header = request.headers.get("if-none-exist")
    # _format and _pretty are about the answer (http.html#general), not the condition.
    params = [
        (k, v) for k, v in request.query_params.multi_items() if k not in ("_format", "_pretty")
    ]
    if not params:
        return header
    if header is not None and service.search_params(header) != params:
        raise Problem(400, "a create names its condition once: If-None-Exist or the URL query")
    return urlencode(params)


@router.put(
    f"/fhir/{TYPE}",
    summary="Conditional update: the one resource matching the query (http.html#cond-update)",
    response_class=Response,
    responses=_FHIR,
)
async def conditional_update(
    resource_type: str, request: Request, session: SessionDep, token: Token
) -> Response:
    check_type(resource_type)
    access.check_update(token, resource_type)
    access.check_search(token, resource_type)
    await _check_conditional_change(request, session, token, resource_type)
    written = await service.conditional_update(
        session=session,
        resource_type=resource_type,
        query=_condition(request),
        resource=await _resource_body(request),
        author=access.author_of(token),
        if_match=_if_match(request),
    )
    await _audit_written(request, session, token, written)
    return _written(request, written, base_url(request))


@router.patch(
    f"/fhir/{TYPE}",
    summary="Conditional patch: the one resource matching the query (http.html#patch)",
    response_class=Response,
    responses=_FHIR,
)
async def conditional_patch(
    resource_type: str, request: Request, session: SessionDep, token: Token
) -> Response:
    check_type(resource_type)
    access.check_update(token, resource_type)
    access.check_search(token, resource_type)
    _check_patch_type(request)
    await _check_conditional_change(request, session, token, resource_type)
    written = await service.conditional_patch(
        session=session,
        resource_type=resource_type,
        query=_condition(request),
        operations=await read_json(request),
        author=access.author_of(token),
        if_match=_if_match(request),
    )
    await _audit_written(request, session, token, written)
    return _written(request, written, base_url(request))


@router.delete(
    f"/fhir/{TYPE}",
    summary="Conditional delete: the one resource matching the query (http.html#cdelete)",
    response_class=Response,
    status_code=204,
)
async def conditional_delete(
    resource_type: str, request: Request, session: SessionDep, token: Token
) -> Response:
    check_type(resource_type)
    access.check_delete(token, resource_type)
    access.check_search(token, resource_type)
    await _check_conditional_change(request, session, token, resource_type)
    version = await service.conditional_delete(
        session=session,
        resource_type=resource_type,
        query=_condition(request),
        author=access.author_of(token),
    )
    if version is not None:
        await _audit_write(request, session, token, version, action="D")
    return _deleted(request, version)


async def _check_conditional_change(
    request: Request, session: SessionDep, token: AccessToken, resource_type: str
) -> None:
    """The author rule for the resources a conditional change would touch."""
    ids = await service.find_matches(
        session=session,
        resource_type=resource_type,
        params=service.search_params(_condition(request)),
        limit=2,
    )
    if not ids:
        reader = await access.reader_of(session, token)
        access.check_may_change(reader, None, resource_type)
    for resource_id in ids:
        await _check_change(session, token, resource_type, resource_id)


async def _audit_written(
    request: Request, session: SessionDep, token: AccessToken, written: service.Written
) -> None:
    action = "C" if written.created else "U"
    if written.created:
        reader = await access.reader_of(session, token)
        access.check_new_record(reader, written.version.resource_type, written.version.patient_key)
    await _audit_write(request, session, token, written.version, action=action)


def _condition(request: Request) -> str:
    """The search a conditional interaction is about: the URL's query without ``_format``
    (which is about the answer, not the condition)."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "_format"]
    if not params:
        raise Problem(400, "a conditional interaction needs search parameters in the URL")
    return urlencode(params)


@router.get(
    f"/fhir/{TYPE}/_history",
    summary="History of every resource of one type (http.html#history)",
    response_class=Response,
    responses=_FHIR,
)
async def history_type(
    resource_type: str, request: Request, session: SessionDep, token: Token
) -> Response:
    check_type(resource_type)
    access.check_history(token, resource_type)
    return await _history(request, session, token, resource_type, None, f"{resource_type}/_history")


# --- one resource -----------------------------------------------------------------------


@router.get(
    f"/fhir/{TYPE}/{ID}",
    summary="Read the current version (http.html#read)",
    response_class=Response,
    responses=_FHIR,
)
async def read(
    resource_type: str, resource_id: str, request: Request, session: ReadSessionDep, token: Token
) -> Response:
    check_type(resource_type)
    access.check_read(token, resource_type)
    version, citizens = await service.read_with_citizen(
        session=session, resource_type=resource_type, resource_id=resource_id
    )
    await _audit_read(request, session, token, version, citizens=citizens)
    return _read_answer(request, version)


async def _audit_read(
    request: Request,
    session: SessionDep,
    token: AccessToken,
    version: Version,
    *,
    citizens: Mapping[str, str] | None = None,
) -> None:
    """Whose record it is decides who may read it; the read is in the ledger before the
    answer leaves (``citizens``: see ``record_accesses``)."""
    reader = await access.reader_of(session, token)
    level = access.record_level(policy_of(request), version)
    purpose = await access.check_may_read(session, reader, version, level=level)
    touched = Touched(version.resource_type, version.id, version.patient_key, level, purpose)
    await record_accesses(request, session, [touched], action="R", citizens=citizens)


async def _audit_write(
    request: Request,
    session: SessionDep,
    token: AccessToken,
    version: Version,
    *,
    action: str,
) -> None:
    """A write is in the ledger before its transaction commits (write-ahead)."""
    level = access.record_level(policy_of(request), version)
    touched = Touched(version.resource_type, version.id, version.patient_key, level)
    await record_accesses(request, session, [touched], action=action)


async def _check_change(
    session: SessionDep, token: AccessToken, resource_type: str, resource_id: str
) -> access.Reader:
    """Only the author changes a record (a person: only their own Consent)."""
    reader = await access.reader_of(session, token)
    current = await service.current_or_none(
        session=session, resource_type=resource_type, resource_id=resource_id
    )
    access.check_may_change(reader, current, resource_type)
    return reader


def _read_answer(request: Request, version: Version) -> Response:
    headers = {"ETag": version.etag, "Last-Modified": version.last_modified}
    # RFC 9110 section 13.1.2: a cached copy that is still current costs no body.
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and version.etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    return fhir_json(version.content.encode(), headers=headers)


@router.put(
    f"/fhir/{TYPE}/{ID}",
    summary="Update, or create with this id (http.html#update)",
    response_class=Response,
    responses=_FHIR,
)
async def update(
    resource_type: str, resource_id: str, request: Request, session: SessionDep, token: Token
) -> Response:
    check_type(resource_type)
    access.check_update(token, resource_type)
    await _check_change(session, token, resource_type, resource_id)
    written = await service.update(
        session=session,
        resource_type=resource_type,
        resource_id=resource_id,
        resource=await _resource_body(request),
        author=access.author_of(token),
        if_match=_if_match(request),
    )
    if written.created:
        # Update as create makes a resource: the token must be allowed to create, too.
        access.check_create(token, resource_type)
    await _audit_written(request, session, token, written)
    return _written(request, written, base_url(request))


@router.patch(
    f"/fhir/{TYPE}/{ID}",
    summary="Patch with a JSON Patch, RFC 6902 (http.html#patch)",
    response_class=Response,
    responses=_FHIR,
)
async def patch(
    resource_type: str, resource_id: str, request: Request, session: SessionDep, token: Token
) -> Response:
    check_type(resource_type)
    access.check_update(token, resource_type)
    _check_patch_type(request)
    await _check_change(session, token, resource_type, resource_id)
    written = await service.patch(
        session=session,
        resource_type=resource_type,
        resource_id=resource_id,
        operations=await read_json(request),
        author=access.author_of(token),
        if_match=_if_match(request),
    )
    await _audit_written(request, session, token, written)
    return _written(request, written, base_url(request))


def _check_patch_type(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != JSON_PATCH:
        raise Problem(415, f"PATCH takes a JSON Patch document ({JSON_PATCH})")


@router.delete(
    f"/fhir/{TYPE}/{ID}",
    summary="Delete: a new version marks the resource deleted (http.html#delete)",
    response_class=Response,
    status_code=204,
)
async def delete(
    resource_type: str, resource_id: str, request: Request, session: SessionDep, token: Token
) -> Response:
    check_type(resource_type)
    access.check_delete(token, resource_type)
    await _check_change(session, token, resource_type, resource_id)
    version = await service.delete(
        session=session,
        resource_type=resource_type,
        resource_id=resource_id,
        author=access.author_of(token),
        if_match=_if_match(request),
    )
    if version is not None:
        await _audit_write(request, session, token, version, action="D")
    return _deleted(request, version)


@router.get(
    f"/fhir/{TYPE}/{ID}/_history",
    summary="History of one resource (http.html#history)",
    response_class=Response,
    responses=_FHIR,
)
async def history_instance(
    resource_type: str, resource_id: str, request: Request, session: SessionDep, token: Token
) -> Response:
    check_type(resource_type)
    access.check_read(token, resource_type)
    return await _history(
        request,
        session,
        token,
        resource_type,
        resource_id,
        f"{resource_type}/{resource_id}/_history",
    )


@router.get(
    f"/fhir/{TYPE}/{ID}/_history/{{version_id:fhirversion}}",
    summary="Read one version (http.html#vread)",
    response_class=Response,
    responses=_FHIR,
)
async def vread(
    resource_type: str,
    resource_id: str,
    version_id: int,
    request: Request,
    session: SessionDep,
    token: Token,
) -> Response:
    check_type(resource_type)
    access.check_read(token, resource_type)
    version = await service.vread(
        session=session, resource_type=resource_type, resource_id=resource_id, version_id=version_id
    )
    await _audit_read(request, session, token, version)
    return _read_answer(request, version)


async def _history(
    request: Request,
    session: SessionDep,
    token: AccessToken,
    resource_type: str | None,
    resource_id: str | None,
    path: str,
) -> Response:
    params = list(request.query_params.multi_items())
    known = {"_count", "_since", "_cursor", "_format"}
    unknown = sorted({k for k, _ in params if k not in known})
    if unknown:
        raise Problem(400, f"history does not support {', '.join(unknown)}")
    query_params = dict(params)
    author = None
    if resource_id is None:
        # Type and system history span patients: a hospital sees the versions it wrote; a
        # person reads history one of their own records at a time.
        reader = await access.reader_of(session, token)
        if not reader.institution:
            raise Problem(403, "a card holder reads the history of one record at a time")
        author = reader.token.client_id
    query = history.HistoryQuery(
        resource_type=resource_type,
        resource_id=resource_id,
        since=history.parse_since(query_params.get("_since")),
        count=history.parse_count(query_params.get("_count")),
        after=history.decode_cursor(query_params.get("_cursor")),
        author=author,
    )
    versions, more = await history.page(session=session, query=query)
    if resource_id is not None and versions:
        # One record's history: whose record it is decides, as for a read.
        await _audit_read(request, session, token, versions[0][0])
    elif versions:
        policy = policy_of(request)
        touched = [
            Touched(v.resource_type, v.id, v.patient_key, access.record_level(policy, v))
            for v, _method in versions
        ]
        await record_accesses(request, session, touched, action="R")
    body = history.bundle(
        versions=versions, more=more, base=base_url(request), path=path, params=params
    )
    return fhir_json(body)
