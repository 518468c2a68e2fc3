"""History of a resource, a type, or the whole system (FHIR R4 http.html#history).

Newest first, paged by a keyset cursor: the ``next`` link carries the sort key of the last
entry shown, so a page resumes exactly where the previous one ended, however many versions
are written meanwhile. The Bundle is of type ``history``; a deletion is an entry with a request
and a response but no resource.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlmodel.ext.asyncio.session import AsyncSession

from health.store import repository
from health.store.versions import Version, instant
from services.kit.errors import Problem

DEFAULT_COUNT = 50
MAX_COUNT = 1000

Cursor = tuple[datetime, str, str, int]


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Where the history is taken from and which page of it."""

    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    count: int = DEFAULT_COUNT
    after: Cursor | None = None
    # Only versions this client wrote (a hospital's type and system history: the rest is
    # other hospitals' records, read one patient at a time under consent or presence).
    author: str | None = None


def parse_since(value: str | None) -> datetime | None:
    """``_since``: a FHIR instant (http.html#history); 400 otherwise."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Problem(400, f"_since {value[:64]!r} is not a FHIR instant") from None
    if moment.tzinfo is None:
        raise Problem(400, "_since must carry a time zone (FHIR instant)")
    return moment.astimezone(UTC)


def parse_count(value: str | None) -> int:
    """``_count``: a page size, capped at :data:`MAX_COUNT`; 400 if not a number."""
    if value is None:
        return DEFAULT_COUNT
    try:
        count = int(value)
    except ValueError:
        raise Problem(400, f"_count {value[:32]!r} is not a number") from None
    if count < 0:
        raise Problem(400, "_count may not be negative")
    return min(count, MAX_COUNT)


def encode_cursor(version: Version) -> str:
    # The exact stored time (with microseconds), not the shown instant: the order needs it.
    moment = version.last_updated.astimezone(UTC).isoformat()
    key = [moment, version.resource_type, version.id, version.version_id]
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def decode_cursor(value: str | None) -> Cursor | None:
    if value is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        moment, resource_type, resource_id, version_id = orjson.loads(raw)
        cursor = (
            datetime.fromisoformat(moment).astimezone(UTC),
            str(resource_type),
            str(resource_id),
            int(version_id),
        )
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise Problem(400, "the paging cursor is not one this server made") from None
    return cursor


async def page(
    *, session: AsyncSession, query: HistoryQuery
) -> tuple[list[tuple[Version, str]], bool]:
    """One page of versions with the method that made each, and whether more follow."""
    if query.resource_type is not None and query.resource_id is not None:
        known = await repository.current(
            session, resource_type=query.resource_type, resource_id=query.resource_id
        )
        if known is None:
            # An unknown resource has no history: 404, not an empty Bundle.
            raise Problem(404, f"{query.resource_type}/{query.resource_id} is not known")
    if query.count == 0:
        return [], False
    rows = await repository.history(
        session,
        resource_type=query.resource_type,
        resource_id=query.resource_id,
        since=query.since,
        after=query.after,
        limit=query.count + 1,
        author=query.author,
    )
    versions = [(Version.of(row), row.method) for row in rows[: query.count]]
    return versions, len(rows) > query.count


def bundle(
    *,
    versions: list[tuple[Version, str]],
    more: bool,
    base: str,
    path: str,
    params: list[tuple[str, str]],
) -> dict[str, Any]:
    """The ``history`` Bundle of one page; ``path`` is the history URL under ``base``."""
    keep = [(k, v) for k, v in params if k != "_cursor"]
    links = [{"relation": "self", "url": _url(base, path, params)}]
    if more and versions:
        links.append(
            {
                "relation": "next",
                "url": _url(base, path, [*keep, ("_cursor", encode_cursor(versions[-1][0]))]),
            }
        )
    entries = []
    for version, method in versions:
        entry: dict[str, Any] = {"fullUrl": f"{base}/{version.relative_url}"}
        if version.deleted:
            entry["request"] = {"method": "DELETE", "url": version.relative_url}
            entry["response"] = {
                "status": "410 Gone",
                "lastModified": instant(version.last_updated),
            }
        else:
            entry["resource"] = version.resource()
            created = version.version_id == 1
            entry["request"] = {
                "method": method,
                "url": version.resource_type if method == "POST" else version.relative_url,
            }
            entry["response"] = {
                "status": "201 Created" if created else "200 OK",
                "etag": version.etag,
                "lastModified": instant(version.last_updated),
            }
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "history", "link": links, "entry": entries}


def _url(base: str, path: str, params: list[tuple[str, str]]) -> str:
    url = f"{base}/{path}" if path else base
    return f"{url}?{urlencode(params)}" if params else url
