"""``POST /fhir`` with a ``batch`` Bundle: each entry on its own (FHIR R4 http.html#transaction,
bundle.html#batch).

Each entry goes through the same interactions as a request of its own, inside a savepoint: an
entry that fails is rolled back alone and answered with its OperationOutcome, the others stay.
"""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from health import access
from health.fhir.outcome import outcome_of
from health.store import repository, service
from health.store.entries import (
    Context,
    Entry,
    authorize,
    bad,
    bundle_entries,
    parse_entry,
    read_entry,
    status_text,
)
from health.store.versions import instant
from services.kit.errors import Problem


async def batch(*, session: AsyncSession, bundle: Any, context: Context) -> dict[str, Any]:
    """Process a ``batch`` Bundle: each entry alone, in a savepoint; ``batch-response``."""
    raw_entries = bundle_entries(bundle, "batch")
    # SQLite: take the write lock now, so that the savepoints below nest inside a real
    # transaction (a first SAVEPOINT would otherwise begin one, and its RELEASE commit it).
    await repository.lock(session, [])
    responses: list[dict[str, Any]] = []
    for index, raw in enumerate(raw_entries):
        try:
            async with session.begin_nested():
                entry = parse_entry(raw, index, context.base)
                authorize(context.token, entry)
                await _batch_entry(session, entry, context)
            item: dict[str, Any] = {"response": entry.response}
            if entry.result is not None:
                item["resource"] = entry.result
        except Problem as exc:
            item = {"response": {"status": status_text(exc.status), "outcome": outcome_of(exc)}}
        responses.append(item)
    return {"resourceType": "Bundle", "type": "batch-response", "entry": responses}


async def _batch_entry(session: AsyncSession, entry: Entry, context: Context) -> None:
    """One batch entry, through the same interactions as a single request."""
    # bundle.html#batch: entries may not depend on each other.
    if entry.method in ("POST", "PUT") and any(
        value.startswith("urn:uuid:") for value in _strings(entry.resource)
    ):
        raise bad(entry.where, "batch entries cannot refer to each other", "resource")
    if entry.method in ("GET", "HEAD"):
        await read_entry(session, entry, context)
        return
    await _check_batch_change(session, entry, context)
    if entry.method == "DELETE":
        await _batch_delete(session, entry, context)
    else:
        written = await _batch_write(session, entry, context)
        version = written.version
        context.written(version)
        entry.response = {
            "status": status_text(201 if written.created else 200),
            "location": version.version_url,
            "etag": version.etag,
            "lastModified": instant(version.last_updated),
        }
        if context.return_representation:
            entry.result = version.resource()


async def _batch_delete(session: AsyncSession, entry: Entry, context: Context) -> None:
    author = access.author_of(context.token)
    if entry.resource_id is not None:
        version = await service.delete(
            session=session,
            resource_type=entry.resource_type,
            resource_id=entry.resource_id,
            author=author,
            if_match=entry.if_match,
        )
    else:
        version = await service.conditional_delete(
            session=session,
            resource_type=entry.resource_type,
            query=entry.query or "",
            author=author,
        )
    entry.response = {"status": status_text(204)}
    if version is not None:
        entry.response["etag"] = version.etag
        context.touch(version)


async def _check_batch_change(session: AsyncSession, entry: Entry, context: Context) -> None:
    """The author rule (health.access) for what the entry would change."""
    if entry.resource_id is not None:
        targets = [entry.resource_id]
    elif entry.method != "POST":
        targets = await service.find_matches(
            session=session,
            resource_type=entry.resource_type,
            params=service.search_params(entry.query or ""),
            limit=2,
        )
    else:
        targets = []
    if not targets:
        context.check_change(None, entry.resource_type)
    for target in targets:
        current = await service.current_or_none(
            session=session, resource_type=entry.resource_type, resource_id=target
        )
        context.check_change(current, entry.resource_type)


async def _batch_write(session: AsyncSession, entry: Entry, context: Context) -> service.Written:
    author = access.author_of(context.token)
    kind = entry.resource_type
    if entry.method == "POST":
        return await service.create(
            session=session,
            resource_type=kind,
            resource=entry.resource,
            author=author,
            if_none_exist=entry.if_none_exist,
        )
    if entry.method == "PUT" and entry.resource_id is not None:
        return await service.update(
            session=session,
            resource_type=kind,
            resource_id=entry.resource_id,
            resource=entry.resource,
            author=author,
            if_match=entry.if_match,
        )
    if entry.method == "PUT":
        return await service.conditional_update(
            session=session,
            resource_type=kind,
            query=entry.query or "",
            resource=entry.resource,
            author=author,
            if_match=entry.if_match,
        )
    assert entry.resource is not None
    if entry.resource_id is None:
        return await service.conditional_patch(
            session=session,
            resource_type=kind,
            query=entry.query or "",
            operations=entry.resource["operations"],
            author=author,
            if_match=entry.if_match,
        )
    return await service.patch(
        session=session,
        resource_type=kind,
        resource_id=entry.resource_id,
        operations=entry.resource["operations"],
        author=author,
        if_match=entry.if_match,
    )


def _strings(node: Any) -> list[str]:
    out: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out
