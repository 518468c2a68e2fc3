"""``POST /fhir`` with a ``transaction`` Bundle: all or nothing (FHIR R4 http.html#transaction,
bundle.html#transaction).

A transaction is one database transaction. Entries are checked first (shape, scopes, resource
validity), then every identity is settled (server ids for creates, matches of conditional
creates, updates and deletes) under the locks of everything the Bundle changes, then
``urn:uuid`` fullUrls and conditional references (``Patient?identifier=...``) are rewritten in
every resource, then the writes happen in the order bundle.html#transaction prescribes (DELETE,
POST, PUT and PATCH, then GET), staged and written in bulk. Any failure raises, and the
request's session rolls everything back.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from health import access
from health.fhir.outcome import Issue, fhir_problem
from health.fhir.validation import check_type, validate_resource
from health.store import repository, service
from health.store.entries import (
    Context,
    Entry,
    authorize,
    bad,
    bundle_entries,
    in_entry,
    parse_entry,
    read_entry,
    response_bundle,
    status_text,
)
from health.store.models import ResourceRow
from health.store.versions import Version, Writes, instant
from services.kit.errors import Problem

# bundle.html#transaction: the order entries are processed in, whatever their order in the Bundle.
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


async def transaction(*, session: AsyncSession, bundle: Any, context: Context) -> dict[str, Any]:
    """Process a ``transaction`` Bundle atomically; the ``transaction-response`` Bundle."""
    raw_entries = bundle_entries(bundle, "transaction")
    entries = [parse_entry(raw, i, context.base) for i, raw in enumerate(raw_entries)]
    for entry in entries:
        authorize(context.token, entry)
    _check_unique(entries)
    # Conditions first, then instances, each set in sorted order: the order every writer
    # takes its locks in (service.conditional_update too), so no two can wait on each other.
    await repository.lock(session, _condition_keys(entries))
    mapping = await _settle_identities(session, entries)
    _check_unique_targets(entries)
    await repository.lock(session, _instance_keys(entries))
    resolver = _References(session, mapping)
    for entry in entries:
        if entry.method in ("POST", "PUT") and entry.resource is not None and not entry.matched:
            await resolver.rewrite(entry)
    writes = Writes(session, access.author_of(context.token))
    ordered = sorted(entries, key=lambda e: _ORDER[e.method])
    currents = await _currents(
        session, [e for e in entries if e.method in ("PUT", "PATCH", "DELETE")]
    )
    _check_changes(entries, currents, context)
    for entry in ordered:
        if entry.method in ("GET", "HEAD"):
            continue
        try:
            _stage(entry, writes, currents, context)
        except Problem as exc:
            raise in_entry(exc, entry) from None
    await writes.flush()
    for version in writes.written:
        context.written(version)
    for entry in ordered:
        if entry.method in ("GET", "HEAD"):
            try:
                await read_entry(session, entry, context)
            except Problem as exc:
                raise in_entry(exc, entry) from None
    return response_bundle("transaction-response", entries)


def _check_changes(
    entries: list[Entry], currents: dict[tuple[str, str], ResourceRow], context: Context
) -> None:
    """Only a record's author changes it (health.access); the whole transaction fails if not."""
    for entry in entries:
        if entry.method in ("PUT", "PATCH", "DELETE") and entry.target is not None:
            row = currents.get((entry.resource_type, entry.target))
            try:
                context.check_change(
                    Version.of(row) if row is not None else None, entry.resource_type
                )
            except Problem as exc:
                raise in_entry(exc, entry) from None


def _check_unique(entries: list[Entry]) -> None:
    """bundle.html#transaction: no resource may be the subject of two entries."""
    seen_urls: dict[str, int] = {}
    seen_ids: dict[tuple[str, str], int] = {}
    for entry in entries:
        if entry.full_url and entry.method in ("POST", "PUT"):
            if entry.full_url in seen_urls:
                raise bad(
                    entry.where,
                    f"fullUrl also used by entry {seen_urls[entry.full_url]}",
                    "fullUrl",
                )
            seen_urls[entry.full_url] = entry.index
        if entry.resource_id and entry.method in ("PUT", "PATCH", "DELETE"):
            key = (entry.resource_type, entry.resource_id)
            if key in seen_ids:
                what = f"{entry.resource_type}/{entry.resource_id}"
                raise bad(
                    entry.where, f"{what} is also changed by entry {seen_ids[key]}", "request.url"
                )
            seen_ids[key] = entry.index


def _check_unique_targets(entries: list[Entry]) -> None:
    """The same rule once conditions are matched: two entries may not change one resource."""
    seen: dict[tuple[str, str], int] = {}
    for entry in entries:
        if entry.method in ("PUT", "PATCH", "DELETE") and entry.target is not None:
            key = (entry.resource_type, entry.target)
            if key in seen:
                raise bad(
                    entry.where,
                    f"its condition matches the resource entry {seen[key]} changes",
                    "request.url",
                )
            seen[key] = entry.index


def _condition_keys(entries: list[Entry]) -> list[str]:
    keys: list[str] = []
    for entry in entries:
        condition = entry.if_none_exist or (entry.query if entry.method != "GET" else None)
        if condition:
            params = service.search_params(condition)
            keys.append(service.condition_key(entry.resource_type, params))
    return keys


def _instance_keys(entries: list[Entry]) -> list[str]:
    """The resources the transaction changes, once their ids are settled."""
    return [
        service.instance_key(entry.resource_type, entry.target)
        for entry in entries
        if entry.method in ("PUT", "PATCH", "DELETE") and entry.target is not None
    ]


async def _settle_identities(session: AsyncSession, entries: list[Entry]) -> dict[str, str]:
    """Give every writing entry the id it acts on; map fullUrls to ``Type/id``."""
    mapping: dict[str, str] = {}
    for entry in entries:
        try:
            await _settle(session, entry)
        except Problem as exc:
            raise in_entry(exc, entry) from None
        if entry.full_url and entry.target and entry.method in ("POST", "PUT"):
            mapping[entry.full_url] = f"{entry.resource_type}/{entry.target}"
    return mapping


async def _settle(session: AsyncSession, entry: Entry) -> None:
    if entry.method == "POST":
        entry.target = str(uuid.uuid4())
        if entry.if_none_exist:
            found = await _match(session, entry, entry.if_none_exist)
            if found is not None:
                entry.target, entry.matched = found, True
        return
    if entry.method not in ("PUT", "PATCH", "DELETE"):
        return
    if entry.resource_id is not None:
        entry.target = entry.resource_id
    else:
        entry.target = await _match(session, entry, entry.query or "")
        if entry.target is None and entry.method == "PUT":
            body_id = (entry.resource or {}).get("id")
            entry.target = str(body_id) if body_id else str(uuid.uuid4())
        elif entry.target is None and entry.method == "PATCH":
            raise Problem(404, "the condition matches no resource to patch")
    if entry.method == "PUT" and entry.resource is not None:
        body_id = entry.resource.get("id")
        if body_id is not None and body_id != entry.target:
            raise bad(entry.where, "the resource's id is not the url's", "resource.id")


async def _match(session: AsyncSession, entry: Entry, condition: str) -> str | None:
    params = service.search_params(condition)
    found = await service.matches(session=session, resource_type=entry.resource_type, params=params)
    if len(found) > 1:
        raise Problem(412, f"{service.describe(condition)} matches several resources")
    return found[0] if found else None


class _References:
    """Rewrites references inside a transaction's resources (bundle.html#references)."""

    def __init__(self, session: AsyncSession, mapping: dict[str, str]) -> None:
        self.session = session
        self.mapping = mapping
        self.conditional: dict[str, str] = {}

    async def rewrite(self, entry: Entry) -> None:
        assert entry.resource is not None
        pending: list[tuple[dict[str, Any], str, str]] = []
        self._walk(entry.resource, f"{entry.where}.resource", pending)
        for holder, key, path in pending:
            holder[key] = await self._conditional(holder[key], path)

    def _walk(self, node: Any, path: str, pending: list[tuple[dict[str, Any], str, str]]) -> None:
        # Every string equal to a fullUrl is replaced: references, and uri/url elements too
        # (bundle.html#references: "all matching links in the bundle").
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{path}.{key}"
                if isinstance(value, str):
                    replacement = self.mapping.get(value)
                    if replacement is not None:
                        node[key] = replacement
                    elif key == "reference":
                        if value.startswith(("urn:uuid:", "urn:oid:")):
                            raise fhir_problem(
                                400,
                                [
                                    Issue(
                                        "not-found",
                                        f"{here}: {value[:80]} is not the fullUrl of any entry",
                                        (here,),
                                    )
                                ],
                            )
                        if "?" in value and not value.startswith("#") and "://" not in value:
                            pending.append((node, key, here))
                elif isinstance(value, dict | list):
                    self._walk(value, here, pending)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                if isinstance(item, dict | list):
                    self._walk(item, f"{path}[{i}]", pending)

    async def _conditional(self, reference: str, path: str) -> str:
        """``Type?query`` resolved to the one match (bundle.html#conditional-references)."""
        cached = self.conditional.get(reference)
        if cached is not None:
            return cached
        resource_type, _, query = reference.partition("?")
        try:
            check_type(resource_type)
            params = service.search_params(query)
            found = await service.matches(
                session=self.session, resource_type=resource_type, params=params
            )
        except Problem as exc:
            raise fhir_problem(
                exc.status, [Issue("invalid", f"{path}: {exc.detail}", (path,))]
            ) from None
        if len(found) != 1:
            how = "no resource" if not found else "several resources"
            raise fhir_problem(
                412,
                [
                    Issue(
                        "not-found" if not found else "multiple-matches",
                        f"{path}: {service.describe(query)} on {resource_type} matches {how}",
                        (path,),
                    )
                ],
            )
        resolved = f"{resource_type}/{found[0]}"
        self.conditional[reference] = resolved
        return resolved


async def _currents(
    session: AsyncSession, entries: list[Entry]
) -> dict[tuple[str, str], ResourceRow]:
    ids: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        if entry.target is not None:
            ids[entry.resource_type].append(entry.target)
    out: dict[tuple[str, str], ResourceRow] = {}
    for resource_type, resource_ids in ids.items():
        for start in range(0, len(resource_ids), 500):
            rows = await repository.current_many(
                session, resource_type=resource_type, resource_ids=resource_ids[start : start + 500]
            )
            for row in rows:
                out[(row.resource_type, row.id)] = row
    return out


def _stage(
    entry: Entry, writes: Writes, currents: dict[tuple[str, str], ResourceRow], context: Context
) -> None:
    """Stage one writing entry and fill in its response (bundle.html: Bundle.entry.response)."""
    kind, target = entry.resource_type, entry.target
    if entry.method == "POST" and entry.matched:
        entry.response = {"status": status_text(200), "location": f"{kind}/{target}"}
        return
    assert target is not None
    row = currents.get((kind, target))
    current = Version.of(row) if row is not None else None
    if entry.if_match is not None and (
        current is None or current.deleted or current.version_id != entry.if_match
    ):
        raise Problem(412, f"ifMatch version {entry.if_match} is not the current version")
    if entry.method == "DELETE":
        if current is None or current.deleted:
            entry.response = {"status": status_text(204)}
            return
        version = writes.stage(
            resource_type=kind,
            resource_id=target,
            version_id=current.version_id + 1,
            resource=None,
            method="DELETE",
            is_new=False,
            patient_key=row.patient_key if row is not None else None,
        )
        entry.response = {"status": status_text(204), "etag": version.etag}
        return
    if entry.method == "PATCH":
        if current is None or current.deleted:
            raise Problem(
                404 if current is None else 410, f"{kind}/{target} does not exist to patch"
            )
        assert entry.resource is not None
        resource = service.apply_patch(current.resource(), entry.resource["operations"])
        if resource.get("resourceType") != kind or resource.get("id") != target:
            raise Problem(422, "a patch may not change the resource's type or id")
        validate_resource(resource, expected_type=kind, where=f"{entry.where}.resource")
        method = "PATCH"
    else:
        assert entry.resource is not None
        resource = entry.resource
        method = entry.method
    new = current is None
    version = writes.stage(
        resource_type=kind,
        resource_id=target,
        version_id=1 if current is None else current.version_id + 1,
        resource=resource,
        method=method,
        is_new=new,
    )
    created = new or (current is not None and current.deleted)
    entry.response = {
        "status": status_text(201 if created else 200),
        "location": version.version_url,
        "etag": version.etag,
        "lastModified": instant(version.last_updated),
    }
    if context.return_representation:
        entry.result = resource
