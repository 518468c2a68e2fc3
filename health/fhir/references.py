"""References between resources (FHIR R4 references.html).

A literal reference is relative (``Patient/123``, optionally ``/_history/2``) or absolute
(``https://host/fhir/Patient/123``); inside a transaction it may name another entry by its
``fullUrl`` (``urn:uuid:...``) or be conditional (``Patient?identifier=...``, bundle.html
#references), and the server rewrites it before storing (bundle.html#transaction).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

# references.html#literal: [Type]/[id] with an optional version, at the end of the URL.
_LITERAL = re.compile(
    r"(?:(?P<base>https?://\S+?)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?"
)


def reference_target(reference: Any) -> tuple[str, str] | None:
    """``(type, id)`` of a literal reference, or None (contained ``#x``, ``urn:``, queries)."""
    if not isinstance(reference, str):
        return None
    match = _LITERAL.fullmatch(reference)
    if match is None:
        return None
    return match.group("type"), match.group("id")


def reference_dicts(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Reference-shaped object (one with a string ``reference``) and its path in ``node``."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield path, node
        for key, value in node.items():
            if isinstance(value, dict | list):
                yield from reference_dicts(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from reference_dicts(item, f"{path}[{index}]")


def rewrite_references(
    resource: dict[str, Any], rewrite: Callable[[str, str], str | None], *, root: str
) -> None:
    """Replace, in place, each reference for which ``rewrite(reference, path)`` gives a value."""
    for path, holder in reference_dicts(resource, root):
        replacement = rewrite(holder["reference"], f"{path}.reference")
        if replacement is not None:
            holder["reference"] = replacement
