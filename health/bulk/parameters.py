"""The kick-off request's parameters (Bulk Data Access v2 export.html#query-parameters).

Anything this server does not do is refused with a 400 OperationOutcome naming the parameter,
rather than silently exporting something else than what the client asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson
from starlette.datastructures import QueryParams

from health.fhir.outcome import Issue, fhir_problem
from health.fhir.validation import is_resource_type

# export.html#query-parameters: the server SHALL support the FHIR NDJSON format and its
# abbreviations.
NDJSON = "application/fhir+ndjson"
_NDJSON_NAMES = frozenset({NDJSON, "application/ndjson", "ndjson"})
_SUPPORTED = frozenset({"_outputFormat", "_since", "_type", "_format"})
# Defined by the IG, not offered here (the CapabilityStatement says so): refused by name.
_NOT_SUPPORTED = frozenset(
    {"_typeFilter", "_elements", "patient", "includeAssociatedData", "_until", "organizeOutputBy"}
)


@dataclass(frozen=True, slots=True)
class ExportParameters:
    """What to export: these types (None: every type the token may read), changed since."""

    types: tuple[str, ...] | None = None
    since: datetime | None = None

    def to_json(self) -> str:
        since = self.since.isoformat() if self.since is not None else None
        return orjson.dumps({"types": self.types, "since": since}).decode()


def _bad(name: str, diagnostics: str) -> Exception:
    return fhir_problem(400, [Issue("invalid", diagnostics, (name,))])


def parse(query: QueryParams) -> ExportParameters:
    """The parameters of a kick-off request; 400 naming the first one that is wrong."""
    for name in query:
        if name in _NOT_SUPPORTED:
            raise fhir_problem(
                400, [Issue("not-supported", f"{name} is not supported by this server", (name,))]
            )
        if name not in _SUPPORTED:
            raise _bad(name, f"unknown $export parameter {name!r}")
        if len(query.getlist(name)) > 1:
            raise _bad(name, f"{name} is given more than once")
    output_format = query.get("_outputFormat")
    if output_format is not None and output_format.strip() not in _NDJSON_NAMES:
        raise _bad(
            "_outputFormat",
            f"_outputFormat {output_format!r} is not supported: only {NDJSON} is",
        )
    return ExportParameters(types=_types(query.get("_type")), since=_since(query.get("_since")))


def _types(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",")]
    if not all(names):
        raise _bad("_type", "_type has an empty entry: give comma-separated resource types")
    for name in names:
        if not is_resource_type(name):
            raise _bad("_type", f"_type names {name!r}, which is not a FHIR R4 resource type")
    return tuple(dict.fromkeys(names))


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    # export.html: _since is a FHIR instant (datatypes.html#instant): a time zone is required.
    # A "+" left unencoded in a query string arrives as a space (HTML form encoding).
    value = value.replace(" ", "+")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or "T" not in value:
        raise _bad(
            "_since",
            f"_since {value!r} is not a FHIR instant (e.g. 2026-01-31T08:00:00Z, with a zone)",
        )
    return moment
