"""A search result as a FHIR R4 ``searchset`` Bundle (bundle.html, search.html#return).

Stored resources are already JSON; unless ``_summary`` or ``_elements`` asks for a subset they
are spliced into the Bundle as they are (``orjson.Fragment``), not parsed and re-serialized.
"""

from __future__ import annotations

import uuid
from functools import cache
from typing import Any
from urllib.parse import urlencode

import orjson

from health.search.cursor import encode_cursor
from health.search.definitions import definitions
from health.search.query import Found, SearchResult
from services.kit.sqltypes import utcnow

# FHIR R4 search.html#summary: a subset is tagged SUBSETTED (v3 ObservationValue).
SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "Resource encoded in summary mode",
}
_ALWAYS = ("resourceType", "id", "meta")


@cache
def _summary_elements(resource_type: str) -> frozenset[str]:
    known = definitions().summary.get(resource_type)
    if known is not None:
        return known
    # Types outside the indexed set: the same flags, read from the models when first needed.
    from health.search.extract_definitions import summary_elements

    try:
        return frozenset(summary_elements(resource_type))
    except (ImportError, AttributeError):
        return frozenset({"id", "meta"})


def _subset(found: Found, *, summary: str | None, elements: list[str] | None) -> Any:
    if summary is None and not elements:
        return orjson.Fragment(found.content)
    resource: dict[str, Any] = orjson.loads(found.content)
    if summary == "data":
        kept = {k: v for k, v in resource.items() if k != "text"}
    elif summary == "text":
        kept = {k: v for k, v in resource.items() if k in (*_ALWAYS, "text")}
    elif summary == "true":
        allowed = _summary_elements(found.resource_type)
        kept = {k: v for k, v in resource.items() if k in _ALWAYS or k in allowed}
    else:
        wanted = set(elements or ())
        kept = {k: v for k, v in resource.items() if k in _ALWAYS or k in wanted}
    meta = dict(kept.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return kept


def _link(
    base: str,
    path: str,
    echo: list[tuple[str, str]],
    *,
    count: int,
    offset: int,
    cursor: str | None = None,
) -> str:
    params = [(k, v) for k, v in echo if k != "_count"]
    params.append(("_count", str(count)))
    if cursor is not None:
        params.append(("_cursor", cursor))
    elif offset:
        params.append(("_offset", str(offset)))
    return f"{base}/{path}?{urlencode(params)}" if path else f"{base}?{urlencode(params)}"


def searchset(result: SearchResult, *, base: str, path: str) -> bytes:
    """The Bundle for ``result``; links start with ``base`` (the URL the client used)."""
    spec = result.spec
    current = encode_cursor(spec.offset, spec.after) if spec.after is not None else None
    links = [
        {
            "relation": "self",
            "url": _link(
                base, path, spec.echo, count=spec.count, offset=spec.offset, cursor=current
            ),
        }
    ]
    if result.has_next:
        next_offset = spec.offset + spec.count
        # One type: keyset paging from the last match; several: by offset over the union.
        cursor = (
            encode_cursor(next_offset, result.last_key) if result.last_key is not None else None
        )
        links.append(
            {
                "relation": "next",
                "url": _link(
                    base, path, spec.echo, count=spec.count, offset=next_offset, cursor=cursor
                ),
            }
        )
    if spec.offset > 0 and spec.count > 0:
        previous = max(spec.offset - spec.count, 0)
        links.append(
            {
                "relation": "previous",
                "url": _link(base, path, spec.echo, count=spec.count, offset=previous),
            }
        )
    entries: list[dict[str, Any]] = []
    for mode, items in (("match", result.matches), ("include", result.included)):
        for found in items:
            entries.append(
                {
                    "fullUrl": f"{base}/{found.resource_type}/{found.id}",
                    "resource": _subset(found, summary=spec.summary, elements=spec.elements),
                    "search": {"mode": mode},
                }
            )
    if spec.warnings:
        entries.append(
            {
                "resource": {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {"severity": "warning", "code": "not-supported", "diagnostics": w}
                        for w in spec.warnings
                    ],
                },
                "search": {"mode": "outcome"},
            }
        )
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": utcnow().isoformat()},
        "type": "searchset",
    }
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return orjson.dumps(bundle)
