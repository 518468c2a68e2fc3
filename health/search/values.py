"""From FHIR values to index rows, and the value ranges both sides of a search compare.

FHIR R4 search.html says how each data type is searched; this module turns the elements a
parameter's expression selects into the columns of that parameter type's table, and parses
the dates and numbers of search values with the same precision rules.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from health.search.definitions import SearchParam
from health.search.fhirpath import Node
from health.search.models import CODE_MAX, TEXT_MAX, URI_MAX

Row = dict[str, Any]

# Open ends of Periods and the widest ranges: the table columns are NOT NULL so that every
# comparison is a plain range test on one index.
DATE_MIN = datetime(1, 1, 1, tzinfo=UTC)
DATE_MAX = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

# FHIR R4 datatypes.html#dateTime (and #instant, #date): precision is what was written.
_DATE = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?"
)

# ContactPoint.system codes (FHIR R4 valueset-contact-point-system): a ContactPoint is
# searched by its value alone, an Identifier by system and value.
_CONTACT_SYSTEMS = {"phone", "fax", "email", "pager", "url", "sms", "other"}
# Elements of HumanName and Address that are not text to be searched.
_NOT_TEXT = {"use", "type", "id"}


def normalize(text: str) -> str:
    """Lower case, accents removed, spaces collapsed (the default string match)."""
    if text.isascii():
        return " ".join(text.lower().split())[:TEXT_MAX]
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())[:TEXT_MAX]


def date_range(text: str) -> tuple[datetime, datetime] | None:
    """The instants ``text`` covers at its precision, both inclusive; None if not a date."""
    match = _DATE.fullmatch(text.strip())
    if match is None:
        return None
    try:
        start, end = _precision_range(match.groupdict())
    except (ValueError, OverflowError):
        return None
    return start, DATE_MAX if end is None else end - _TICK


def _precision_range(parts: dict[str, str | None]) -> tuple[datetime, datetime | None]:
    """[start, end) of a matched date at the precision it was written with (end None: past
    the last representable instant, i.e. the range runs to the end of year 9999)."""
    number = {k: int(v) for k, v in parts.items() if v is not None and k not in ("zone",)}
    if "month" not in number:
        start = datetime(number["year"], 1, 1, tzinfo=UTC)
        return start, _next_year(start)
    if "day" not in number:
        start = datetime(number["year"], number["month"], 1, tzinfo=UTC)
        return start, _next_month(start)
    if "hour" not in number:
        start = datetime(number["year"], number["month"], number["day"], tzinfo=UTC)
        return start, start + timedelta(days=1)
    start = datetime(
        number["year"],
        number["month"],
        number["day"],
        number["hour"],
        number["minute"],
        number.get("second", 0),
        tzinfo=_zone(parts["zone"]),
    ).astimezone(UTC)
    if "second" not in number:
        return start, start + timedelta(minutes=1)
    fraction = parts["fraction"]
    if fraction is None:
        return start, start + timedelta(seconds=1)
    digits = min(len(fraction), 6)
    start += timedelta(microseconds=int(fraction[:digits].ljust(6, "0")))
    return start, start + timedelta(microseconds=10 ** (6 - digits))


_TICK = timedelta(microseconds=1)


def _zone(text: str | None) -> timezone:
    # A dateTime with a time but no zone is read as UTC (R4 leaves it to the server).
    if text is None or text == "Z":
        return UTC
    sign = 1 if text[0] == "+" else -1
    return timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[4:6])))


def _next_year(start: datetime) -> datetime | None:
    if start.year == 9999:
        return None
    return start.replace(year=start.year + 1)


def _next_month(start: datetime) -> datetime | None:
    if start.month == 12:
        return _next_year(start.replace(month=1))
    return start.replace(month=start.month + 1)


def number_range(text: str) -> tuple[float, float, float] | None:
    """The value and the range its precision implies (search.html#number): "100" is
    [99.5, 100.5), "100.00" is [99.995, 100.005). None if ``text`` is not a number."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5) * Decimal(10) ** (exponent - 1)
    return float(number), float(number - half), float(number + half)


def _cut(value: Any, length: int) -> str | None:
    return value[:length] if isinstance(value, str) and value else None


# --- Rows per parameter type ---------------------------------------------------------------


def string_rows(node: Node) -> Iterator[Row]:
    value = node.value
    texts: list[str] = []
    if isinstance(value, str):
        texts.append(value)
    elif isinstance(value, dict):
        # HumanName and Address: each part is searchable on its own (search.html#string).
        for key, part in value.items():
            if key in _NOT_TEXT:
                continue
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, list):
                texts.extend(p for p in part if isinstance(p, str))
    for text in texts:
        if text.strip():
            yield {"normalized": normalize(text), "value": text}


def token_rows(node: Node) -> Iterator[Row]:
    value = node.value
    if isinstance(value, bool):
        yield {"system": None, "code": "true" if value else "false", "text": None}
    elif isinstance(value, str):
        yield {"system": None, "code": _cut(value, CODE_MAX), "text": None}
    elif isinstance(value, dict):
        if "coding" in value or ("text" in value and "value" not in value):
            # CodeableConcept: every coding, and its text for :text.
            for coding in value.get("coding") or []:
                if isinstance(coding, dict):
                    yield from _coding_row(coding)
            if isinstance(value.get("text"), str):
                yield {"system": None, "code": None, "text": normalize(value["text"])}
        elif "value" in value and (
            value.get("system") in _CONTACT_SYSTEMS or not isinstance(value.get("system"), str)
        ):
            # ContactPoint (or an Identifier without system): the value is the code.
            yield {"system": None, "code": _cut(value.get("value"), CODE_MAX), "text": None}
        elif "value" in value:
            # Identifier: system|value; its type's text for :text.
            kind = value.get("type")
            text = kind.get("text") if isinstance(kind, dict) else None
            yield {
                "system": _cut(value.get("system"), URI_MAX),
                "code": _cut(value.get("value"), CODE_MAX),
                "text": normalize(text) if isinstance(text, str) else None,
            }
        elif "code" in value or "system" in value:
            yield from _coding_row(value)


def _coding_row(coding: dict[str, Any]) -> Iterator[Row]:
    display = coding.get("display")
    yield {
        "system": _cut(coding.get("system"), URI_MAX),
        "code": _cut(coding.get("code"), CODE_MAX),
        "text": normalize(display) if isinstance(display, str) else None,
    }


def date_rows(node: Node) -> Iterator[Row]:
    value = node.value
    if isinstance(value, str):
        found = date_range(value)
        if found:
            yield {"start": found[0], "end": found[1]}
    elif isinstance(value, dict):
        if "start" in value or "end" in value:  # Period: open ends are unbounded
            start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
            end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
            yield {
                "start": start[0] if start else DATE_MIN,
                "end": end[1] if end else DATE_MAX,
            }
        for event in value.get("event") or []:  # Timing
            if isinstance(event, str) and (found := date_range(event)):
                yield {"start": found[0], "end": found[1]}


def parse_reference(text: str) -> tuple[str | None, str | None]:
    """(type, id) of a local reference ``Type/id[/_history/v]``; (type, None) for an absolute
    URL whose path ends in ``Type/id``; (None, None) for anything else."""
    text = text.split("?", 1)[0]
    parts = text.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-2][:1].isupper() or not parts[-2].isalpha():
        return None, None
    if "://" in text:
        return parts[-2], None
    if len(parts) != 2:
        return None, None
    return parts[0], parts[1][:64]


def reference_rows(node: Node) -> Iterator[Row]:
    value = node.value
    text = value.get("reference") if isinstance(value, dict) else value
    if not isinstance(text, str) or not text or text.startswith("#"):
        return
    target_type, target_id = parse_reference(text)
    yield {
        "target_type": target_type,
        "target_id": target_id,
        "url": None if target_id else text[:URI_MAX],
    }


def quantity_rows(node: Node) -> Iterator[Row]:
    value = node.value
    if not isinstance(value, dict):
        return
    if isinstance(value.get("value"), int | float) and not isinstance(value["value"], bool):
        number = float(value["value"])
        yield {
            "low": number,
            "high": number,
            "system": _cut(value.get("system"), URI_MAX),
            # Money carries its currency where a Quantity carries its code.
            "code": _cut(value.get("code") or value.get("currency"), CODE_MAX),
            "unit": _cut(value.get("unit"), CODE_MAX),
        }
    elif "low" in value or "high" in value:  # Range
        low, high = _object(value.get("low")), _object(value.get("high"))
        unit = low if low.get("value") is not None else high
        yield {
            "low": _float(low.get("value")),
            "high": _float(high.get("value")),
            "system": _cut(unit.get("system"), URI_MAX),
            "code": _cut(unit.get("code"), CODE_MAX),
            "unit": _cut(unit.get("unit"), CODE_MAX),
        }


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def number_rows(node: Node) -> Iterator[Row]:
    number = _float(node.value)
    if number is not None:
        yield {"low": number, "high": number}


def uri_rows(node: Node) -> Iterator[Row]:
    if isinstance(node.value, str) and node.value:
        yield {"uri": node.value[:URI_MAX]}


ROWS = {
    "string": string_rows,
    "token": token_rows,
    "date": date_rows,
    "reference": reference_rows,
    "quantity": quantity_rows,
    "number": number_rows,
    "uri": uri_rows,
}


def composite_rows(param: SearchParam, node: Node) -> Iterator[Row]:
    """The combinations of the components' values within one element (search.html#composite)."""
    first, second = param.components[0], param.components[1]
    codes = [
        row
        for item in first.expression.evaluator([node], node)
        for row in token_rows(item)
        if row["code"] is not None
    ]
    if not codes:
        return
    seconds = [
        _second_component(second.type, row)
        for item in second.expression.evaluator([node], node)
        for row in ROWS[second.type](item)
    ]
    for code in codes:
        for other in seconds:
            yield {"c1_system": code["system"], "c1_code": code["code"], **other}


def _second_component(kind: str, row: Row) -> Row:
    empty: Row = {
        "c2_system": None,
        "c2_code": None,
        "c2_low": None,
        "c2_high": None,
        "c2_start": None,
        "c2_end": None,
        "c2_text": None,
    }
    if kind == "token":
        return {**empty, "c2_system": row["system"], "c2_code": row["code"], "c2_text": row["text"]}
    if kind == "quantity":
        return {
            **empty,
            "c2_system": row["system"],
            "c2_code": row["code"] or row["unit"],
            "c2_low": row["low"],
            "c2_high": row["high"],
        }
    if kind == "date":
        return {**empty, "c2_start": row["start"], "c2_end": row["end"]}
    if kind == "string":
        return {**empty, "c2_text": row["normalized"]}
    return empty


def rows_for(param: SearchParam, resource: dict[str, Any]) -> Iterator[Row]:
    """The index rows of one parameter of one resource (without the identifying columns)."""
    nodes = param.expression.evaluate(resource)
    if param.type == "composite":
        for node in nodes:
            yield from composite_rows(param, node)
        return
    make = ROWS[param.type]
    for node in nodes:
        yield from make(node)
