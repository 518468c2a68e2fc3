"""Page cursors: where the next page of a search starts (keyset paging).

A ``next`` link carries ``_cursor``: the offset of the page (for ``previous`` links and the
free total on the last page) and the sort key of the last resource shown, (sort values...,
id). The next page is "the resources after that key" in the search's total order, which stays
right when resources are written between two requests, where an offset would repeat or skip
them. The cursor is opaque to clients (FHIR R4 search.html#paging leaves links to the server)
and carries nothing but values the client has already been shown.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import orjson

from services.kit.errors import Problem

_MAX_CURSOR = 4096


def encode_cursor(offset: int, key: list[Any]) -> str:
    values = [{"t": v.isoformat()} if isinstance(v, datetime) else v for v in key]
    return base64.urlsafe_b64encode(orjson.dumps([offset, values])).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, list[Any]]:
    """(offset, key); Problem 400 for anything that is not a cursor this server made."""
    try:
        if len(text) > _MAX_CURSOR:
            raise ValueError("too long")
        raw = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        offset, values = raw
        if not isinstance(offset, int) or offset < 0 or not isinstance(values, list) or not values:
            raise ValueError("wrong shape")
        key = [_value(v) for v in values]
        if not isinstance(key[-1], str):
            raise ValueError("no id")
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise Problem(
            400, "search parameter '_cursor': not a page cursor of this server", parameter="_cursor"
        ) from None
    return offset, key


def _value(value: Any) -> Any:
    if isinstance(value, dict):
        return datetime.fromisoformat(value["t"])
    if value is None or isinstance(value, str | int | float):
        return value
    raise ValueError("not a sort value")
