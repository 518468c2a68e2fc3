"""Forwarding one request to one service: streamed both ways, over a pooled connection.

What crosses unchanged: method, path, query, body, the caller's ``Authorization`` header
(services decide on the user's own token, DESIGN.md). What the gateway adds: ``X-Request-ID``
and the RFC 7239-style ``X-Forwarded-*`` headers so services can build absolute URLs (FHIR
paging links start with the base URL the client used). Nothing else: the gateway's shared HTTP
client contributes no headers (user agent, accepted encodings) and keeps no cookies of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from http.cookiejar import Cookie, CookieJar
from typing import Any
from urllib.parse import quote

import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send

from gateway.breaker import CircuitBreaker
from services.kit.context import current_request_id
from services.kit.errors import Problem
from services.kit.topology import ServiceSpec
from services.kit.transport import AsyncioTransport

log = logging.getLogger(__name__)

# Request fields not forwarded as received. RFC 9110 section 7.6.1: connection-specific fields
# (plus those the Connection field names) stop at an intermediary. Host and the framing are
# the outgoing connection's own; the forwarding fields and the request id the gateway states
# itself, so a caller cannot forge them.
_REQUEST_SKIP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-request-id",
    }
)
# Connection-specific response fields stop here too. The gateway's own server adds date and
# server; the service's copies would be duplicates.
_RESPONSE_SKIP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"upgrade",
        b"trailer",
        b"proxy-authenticate",
        b"date",
        b"server",
    }
)
# RFC 9110 section 9.2.2: these may be repeated without changing the outcome.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Failures of the connection itself (refused, reset, dropped before an answer, a stale pooled
# connection): a retry of an idempotent request on a fresh connection may well succeed.
_RETRYABLE = (httpx.NetworkError, httpx.RemoteProtocolError)
# What may stand unescaped in a forwarded path (RFC 3986 pchar and "/"), or in a query (plus
# "?"); "%" keeps the escapes the caller made. Anything else is percent-encoded.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
# A response body of at most this many bytes, its length known, is relayed without watching
# for the caller hanging up: it ends within the read timeout anyway, and the watch costs a task.
_SMALL_BODY = 64 * 1024


class BodyTooLarge(Exception):
    pass


class _NoCookies(CookieJar):
    """The gateway's clients are shared by every caller: a cookie a service sets belongs to
    the caller it answered, so the gateway never keeps one (it would send it for the next)."""

    def set_cookie(self, cookie: Cookie) -> None:
        return None

    def extract_cookies(self, *args: Any, **kwargs: Any) -> None:
        return None


# Connections kept open to one service between requests. httpcore's pool scans its connections
# twice per request, in quadratic time over the idle ones, so a pool that grew in a burst and
# kept every connection made each later request pay for it; past this many idle connections,
# the pool closes them. Sized for the concurrency a gateway sustains per service (the benchmark
# runs 8); a burst still opens up to MAX_CONNECTIONS.
MAX_KEEPALIVE = 16
MAX_CONNECTIONS = 200


class Upstream:
    """One service as the gateway sees it: its pool of connections and its circuit breaker."""

    def __init__(
        self,
        spec: ServiceSpec,
        base_url: str,
        *,
        timeout: float,
        connect_timeout: float,
        breaker: CircuitBreaker,
    ) -> None:
        self.spec = spec
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.breaker = breaker
        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE
        )
        timeouts = httpx.Timeout(timeout, connect=connect_timeout, pool=connect_timeout)
        # Forwarding sends through the client's transport itself: AsyncClient.send adds auth
        # flows, redirect handling, a cookie jar (rebuilt as a urllib request for every
        # response) and a log line, none of which a gateway may use, for 50-75 µs of CPU per
        # request (measured). The timeouts travel as the request extension AsyncClient sets.
        self.transport: httpx.AsyncBaseTransport = (
            AsyncioTransport(limits=limits)
            if self.base_url.startswith("http://")
            else httpx.AsyncHTTPTransport(limits=limits, trust_env=False, http2=False)
        )
        self.timeouts = timeouts.as_dict()
        # The same pool, for the gateway's own calls (its /healthz probes); it owns and closes
        # the transport.
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeouts,
            transport=self.transport,
            trust_env=False,
            cookies=_NoCookies(),
        )

    def unavailable(self, why: str) -> Problem:
        return Problem(
            503,
            f"the {self.spec.name} service is unavailable ({why}); other services are unaffected",
            title="Service Unavailable",
            headers={"Retry-After": str(max(1, self.breaker.retry_after()))},
            service=self.spec.name,
        )


class ServiceProxy:
    """ASGI app forwarding every request under a service's prefixes to that service."""

    def __init__(self, spec: ServiceSpec) -> None:
        self.spec = spec

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state.gateway
        upstream: Upstream = state.upstreams[self.spec.name]
        request = Request(scope, receive)
        for admit in state.admissions:
            await admit(request, self.spec)

        head = _RequestHead(scope["headers"])
        declared = head.declared_length()
        if declared is not None and declared > state.max_body_bytes:
            raise Problem(413, _too_large(state.max_body_bytes))
        has_body = bool(declared) or head.chunked

        # Built before the breaker is asked: a request refused here must not take the one
        # half-open probe with it.
        outgoing = httpx.Request(
            scope["method"],
            _target_url(upstream.base_url, scope),
            headers=_forward_headers(scope, head, declared),
            content=_limited(request, state.max_body_bytes) if has_body else None,
            extensions={"timeout": upstream.timeouts},
        )
        if not upstream.breaker.allow():
            raise upstream.unavailable("circuit open after repeated failures")
        attempts = (
            state.idempotent_attempts if (scope["method"] in IDEMPOTENT and not has_body) else 1
        )
        try:
            response = await self._send(upstream, outgoing, attempts, state.max_body_bytes)
        except ClientDisconnect:
            # The caller hung up mid-upload: nobody to answer, and no fault of the service.
            log.info("caller went away during upload", extra={"service": self.spec.name})
            return
        try:
            await _relay(response, receive, send)
        finally:
            await response.aclose()

    async def _send(
        self, upstream: Upstream, outgoing: httpx.Request, attempts: int, max_body: int
    ) -> httpx.Response:
        for attempt in range(1, attempts + 1):
            try:
                response = await upstream.transport.handle_async_request(outgoing)
            except BodyTooLarge:
                upstream.breaker.release_probe()
                raise Problem(413, _too_large(max_body)) from None
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) and attempt < attempts:
                    continue
                upstream.breaker.record_failure()
                if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                    raise upstream.unavailable("connection timed out") from None
                raise Problem(
                    504,
                    f"the {upstream.spec.name} service did not answer within "
                    f"{upstream.timeout:g} s",
                    service=upstream.spec.name,
                ) from None
            except _RETRYABLE as exc:
                if attempt < attempts:
                    log.info("retrying idempotent request", extra={"service": upstream.spec.name})
                    continue
                upstream.breaker.record_failure()
                raise upstream.unavailable(f"not reachable: {type(exc).__name__}") from None
            except BaseException:
                upstream.breaker.release_probe()
                raise
            upstream.breaker.record_success()
            return response
        raise AssertionError("unreachable: the loop returns or raises")


class _RequestHead:
    """What forwarding needs to know of the request's header fields, found in one pass."""

    __slots__ = ("chunked", "connection", "content_length", "fields", "forwarded_for", "host")

    def __init__(self, fields: list[tuple[bytes, bytes]]) -> None:
        self.fields = fields
        self.content_length: list[bytes] = []
        self.connection: list[bytes] = []
        self.chunked = False
        self.forwarded_for: bytes | None = None
        self.host: bytes | None = None
        for name, value in fields:
            if name == b"content-length":
                self.content_length.append(value)
            elif name == b"transfer-encoding":
                self.chunked = True
            elif name == b"connection":
                self.connection.append(value)
            elif name == b"x-forwarded-for":
                if self.forwarded_for is None:
                    self.forwarded_for = value
            elif name == b"host" and self.host is None:
                self.host = value

    def declared_length(self) -> int | None:
        """The body size the caller declared, if any; refused unless it is one plain number."""
        values = [v.decode("latin-1") for v in self.content_length]
        if not values:
            return None
        # RFC 9112 section 6.3: a list of identical values may stand for one; differing ones
        # (or anything but ASCII digits: "1²".isdigit() is true) make the framing unknowable.
        distinct = {part.strip() for value in values for part in value.split(",")}
        length = distinct.pop() if len(distinct) == 1 else ""
        if not (length.isascii() and length.isdigit()):
            received = ", ".join(values)[:40]
            raise Problem(
                400, f"Content-Length must be one whole number of bytes, not {received!r}"
            )
        return int(length)


async def _relay(response: httpx.Response, receive: Receive, send: Send) -> None:
    """The service's response to the caller, chunk by chunk as it arrives."""
    headers, length = _response_headers(response)
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    # The chunk that completes a declared length goes out as the last one (no empty closing
    # message). Once the caller hangs up the server silently drops what we send, so relaying
    # alone would keep pulling from the service, for ever on an endless stream. Unless the
    # body is small, watch for the disconnect and stop at the next chunk (closing the
    # service's connection when the response is closed).
    remaining = -1 if length is None else length
    small = 0 <= remaining <= _SMALL_BODY
    caller_gone = None if small else asyncio.create_task(_disconnected(receive))
    complete = False
    try:
        async for chunk in response.aiter_raw():
            if caller_gone is not None and caller_gone.done():
                log.info("caller went away during the response")
                return
            remaining -= len(chunk)
            complete = remaining == 0
            await send({"type": "http.response.body", "body": chunk, "more_body": not complete})
        if not complete:
            await send({"type": "http.response.body", "body": b""})
    finally:
        if caller_gone is not None:
            caller_gone.cancel()


async def _disconnected(receive: Receive) -> None:
    # The request body is consumed by now; what is left to receive is the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass


def _too_large(limit: int) -> str:
    return f"request body exceeds the gateway limit of {limit} bytes"


def _target_url(base_url: str, scope: Scope) -> httpx.URL:
    """The service's URL for this request: the path and query exactly as the caller sent them.

    ASGI's ``path`` is percent-decoded, so "a%2Fb" would become "a/b" and "a%3Fb" a query;
    the raw path keeps the caller's bytes. Dot segments are refused: httpx would resolve them,
    and "/identity/../audit/x" would reach the service as a path other than the one routed.
    """
    if any(segment in (".", "..") for segment in scope["path"].split("/")):
        raise Problem(400, "the path contains a dot segment ('.' or '..'); send it resolved")
    raw_path: bytes | None = scope.get("raw_path")
    if raw_path is not None:
        path = quote(raw_path.partition(b"?")[0], safe=_PATH_SAFE)
    else:  # a server that does not give the raw path: re-encode the decoded one fully
        path = quote(scope["path"], safe=_PATH_SAFE.replace("%", ""))
    query = quote(scope["query_string"], safe=_QUERY_SAFE)
    try:
        return httpx.URL(base_url + path + (f"?{query}" if query else ""))
    except httpx.InvalidURL as exc:
        raise Problem(400, f"the request target cannot be forwarded: {exc}") from None


def _connection_options(values: list[str]) -> frozenset[bytes]:
    """Field names listed in Connection: hop-by-hop as well (RFC 9110 section 7.6.1)."""
    return frozenset(
        name.strip().lower().encode("latin-1")
        for value in values
        for name in value.split(",")
        if name.strip()
    )


def _forward_headers(
    scope: Scope, head: _RequestHead, declared: int | None
) -> list[tuple[bytes, bytes]]:
    skip = _REQUEST_SKIP
    if head.connection:
        skip = skip | _connection_options([v.decode("latin-1") for v in head.connection])
    headers = [(k, v) for k, v in head.fields if k.lower() not in skip]
    # RFC 9112 section 6.1: with Transfer-Encoding, a Content-Length is not to be trusted.
    if declared is not None and not head.chunked:
        headers.append((b"content-length", str(declared).encode()))
    client = scope.get("client")
    peer = (client[0] if client else "unknown").encode()
    headers.append(
        (
            b"x-forwarded-for",
            head.forwarded_for + b", " + peer if head.forwarded_for else peer,
        )
    )
    if head.host:
        headers.append((b"x-forwarded-host", head.host))
    headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
    request_id = current_request_id()
    if request_id:
        headers.append((b"x-request-id", request_id.encode()))
    return headers


def _response_headers(response: httpx.Response) -> tuple[list[tuple[bytes, bytes]], int | None]:
    """The fields to relay, and the body length the service declared (if one plain number)."""
    # Lowercased, as ASGI requires: the request-id middleware replaces "x-request-id" by exact
    # name, and a service's "X-Request-ID" would otherwise reach the caller as a second id.
    fields = [(k.lower(), v) for k, v in response.headers.raw]
    skip = _RESPONSE_SKIP
    connection = [v.decode("latin-1") for k, v in fields if k == b"connection"]
    if connection:
        skip = skip | _connection_options(connection)
    relayed = []
    length = None
    for name, value in fields:
        if name in skip:
            continue
        if name == b"content-length" and value.isdigit():
            length = int(value)
        relayed.append((name, value))
    return relayed, length


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body as it arrives, aborted once it passes ``limit`` (chunked uploads)."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge
        if chunk:
            yield chunk
