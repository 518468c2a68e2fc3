"""The subset of FHIRPath that the R4 SearchParameter expressions use, compiled once.

Hand-written rather than a general FHIRPath library because indexing runs on every write
(a Synthea bundle is thousands of resources) and the definitions use a small, fixed subset:
paths, ``|`` unions, ``as`` / ``.as()`` / ``ofType()`` / ``is``, ``.where(...)`` with
``resolve() is Type`` or a simple equality, ``exists()``, ``and``, ``=`` / ``!=`` against
literals (FHIRPath N1, http://hl7.org/fhirpath/N1/). Every expression in ``parameters.json``
compiles (a test says so); anything outside the subset is a :class:`FhirPathError` at load time,
never a silent empty index.

Values are navigated on the resource's JSON. Choice elements (``value[x]``) are found by
their JSON names (``valueQuantity``), which also gives the type that ``as`` checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any


class FhirPathError(ValueError):
    """An expression outside the supported subset."""


@dataclass(slots=True)  # not frozen: built for every element visited, frozen init is slower
class Node:
    """One item of a FHIRPath collection: a JSON value and its FHIR type when known."""

    value: Any
    type: str | None = None


Nodes = list[Node]
Evaluator = Callable[[Nodes, Node], Nodes]

# Quantity's specialisations (FHIR R4 datatypes.html#quantity): ``as Quantity`` keeps them.
_QUANTITY_KINDS = {"quantity", "age", "count", "distance", "duration", "simplequantity", "money"}

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>!=|[.()|=,])|(?P<number>\d+(?:\.\d+)?))"
)


def split_union(expression: str) -> list[str]:
    """The top-level ``|`` alternatives of a FHIRPath expression (parentheses respected)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for index, char in enumerate(expression):
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == "|":
            parts.append(expression[start:index].strip())
            start = index + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise FhirPathError(f"cannot read FHIRPath at {text[position:]!r}")
        tokens.append(match.group().strip())
        position = match.end()
    return tokens


def _type_matches(node: Node, type_name: str) -> bool:
    if node.type is None:
        return False
    have, want = node.type.lower(), type_name.lower()
    return have == want or (want == "quantity" and have in _QUANTITY_KINDS)


def _children(node: Node, name: str, *, choice: bool) -> Iterator[Node]:
    value = node.value
    if not isinstance(value, dict):
        return
    if name in value:
        found = value[name]
        items = found if isinstance(found, list) else [found]
        for item in items:
            if item is not None:
                yield Node(item)
        return
    if not choice:
        return
    # A choice element: value[x] is stored as valueQuantity, valueString, ...
    for key, found in value.items():
        if key.startswith(name) and len(key) > len(name) and key[len(name)].isupper():
            items = found if isinstance(found, list) else [found]
            for item in items:
                if item is not None:
                    yield Node(item, key[len(name) :])


def _reference_type(node: Node) -> str | None:
    """The type a Reference points at (``resolve() is Patient``) without resolving it."""
    value = node.value
    if isinstance(value, dict):
        if isinstance(value.get("type"), str):
            return str(value["type"])
        value = value.get("reference")
    if not isinstance(value, str):
        return None
    parts = value.split("?", 1)[0].split("/")
    # "Patient/123", "Patient/123/_history/2", "https://host/fhir/Patient/123"
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return parts[-2]
    return None


class _Parser:
    def __init__(self, text: str, choices: Collection[str] | None) -> None:
        self.choices = choices
        self.text = text
        self.tokens = _tokenize(text)
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise FhirPathError(f"expected {expected or 'more'} in {self.text!r}")
        self.position += 1
        return token

    def parse(self) -> Evaluator:
        evaluator = self.expression()
        if self.peek() is not None:
            raise FhirPathError(f"unexpected {self.peek()!r} in {self.text!r}")
        return evaluator

    # Precedence, loosest first (FHIRPath N1 section 6.7): and, = / !=, |, is / as, paths.
    def expression(self) -> Evaluator:
        left = self.equality()
        while self.peek() == "and":
            self.take()
            right = self.equality()
            left = _and(left, right)
        return left

    def equality(self) -> Evaluator:
        left = self.union()
        if self.peek() in ("=", "!="):
            negate = self.take() == "!="
            right = self.union()
            return _equals(left, right, negate=negate)
        return left

    def union(self) -> Evaluator:
        parts = [self.typed()]
        while self.peek() == "|":
            self.take()
            parts.append(self.typed())
        if len(parts) == 1:
            return parts[0]

        def evaluate(focus: Nodes, root: Node) -> Nodes:
            result: Nodes = []
            for part in parts:
                result.extend(part(focus, root))
            return result

        return evaluate

    def typed(self) -> Evaluator:
        inner = self.path()
        while self.peek() in ("as", "is"):
            operator = self.take()
            inner = _type_operator(inner, operator, self.take())
        return inner

    def path(self) -> Evaluator:
        current = self.primary()
        while self.peek() == ".":
            self.take()
            current = self.invocation(current)
        return current

    def primary(self) -> Evaluator:
        word = self.peek()
        if word == "(":
            self.take()
            inner = self.expression()
            self.take(")")
            return inner
        if word is None:
            raise FhirPathError(f"expression ends early: {self.text!r}")
        if word.startswith("'"):
            self.take()
            literal = Node(word[1:-1].replace("\\'", "'"), "string")
            return lambda focus, root: [literal]
        if word in ("true", "false"):
            self.take()
            boolean = Node(word == "true", "boolean")
            return lambda focus, root: [boolean]
        if word[0].isupper() and self.tokens[self.position + 1 : self.position + 2] != ["("]:
            # A type name at the start of a path is the resource itself: Patient.name
            self.take()
            type_name = word
            return lambda focus, root: [
                n for n in focus if n.type == type_name or n.value is root.value
            ]

        def identity(focus: Nodes, root: Node) -> Nodes:
            return focus

        return self.invocation(identity)

    def invocation(self, source: Evaluator) -> Evaluator:
        name = self.take()
        if not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise FhirPathError(f"expected a name, got {name!r} in {self.text!r}")
        if self.peek() != "(":
            return _member(source, name, choice=self.choices is None or name in self.choices)
        self.take("(")
        if name in ("where", "exists"):
            argument = self.expression() if self.peek() != ")" else None
            self.take(")")
            return _where(source, argument) if name == "where" else _exists(source, argument)
        if name in ("as", "ofType", "is"):
            type_name = self.take()
            self.take(")")
            return _type_operator(source, "is" if name == "is" else "as", type_name)
        if name == "resolve":
            self.take(")")
            return _resolve(source)
        if name == "first":
            self.take(")")
            return lambda focus, root: source(focus, root)[:1]
        raise FhirPathError(f"function {name}() is not supported in {self.text!r}")


def _member(source: Evaluator, name: str, *, choice: bool) -> Evaluator:
    def evaluate(focus: Nodes, root: Node) -> Nodes:
        return [
            child for node in source(focus, root) for child in _children(node, name, choice=choice)
        ]

    return evaluate


def _where(source: Evaluator, criterion: Evaluator | None) -> Evaluator:
    if criterion is None:
        raise FhirPathError("where() needs a criterion")

    def evaluate(focus: Nodes, root: Node) -> Nodes:
        kept = []
        for node in source(focus, root):
            verdict = criterion([node], root)
            if len(verdict) == 1 and verdict[0].value is True:
                kept.append(node)
        return kept

    return evaluate


def _exists(source: Evaluator, criterion: Evaluator | None) -> Evaluator:
    def evaluate(focus: Nodes, root: Node) -> Nodes:
        items = source(focus, root)
        if criterion is not None:
            items = _where(lambda f, r: items, criterion)(focus, root)
        return [Node(bool(items), "boolean")]

    return evaluate


def _resolve(source: Evaluator) -> Evaluator:
    # Only the type of the target matters to the definitions (``resolve() is Patient``), and
    # it is written in the reference itself; the target is never fetched.
    def evaluate(focus: Nodes, root: Node) -> Nodes:
        resolved = []
        for node in source(focus, root):
            target_type = _reference_type(node)
            if target_type is not None:
                resolved.append(Node(node.value, target_type))
        return resolved

    return evaluate


def _type_operator(source: Evaluator, operator: str, type_name: str) -> Evaluator:
    if operator == "as":
        return lambda focus, root: [n for n in source(focus, root) if _type_matches(n, type_name)]

    def evaluate(focus: Nodes, root: Node) -> Nodes:
        items = source(focus, root)
        if len(items) != 1:
            return []
        return [Node(_type_matches(items[0], type_name), "boolean")]

    return evaluate


def _and(left: Evaluator, right: Evaluator) -> Evaluator:
    # FHIRPath N1 section 6.5.1: three-valued logic; an empty operand is "unknown".
    def evaluate(focus: Nodes, root: Node) -> Nodes:
        a, b = _boolean(left(focus, root)), _boolean(right(focus, root))
        if a is False or b is False:
            return [Node(False, "boolean")]
        if a is None or b is None:
            return []
        return [Node(True, "boolean")]

    return evaluate


def _equals(left: Evaluator, right: Evaluator, *, negate: bool) -> Evaluator:
    # FHIRPath N1 section 6.1.1: empty on either side gives empty.
    def evaluate(focus: Nodes, root: Node) -> Nodes:
        a, b = left(focus, root), right(focus, root)
        if not a or not b:
            return []
        same = len(a) == len(b) and all(x.value == y.value for x, y in zip(a, b, strict=True))
        return [Node(same != negate, "boolean")]

    return evaluate


def _boolean(items: Nodes) -> bool | None:
    if not items:
        return None
    if len(items) == 1 and isinstance(items[0].value, bool):
        return items[0].value
    return True


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression; call :meth:`evaluate` on a resource or on an element."""

    text: str
    evaluator: Evaluator

    def evaluate(self, value: Any, *, type_name: str | None = None) -> Nodes:
        if type_name is None and isinstance(value, dict):
            type_name = value.get("resourceType")
        node = Node(value, type_name)
        return self.evaluator([node], node)


def compile_expression(text: str, *, choices: Collection[str] | None = None) -> Expression:
    """Compile ``text``; :class:`FhirPathError` when it is outside the supported subset.

    ``choices`` names the choice elements (``value`` of ``value[x]``): only those are looked
    for under their typed JSON names, which saves scanning every object's keys (None: all).
    """
    return Expression(text, _Parser(text, choices).parse())
