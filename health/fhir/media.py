"""FHIR JSON on the wire: application/fhir+json both ways, _format (FHIR R4 http.html#mime-type).

Only JSON is served; a client asking for XML or Turtle, by ``_format`` or ``Accept``, gets 406,
and a body in another format 415, rather than JSON it did not ask for.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from services.kit.errors import Problem
from services.kit.fhir_outcome import FHIR_JSON

JSON_PATCH = "application/json-patch+json"

# FHIR R4 http.html#mime-type: "json", and the JSON mime types (with the DSTU2 one still seen).
_JSON_FORMATS = frozenset(
    {"json", "application/json", "application/fhir+json", "application/json+fhir", "text/json"}
)
_ACCEPTABLE = _JSON_FORMATS | {"*/*", "application/*"}


def _bare(media_type: str) -> str:
    return media_type.split(";", 1)[0].strip().lower()


def check_format(request: Request) -> None:
    """406 unless the client accepts JSON (by ``_format``, which wins, or by ``Accept``)."""
    requested = request.query_params.get("_format")
    if requested is not None:
        if _bare(requested) not in _JSON_FORMATS:
            raise Problem(406, f"_format {requested!r} is not supported: this server speaks JSON")
        return
    accept = request.headers.get("accept")
    if accept and not any(_bare(part) in _ACCEPTABLE for part in accept.split(",")):
        raise Problem(406, f"Accept {accept!r} names no JSON format: this server speaks JSON")


async def accepts_json(request: Request) -> None:
    """:func:`check_format` as a route dependency: async, so FastAPI runs it on the event loop
    instead of hopping to its thread pool for every request (a sync dependency costs that)."""
    check_format(request)


def check_body_type(request: Request, *allowed: str) -> None:
    """415 unless the body is FHIR JSON (or one of ``allowed``, e.g. JSON Patch)."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return  # RFC 9110 section 8.3: the recipient may assume; JSON is all we read
    bare = _bare(content_type)
    if bare not in _JSON_FORMATS and bare not in allowed:
        raise Problem(415, f"Content-Type {content_type!r} is not supported: send {FHIR_JSON}")


async def read_json(request: Request) -> Any:
    """The request body parsed as JSON; 400 naming the parse error otherwise."""
    body = await request.body()
    if not body:
        raise Problem(400, "the request has no body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}") from None


def fhir_json(
    body: Any, *, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A response with a FHIR JSON body (``body`` already serialized when it is bytes)."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(content, status_code=status_code, media_type=FHIR_JSON, headers=headers)


def base_url(request: Request) -> str:
    """The FHIR base the client used: the gateway's X-Forwarded-* when present (gateway/proxy)."""
    proto = request.headers.get("x-forwarded-proto") or request.url.scheme
    host = request.headers.get("x-forwarded-host") or request.headers.get("host")
    if not host:
        host = request.url.netloc
    return f"{proto}://{host}/fhir"
