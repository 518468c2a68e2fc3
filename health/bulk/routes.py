"""Bulk Data Access v2 ``$export`` over HTTP (hl7.org/fhir/uv/bulkdata/export.html).

Kick-off at system, Patient and Group level, by GET or by POST with a Parameters body
(``Prefer: respond-async``; 202 with the status URL in ``Content-Location``), the status URL
(202 with ``X-Progress`` and ``Retry-After`` while the job runs, 200 with the manifest once
complete, DELETE cancels), and the NDJSON files, served only to the client that kicked the
export off. HTTP only: the rules are in ``service``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from email.utils import format_datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import QueryParams
from starlette.responses import FileResponse, Response

import health.fhir.paths  # noqa: F401  (registers the path convertors the routes use)
from health.bulk import parameters, service
from health.bulk.exporter import exports_of
from health.bulk.models import COMPLETED, FAILED, GROUP, PATIENT, SYSTEM, ExportJob
from health.fhir.media import base_url, check_body_type, check_format, fhir_json, read_json
from health.fhir.outcome import Issue, fhir_problem, information
from services.kit.auth import require_token
from services.kit.deps import RuntimeDep, SessionDep
from services.kit.errors import Problem
from services.kit.protection import protection_guard
from services.kit.tokens import AccessToken

# Defence in depth: the graded-protection table the gateway enforces (issue 4), again here.
router = APIRouter(tags=["fhir bulk data"], dependencies=[Depends(protection_guard())])

Token = Annotated[AccessToken, Depends(require_token())]
_ACCEPTED: dict[int | str, dict[str, Any]] = {202: {"content": {"application/fhir+json": {}}}}
_Handler = Callable[..., Awaitable[Response]]
_JOB = "{job_id:fhirid}"
_RESPOND_ASYNC = re.compile(r"(^|[,;])\s*respond-async\s*($|[,;])")
_FILE = re.compile(r"[A-Z][A-Za-z]{1,63}\.ndjson")


def _status_url(request: Request, job: ExportJob) -> str:
    return f"{base_url(request)}/bulk/{job.id}"


async def _kick_off(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    token: AccessToken,
    kind: str,
    group_id: str | None = None,
) -> Response:
    check_format(request)
    # export.html#headers: "Prefer: respond-async" is required; only asynchronous is offered.
    if not _RESPOND_ASYNC.search(request.headers.get("prefer", "")):
        raise Problem(400, "a $export kick-off needs the header Prefer: respond-async")
    params = parameters.parse(await _parameters_of(request))
    # The kick-off URL as the client sent it (through the gateway), for the manifest's request.
    query = f"?{request.url.query}" if request.url.query else ""
    request_url = f"{base_url(request)}{request.url.path.removeprefix('/fhir')}{query}"
    job = await service.kick_off(
        session=session,
        runtime=runtime,
        exports=exports_of(request.app),
        request=request,
        token=token,
        kind=kind,
        params=params,
        group_id=group_id,
        request_url=request_url,
    )
    url = _status_url(request, job)
    return fhir_json(
        information(f"export {job.id} accepted: poll {url}"),
        status_code=202,
        headers={"Content-Location": url},
    )


async def _parameters_of(request: Request) -> QueryParams:
    """The kick-off parameters: the query of a GET, the Parameters body of a POST
    (export.html#bulk-data-kick-off-request: a server may support POST with a Parameters
    resource, whose repeated ``_type`` values are joined as the GET form would give them)."""
    if request.method == "GET":
        return request.query_params
    if any(name != "_format" for name in request.query_params):
        raise Problem(400, "a POSTed $export takes its parameters in the body, not the URL")
    check_body_type(request)
    body = await read_json(request)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise fhir_problem(
            400, [Issue("invalid", "the body of a POSTed $export is a Parameters resource")]
        )
    pairs: list[tuple[str, str]] = []
    types: list[str] = []
    given = body.get("parameter") or []
    if not isinstance(given, list):
        raise fhir_problem(
            400, [Issue("invalid", "Parameters.parameter is a list", ("Parameters.parameter",))]
        )
    for index, item in enumerate(given):
        parameter: dict[str, Any] = item if isinstance(item, dict) else {}
        name = parameter.get("name")
        values = [v for k, v in parameter.items() if k.startswith("value")]
        if not isinstance(name, str) or len(values) != 1 or not isinstance(values[0], str):
            raise fhir_problem(
                400,
                [
                    Issue(
                        "invalid",
                        "each parameter needs a name and one string-valued value[x]",
                        (f"Parameters.parameter[{index}]",),
                    )
                ],
            )
        if name == "_type":
            types.append(values[0])
        else:
            pairs.append((name, values[0]))
    if types:
        pairs.append(("_type", ",".join(types)))
    return QueryParams(pairs)


def _kick_off_route(path: str, summary: str) -> Callable[[_Handler], _Handler]:
    """A kick-off answers GET and POST alike (Bulk Data IG: parameters in the query or in a
    Parameters body); one route per method keeps the OpenAPI operation ids unique."""

    def register(handler: _Handler) -> _Handler:
        for method in (router.get, router.post):
            method(
                path,
                summary=summary,
                response_class=Response,
                responses=_ACCEPTED,
                status_code=202,
            )(handler)
        return handler

    return register


@_kick_off_route(
    "/fhir/$export",
    "Export every record this client may read (Bulk Data system-level kick-off)",
)
async def export_system(
    request: Request, session: SessionDep, runtime: RuntimeDep, token: Token
) -> Response:
    return await _kick_off(request, session, runtime, token, SYSTEM)


@_kick_off_route(
    "/fhir/Patient/$export",
    "Export every patient's compartment this client may read (patient-level kick-off)",
)
async def export_patients(
    request: Request, session: SessionDep, runtime: RuntimeDep, token: Token
) -> Response:
    return await _kick_off(request, session, runtime, token, PATIENT)


@_kick_off_route(
    "/fhir/Group/{group_id:fhirid}/$export",
    "Export the compartments of a Group's member Patients (group-level kick-off)",
)
async def export_group(
    group_id: str, request: Request, session: SessionDep, runtime: RuntimeDep, token: Token
) -> Response:
    return await _kick_off(request, session, runtime, token, GROUP, group_id)


@router.get(
    f"/fhir/bulk/{_JOB}",
    summary="An export's status: 202 while it runs, then its manifest (export.html)",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}, **_ACCEPTED},
)
async def export_status(
    job_id: str, request: Request, session: SessionDep, runtime: RuntimeDep, token: Token
) -> Response:
    exports = exports_of(request.app)
    await service.sweep(runtime=runtime, exports=exports)
    job = await service.job_of(session, job_id=job_id, client_id=token.client_id)
    if job.status == FAILED:
        raise service.failure(job)
    if job.status != COMPLETED:
        return Response(
            status_code=202,
            headers={
                "X-Progress": job.progress or "in progress",
                "Retry-After": str(service.RETRY_AFTER_SECONDS),
            },
        )
    base = base_url(request)
    manifest = {
        "transactionTime": job.transaction_time.isoformat().replace("+00:00", "Z"),
        "request": job.request_url,
        "requiresAccessToken": True,
        "output": [
            {"type": f["type"], "url": f"{base}/bulk/{job.id}/{f['file']}", "count": f["count"]}
            for f in service.output_files(job)
        ],
        "error": [],
    }
    # export.html#response---complete-status: the manifest is plain JSON, not a resource;
    # Expires says when the files will be deleted (RFC 9111 section 5.3).
    headers = {"Content-Type": "application/json"}
    expires = service.expires_at(runtime, job)
    if expires is not None:
        headers["Expires"] = format_datetime(expires, usegmt=True)
    return fhir_json(manifest, headers=headers)


@router.delete(
    f"/fhir/bulk/{_JOB}",
    summary="Cancel an export, or delete a finished one's files (export.html)",
    response_class=Response,
    responses=_ACCEPTED,
    status_code=202,
)
async def export_cancel(
    job_id: str, request: Request, session: SessionDep, runtime: RuntimeDep, token: Token
) -> Response:
    job = await service.job_of(session, job_id=job_id, client_id=token.client_id)
    await service.cancel(runtime=runtime, exports=exports_of(request.app), job=job)
    return fhir_json(information(f"export {job_id} cancelled, its files deleted"), status_code=202)


@router.get(
    f"/fhir/bulk/{_JOB}/{{file_name}}",
    summary="One NDJSON file of a completed export, for the client that kicked it off",
    response_class=Response,
    responses={200: {"content": {"application/fhir+ndjson": {}}}},
)
async def export_file(
    job_id: str,
    file_name: str,
    session: SessionDep,
    runtime: RuntimeDep,
    token: Token,
) -> Response:
    job = await service.job_of(session, job_id=job_id, client_id=token.client_id)
    listed = {f["file"] for f in service.output_files(job)} if job.status == COMPLETED else set()
    if not _FILE.fullmatch(file_name) or file_name not in listed:
        raise Problem(404, f"export {job_id} has no file {file_name[:80]!r}")
    path = service.directory_of(runtime, job.id) / file_name
    if not path.is_file():
        raise Problem(404, f"the file {file_name} of export {job_id} was deleted")
    return FileResponse(path, media_type=parameters.NDJSON)
