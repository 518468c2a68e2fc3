"""The entries of a ``transaction`` or ``batch`` Bundle (FHIR R4 bundle.html, http.html
#transaction): their requests parsed and checked, the scopes each needs, the reads, and the
response Bundle.

Every refusal names the entry (``Bundle.entry[3].request.url``) in the OperationOutcome's
``expression``, and never echoes a condition's values (an identifier may be a person's number).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlmodel.ext.asyncio.session import AsyncSession

from health import access
from health.auditing import Touched
from health.fhir.outcome import Issue, fhir_problem, outcome_of
from health.fhir.validation import ID_PATTERN, is_resource_type, validate_resource
from health.store import repository, service
from health.store.history import MAX_COUNT, parse_count
from health.store.versions import Version, instant, parse_if_match
from services.kit.errors import Problem
from services.kit.protection import ProtectionPolicy
from services.kit.tokens import AccessToken

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
MAX_ENTRIES = 10_000


@dataclass
class Entry:
    """One Bundle.entry with its request parsed."""

    index: int
    method: str
    url: str
    resource_type: str
    resource_id: str | None = None
    version_id: int | None = None
    query: str | None = None
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    if_none_exist: str | None = None
    if_match: int | None = None
    # Settled before any write: the id this entry acts on, and whether a match was found.
    target: str | None = None
    matched: bool = False
    response: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


@dataclass(frozen=True, slots=True)
class Context:
    """Who is asking, and how they want answers; what the Bundle touched, for the ledger."""

    token: AccessToken
    base: str
    return_representation: bool = False
    reader: access.Reader | None = None
    policy: ProtectionPolicy = field(default_factory=ProtectionPolicy)
    touched: list[Touched] = field(default_factory=list)

    def written(self, version: Version) -> None:
        """A version this Bundle wrote: a person's must be their own Consent; then audited."""
        if self.reader is None:
            raise Problem(403, "no reader")
        access.check_new_record(self.reader, version.resource_type, version.patient_key)
        self.touch(version)

    def touch(self, version: Version, purpose: str | None = None) -> None:
        level = access.record_level(self.policy, version)
        self.touched.append(
            Touched(version.resource_type, version.id, version.patient_key, level, purpose)
        )

    async def check_read(self, session: AsyncSession, version: Version) -> None:
        """Whose record it is decides who reads it (health.access), and the ledger hears."""
        if self.reader is None:
            raise Problem(403, "no reader")
        level = access.record_level(self.policy, version)
        purpose = await access.check_may_read(session, self.reader, version, level=level)
        self.touch(version, purpose)

    def check_change(self, current: Version | None, resource_type: str) -> None:
        if self.reader is None:
            raise Problem(403, "no reader")
        access.check_may_change(self.reader, current, resource_type)


def bad(where: str, message: str, element: str = "", status: int = 400) -> Problem:
    expression = f"{where}.{element}" if element else where
    return fhir_problem(status, [Issue("invalid", f"{expression}: {message}", (expression,))])


def parse_entry(raw: Any, index: int, base: str) -> Entry:
    """One entry's request (bundle.html: Bundle.entry.request); 400 naming what is wrong."""
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise bad(where, "an entry must be a JSON object")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise bad(where, "the entry has no request", "request")
    entry = _parse_request(request, index, base)
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise bad(where, "fullUrl must be a string", "fullUrl")
    entry.full_url = full_url
    _parse_resource(entry, raw.get("resource"))
    _parse_conditions(entry, request)
    return entry


def _parse_request(request: dict[str, Any], index: int, base: str) -> Entry:
    where = f"Bundle.entry[{index}]"
    method = request.get("method")
    if method not in _METHODS:
        raise bad(where, f"method must be one of {', '.join(_METHODS)}", "request.method")
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise bad(where, "the entry has no request url", "request.url")
    path, _, query = url.partition("?")
    if "://" in path:
        # An absolute URL must be on this server's base (http.html#transaction).
        if not path.startswith(base + "/"):
            raise bad(where, "an absolute url must start with this server's base", "request.url")
        path = path[len(base) + 1 :]
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts or not is_resource_type(parts[0]):
        raise bad(where, "the url does not start with a resource type", "request.url")
    entry = Entry(index=index, method=str(method), url=url, resource_type=parts[0])
    entry.query = query or None
    if len(parts) >= 2:
        if not ID_PATTERN.fullmatch(parts[1]):
            raise bad(where, f"{parts[1][:64]!r} is not a FHIR id", "request.url")
        entry.resource_id = parts[1]
    is_read = method in ("GET", "HEAD")
    if len(parts) == 4 and parts[2] == "_history" and parts[3].isdigit() and is_read:
        entry.version_id = int(parts[3])
    elif len(parts) > 2:
        raise bad(where, "the url is not [type], [type]/[id] or a version", "request.url")
    if method == "POST" and (entry.resource_id is not None or entry.query):
        raise bad(where, "a POST url is the resource type alone", "request.url")
    if not is_read and method != "POST" and entry.resource_id is None and not entry.query:
        raise bad(where, f"a {method} url needs an id or a condition", "request.url")
    return entry


def _parse_resource(entry: Entry, resource: Any) -> None:
    where = entry.where
    if entry.method in ("POST", "PUT"):
        if resource is None:
            raise bad(where, f"a {entry.method} entry needs a resource", "resource")
        entry.resource = validate_resource(
            resource, expected_type=entry.resource_type, where=f"{where}.resource"
        )
    elif entry.method == "PATCH":
        entry.resource = _patch_document(resource, where)


def _parse_conditions(entry: Entry, request: dict[str, Any]) -> None:
    where = entry.where
    if_none_exist = request.get("ifNoneExist")
    if if_none_exist is not None:
        if not isinstance(if_none_exist, str) or entry.method != "POST":
            raise bad(where, "ifNoneExist is a query, on a POST", "request.ifNoneExist")
        entry.if_none_exist = if_none_exist
    if_match = request.get("ifMatch")
    if if_match is not None:
        try:
            entry.if_match = parse_if_match(str(if_match))
        except Problem as exc:
            raise bad(where, exc.detail, "request.ifMatch") from None


def _patch_document(resource: Any, where: str) -> dict[str, Any]:
    """A PATCH entry carries its JSON Patch in a Binary (FHIR R4 http.html#patch, transactions)."""
    if (
        not isinstance(resource, dict)
        or resource.get("resourceType") != "Binary"
        or resource.get("contentType") != "application/json-patch+json"
        or not isinstance(resource.get("data"), str)
    ):
        raise bad(
            where,
            "a PATCH entry's resource is a Binary with contentType application/json-patch+json",
            "resource",
        )
    try:
        operations = orjson.loads(base64.b64decode(resource["data"], validate=True))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise bad(where, "the Binary's data is not base64 JSON", "resource.data") from None
    return {"operations": operations}


def authorize(token: AccessToken, entry: Entry) -> None:
    """The scopes each entry's interaction needs, as if it were sent alone."""
    kind = entry.resource_type
    if entry.method == "POST":
        access.check_create(token, kind)
    elif entry.method in ("PUT", "PATCH"):
        access.check_update(token, kind)
    elif entry.method == "DELETE":
        access.check_delete(token, kind)
    elif entry.query is not None or entry.resource_id is None:
        access.check_search(token, kind)
    else:
        access.check_read(token, kind)
    if entry.query is not None or entry.if_none_exist is not None:
        access.check_search(token, kind)


def in_entry(problem: Problem, entry: Entry) -> Problem:
    """``problem`` as raised while processing ``entry``: the entry is named."""
    if problem.extensions.get("issues"):
        return problem
    return fhir_problem(
        problem.status,
        [
            Issue(
                _code(problem.status),
                f"{entry.where} ({entry.method} {entry.resource_type}): {problem.detail}",
                (entry.where,),
            )
        ],
        headers={k: v for k, v in problem.headers.items() if k.lower() != "etag"},
    )


def _code(status: int) -> str:
    return str(outcome_of(Problem(status, "x"))["issue"][0]["code"])


def status_text(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def bundle_entries(bundle: Any, kind: str) -> list[Any]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise fhir_problem(
            400, [Issue("structure", "POST /fhir takes a Bundle", ("Bundle.resourceType",))]
        )
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise fhir_problem(400, [Issue("structure", "entry must be a list", ("Bundle.entry",))])
    if len(entries) > MAX_ENTRIES:
        raise fhir_problem(
            413,
            [
                Issue(
                    "too-costly", f"a {kind} holds at most {MAX_ENTRIES} entries", ("Bundle.entry",)
                )
            ],
        )
    return entries


async def read_entry(session: AsyncSession, entry: Entry, context: Context) -> None:
    kind = entry.resource_type
    if entry.query is not None or entry.resource_id is None:
        entry.result = await _search(session, entry, context)
        entry.response = {"status": status_text(200)}
        return
    if entry.version_id is not None:
        version = await service.vread(
            session=session,
            resource_type=kind,
            resource_id=entry.resource_id,
            version_id=entry.version_id,
        )
    else:
        version = await service.read(
            session=session, resource_type=kind, resource_id=entry.resource_id
        )
    await context.check_read(session, version)
    entry.result = version.resource() if entry.method == "GET" else None
    entry.response = {
        "status": status_text(200),
        "etag": version.etag,
        "lastModified": instant(version.last_updated),
    }


async def _search(session: AsyncSession, entry: Entry, context: Context) -> dict[str, Any]:
    """A search entry: the current matches, one page (the search module pages in full)."""
    params = parse_qsl(entry.query or "", keep_blank_values=True)
    count = parse_count(next((v for k, v in params if k == "_count"), None))
    params = [(k, v) for k, v in params if k != "_count"]
    ids = await service.find_matches(
        session=session,
        resource_type=entry.resource_type,
        params=params,
        limit=min(count, MAX_COUNT),
    )
    rows = await repository.current_many(
        session, resource_type=entry.resource_type, resource_ids=ids
    )
    by_id = {row.id: row for row in rows if not row.deleted}
    for row in by_id.values():
        await context.check_read(session, Version.of(row))
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "fullUrl": f"{context.base}/{entry.resource_type}/{i}",
                "resource": orjson.loads(by_id[i].content),
                "search": {"mode": "match"},
            }
            for i in ids
            if i in by_id
        ],
    }


def response_bundle(kind: str, entries: list[Entry]) -> dict[str, Any]:
    out = []
    for entry in entries:
        item: dict[str, Any] = {"response": entry.response}
        if entry.result is not None:
            item["resource"] = entry.result
        out.append(item)
    return {"resourceType": "Bundle", "type": kind, "entry": out}
