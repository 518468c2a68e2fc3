"""The search parameters this store supports, from the official R4 definitions.

``parameters.json`` is generated from FHIR R4's SearchParameter resources by
``python -m health.search.extract_definitions`` (see that module). Loaded and compiled once per
process: a definition whose expression falls outside the FHIRPath subset fails loudly here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from health.search.fhirpath import Expression, compile_expression, split_union

DATA = Path(__file__).with_name("parameters.json")

# Answered from the resources table itself (FHIR R4 search.html#id, #lastUpdated), so never
# written to the index tables.
TABLE_PARAMS = frozenset({"_id", "_lastUpdated"})


@dataclass(frozen=True, slots=True)
class Component:
    """One component of a composite parameter (FHIR R4 search.html#composite)."""

    type: str
    expression: Expression


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter of one resource type."""

    name: str
    type: str
    expression: Expression
    url: str = ""
    target: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    # The top-level elements the expression starts from (None: it may read any). A resource
    # with none of them has no value for the parameter: indexing skips the evaluation.
    roots: frozenset[str] | None = None
    choice_roots: frozenset[str] = frozenset()

    def may_apply(self, resource: dict[str, Any]) -> bool:
        """False when ``resource`` cannot have a value for this parameter."""
        if self.roots is None:
            return True
        if any(root in resource for root in self.roots):
            return True
        return (
            any(key.startswith(tuple(self.choice_roots)) for key in resource)
            if (self.choice_roots)
            else False
        )


@dataclass(frozen=True, slots=True)
class Definitions:
    resource_types: frozenset[str]
    by_type: dict[str, dict[str, SearchParam]]
    common: dict[str, SearchParam]
    summary: dict[str, frozenset[str]]

    def params(self, resource_type: str) -> dict[str, SearchParam]:
        """Every parameter of ``resource_type``: its own and the common ones."""
        return self.by_type.get(resource_type, self.common)


_ROOT = re.compile(r"\(*[A-Z][A-Za-z]+\.([a-z][A-Za-z0-9]*)")


def _roots(expression: str) -> frozenset[str] | None:
    if re.search(r"exists\(|empty\(| and | or |!=", expression):
        return None  # a boolean expression has a value (false) even without its elements
    roots = set()
    for part in split_union(expression):
        match = _ROOT.match(part)
        if match is None:
            return None
        roots.add(match.group(1))
    return frozenset(roots)


def _param(raw: dict[str, Any], choices: frozenset[str]) -> SearchParam:
    roots = _roots(raw["expression"])
    return SearchParam(
        roots=roots,
        choice_roots=frozenset(roots & choices) if roots else frozenset(),
        name=raw["name"],
        type=raw["type"],
        expression=compile_expression(raw["expression"], choices=choices),
        url=raw["url"],
        target=tuple(raw.get("target", ())),
        components=tuple(
            Component(c["type"], compile_expression(c["expression"], choices=choices))
            for c in raw.get("components", ())
        ),
    )


@cache
def definitions() -> Definitions:
    """The compiled definitions (loaded once)."""
    raw = json.loads(DATA.read_text(encoding="utf-8"))
    choices = frozenset(raw["choiceElements"])
    common = {p["name"]: _param(p, choices) for p in raw["common"]}
    by_type = {
        resource_type: {**common, **{p["name"]: _param(p, choices) for p in spec["params"]}}
        for resource_type, spec in raw["types"].items()
    }
    return Definitions(
        resource_types=frozenset(raw["resourceTypes"]),
        by_type=by_type,
        common=common,
        summary={t: frozenset(spec["summary"]) for t, spec in raw["types"].items()},
    )


def supported_search_params() -> dict[str, list[dict[str, str]]]:
    """Per resource type, the parameters search answers, as CapabilityStatement.rest.resource
    ``searchParam`` entries (FHIR R4 capabilitystatement.html): name, type, definition URL.

    Types outside the indexed set still answer the common parameters (listed under ``*``).
    """
    defs = definitions()

    def entries(params: dict[str, SearchParam]) -> list[dict[str, str]]:
        return [
            {"name": p.name, "type": p.type, "definition": p.url}
            for p in sorted(params.values(), key=lambda p: p.name)
        ]

    result = {t: entries(params) for t, params in sorted(defs.by_type.items())}
    result["*"] = entries(defs.common)
    return result
