"""FHIR search over HTTP (FHIR R4 http.html#search, search.html).

``GET /fhir/{type}?...``, ``POST /fhir/{type}/_search`` (parameters in the query and/or an
``application/x-www-form-urlencoded`` body) and the system-level ``GET /fhir?_type=A,B&...``.
Answers are searchset Bundles whose links start with the base URL the client used; refusals
are Problems, rendered as OperationOutcome under /fhir. Unknown parameters are a 400 unless
the client sends ``Prefer: handling=lenient`` (search.html#errors), when they are ignored
and reported in an OperationOutcome entry.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any, ClassVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from sqlalchemy import or_
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from health import access
from health.access import check_search
from health.auditing import Touched, record_accesses
from health.fhir.media import base_url, check_format, fhir_json
from health.search.bundle import searchset
from health.search.clauses import Restriction, equals
from health.search.pinning import pinned_patient
from health.search.query import SearchResult, search
from health.store import service
from services.kit.auth import require_token
from services.kit.deps import ReadSessionDep
from services.kit.errors import Problem
from services.kit.protection import policy_of, protection_guard
from services.kit.tokens import AccessToken


class ResourceTypeConvertor(Convertor[str]):
    """Resource type names start with a capital (FHIR R4 resourcelist.html), so the search
    routes never shadow ``/fhir/metadata`` or ``/fhir/_history`` whatever the route order."""

    regex: ClassVar[str] = "[A-Z][A-Za-z]{1,63}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("fhirtype", ResourceTypeConvertor())

# Defence in depth: the graded-protection table the gateway enforces (issue 4), again here.
router = APIRouter(tags=["search"], dependencies=[Depends(protection_guard())])

Token = Annotated[AccessToken, Depends(require_token())]
_FORM = "application/x-www-form-urlencoded"
_MAX_FORM_BYTES = 64 * 1024


async def restriction(
    session: ReadSessionDep, token: Token, request: Request
) -> Restriction | None:
    """What of the store this token may see in search results, as one WHERE clause on the
    resources table (health.access): a hospital, what it wrote, records in no patient's
    compartment, and the patients who consented or whose glass it broke; a card holder, the
    compartments of their own Patient records. Chains, _has and includes obey it too."""
    reader = await access.reader_of(session, token)
    if reader.institution:
        consented, glass = await access.readable_patients(
            session, reader, only=_only_patient(request)
        )
        keys = sorted(consented)
        client_id = token.client_id
        return _once_per_table(
            lambda r: or_(
                equals(r.c.author, client_id),
                _no_patient(r),
                r.c.patient_key.in_(keys),
                r.c.patient_key.in_(glass),
            )
        )
    own = sorted(reader.patients)
    return _once_per_table(lambda r: or_(_no_patient(r), r.c.patient_key.in_(own)))


def _only_patient(request: Request) -> str | None:
    """The one patient whose records a ``GET /fhir/{type}?...`` search can return, if it is
    pinned to one (health.search.pinning) and reaches no other resources: no chain, no
    ``_has``, no include (those may reach other patients' records, restricted too)."""
    resource_type = request.path_params.get("resource_type")
    if request.method != "GET" or not isinstance(resource_type, str):
        return None
    params = request.query_params.multi_items()
    if any("." in key or key.startswith(("_has", "_include", "_revinclude")) for key, _ in params):
        return None
    return pinned_patient(resource_type, params)


def _once_per_table(build: Restriction) -> Restriction:
    """``build``, called once per resources table or alias of the search (the page's query,
    its count and its includes all restrict the same table)."""
    built: dict[Any, Any] = {}  # tables and aliases hash by identity

    def restrict(r: Any) -> Any:
        if r not in built:
            built[r] = build(r)
        return built[r]

    return restrict


@lru_cache(maxsize=256)
def _no_patient(r: Any) -> Any:
    return r.c.patient_key.is_(None)


Restrict = Annotated[Restriction | None, Depends(restriction)]


def _lenient(request: Request) -> bool:
    # RFC 7240 Prefer, FHIR R4 search.html#errors: handling=strict|lenient.
    prefer = request.headers.get("prefer", "")
    return any(
        re.fullmatch(r"\s*handling\s*=\s*\"?lenient\"?\s*", part)
        for part in re.split(r"[,;]", prefer)
    )


async def _answer(
    request: Request,
    session: ReadSessionDep,
    token: AccessToken,
    restrict: Restriction | None,
    resource_types: list[str],
    params: list[tuple[str, str]],
    path: str,
) -> Response:
    check_format(request)
    for resource_type in resource_types:
        check_search(token, resource_type)
    base = base_url(request)
    result = await search(
        session,
        resource_types,
        params,
        base_url=base,
        restrict=restrict,
        lenient=_lenient(request),
        may_include=lambda resource_type: access.may(token, resource_type, "r"),
        may_search=lambda resource_type: access.may(token, resource_type, "s"),
    )
    await _screen_and_audit(request, session, token, result)
    return fhir_json(searchset(result, base=base, path=path))


async def _screen_and_audit(
    request: Request, session: ReadSessionDep, token: AccessToken, result: SearchResult
) -> None:
    """Sensitive (level 4) records leave only to whom access.check_may_read allows them; what
    leaves is in the audit ledger first, one entry per patient."""
    reader = await access.reader_of(session, token)
    policy = policy_of(request)
    default = (
        access.TREATMENT if reader.institution or not reader.own_app else (access.PATIENT_REQUEST)
    )
    touched: list[Touched] = []
    # Each kept record's patient and its citizen, as the page query found them.
    citizens: dict[str, str] = {}
    for group in (result.matches, result.included):
        kept = []
        for found in group:
            level = access.stored_level(policy, found.resource_type, found.content)
            purpose = default
            if level >= 4:
                current = await service.current_or_none(
                    session=session, resource_type=found.resource_type, resource_id=found.id
                )
                if current is None:
                    continue
                try:
                    purpose = await access.check_may_read(session, reader, current, level=level)
                except Problem:
                    continue  # left out of the page, as if it did not match
            kept.append(found)
            touched.append(
                Touched(found.resource_type, found.id, found.patient_key, level, purpose)
            )
            if found.patient_key is not None and found.citizen is not None:
                citizens[found.patient_key] = found.citizen
        group[:] = kept
    await record_accesses(request, session, touched, action="R", detail="search", citizens=citizens)


@router.get(
    "/fhir/{resource_type:fhirtype}",
    summary="Search resources of one type (FHIR R4 search.html)",
    response_class=Response,
    responses={200: {"content": {"application/fhir+json": {}}}},
)
async def search_type(
    resource_type: str, request: Request, session: ReadSessionDep, token: Token, restrict: Restrict
) -> Response:
    params = list(request.query_params.multi_items())
    return await _answer(request, session, token, restrict, [resource_type], params, resource_type)


@router.post(
    "/fhir/{resource_type:fhirtype}/_search",
    summary="Search resources of one type with form-encoded parameters (http.html#search)",
    response_class=Response,
    responses={200: {"content": {"application/fhir+json": {}}}},
)
async def search_type_form(
    resource_type: str, request: Request, session: ReadSessionDep, token: Token, restrict: Restrict
) -> Response:
    params = list(request.query_params.multi_items()) + await _form(request)
    return await _answer(request, session, token, restrict, [resource_type], params, resource_type)


@router.get(
    "/fhir",
    summary="Search several resource types at once: _type=A,B (FHIR R4 http.html#search)",
    response_class=Response,
    responses={200: {"content": {"application/fhir+json": {}}}},
)
async def search_system(
    request: Request, session: ReadSessionDep, token: Token, restrict: Restrict
) -> Response:
    params = list(request.query_params.multi_items())
    types = [t.strip() for key, value in params if key == "_type" for t in value.split(",")]
    types = sorted({t for t in types if t})
    if not types:
        raise Problem(400, "a system-level search needs _type (e.g. _type=Patient,Observation)")
    if len(types) > 20:
        raise Problem(400, "_type names at most 20 resource types")
    return await _answer(request, session, token, restrict, types, params, "")


async def _form(request: Request) -> list[tuple[str, str]]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    body = await request.body()
    if not body:
        return []
    if content_type != _FORM:
        raise Problem(415, f"POST _search takes {_FORM}, not {content_type or 'no type'}")
    if len(body) > _MAX_FORM_BYTES:
        raise Problem(413, f"search parameters are limited to {_MAX_FORM_BYTES} bytes")
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Problem(400, "the form body is not UTF-8") from None
