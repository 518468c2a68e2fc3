"""Forwarding one request to one service: streamed both ways, over a pooled connection.

What crosses unchanged: method, path, query, body, the caller's ``Authorization`` header
(services decide on the user's own token, DESIGN.md). What the gateway adds: ``X-Request-ID``
and the RFC 7239-style ``X-Forwarded-*`` headers so services can build absolute URLs (FHIR
paging links start with the base URL the client used). Nothing else: the gateway's shared HTTP
client contributes no headers (user agent, accepted encodings, a content type) and keeps no
cookies of its own.

The client is aiohttp, one session (one connection pool) per service, its HTTP parser in C.
httpx, httpcore and h11 were about half of the gateway's CPU per forwarded request (py-spy);
with aiohttp the gateway's CPU per forwarded POST of a small JSON body went from about 500 to
about 210 µs (concurrency 8, old and new side by side in interleaved rounds on one machine).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import certifi
from aiohttp import hdrs
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send
from yarl import URL

from gateway.breaker import CircuitBreaker
from services.kit.context import current_request_id
from services.kit.errors import Problem
from services.kit.topology import ServiceSpec

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
# connection) and an answer that is not HTTP (aiohttp reports a malformed one as a response
# error): a retry of an idempotent request on a fresh connection may well succeed. The
# timeouts are connection errors to aiohttp too, so they are told apart first.
_RETRYABLE = (aiohttp.ClientConnectionError, aiohttp.ClientResponseError)
# What may stand unescaped in a forwarded path (RFC 3986 pchar and "/"), or in a query (plus
# "?"); "%" keeps the escapes the caller made. Anything else is percent-encoded.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
# A response body of at most this many bytes, its length known, is relayed without watching
# for the caller hanging up: it ends within the read timeout anyway, and the watch costs a task.
_SMALL_BODY = 64 * 1024
# Fields aiohttp would add to every request on its own (RFC 9110 sections 10.1.5, 12.5.1,
# 12.5.3, 8.3): the service is to see the caller's, or none. Host it adds too; the gateway
# states that one itself (Upstream.host).
_NO_AUTO_HEADERS = frozenset(
    {hdrs.USER_AGENT, hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.CONTENT_TYPE}
)
# RFC 9110 section 8.6: a request without content carries no Content-Length unless its method
# anticipates content. For these methods the gateway says "0", as it always did (httpx's rule).
_CONTENT_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Bounds on a response's head. h11 (the gateway's parser before aiohttp) bounded only the
# whole head, at 100 KiB under httpcore; aiohttp bounds each line and field (8190 bytes by
# default) and their number (128), which a service's long Link or many Set-Cookie fields
# could pass. So one field may take the whole former budget, and the count is generous.
_MAX_FIELD_BYTES = 100 * 1024
_MAX_FIELDS = 1024


class BodyTooLarge(Exception):
    pass


# Connections kept open to one service: a burst opens up to MAX_CONNECTIONS, and each is
# closed once it has been idle for KEEPALIVE_SECONDS (aiohttp reuses the longest idle first,
# so after a burst the pool shrinks only when traffic leaves connections idle that long).
# That is shorter than the services' own idle limit (uvicorn closes a connection idle for
# 5 s), so the gateway lets go first rather than send on a connection the service is closing
# at that moment (RFC 9112 section 9.6): a retry would save an idempotent request, but a POST
# would fail with 503. aiohttp's pool hands out a connection in constant time however many
# are idle (httpcore's scanned them all, which is why the pool used to keep at most 16).
MAX_CONNECTIONS = 200
KEEPALIVE_SECONDS = 4.0


class _Request(aiohttp.ClientRequest):
    """aiohttp's request, minus two things its options cannot turn off.

    - "Content-Length: 0" on a bodiless request of a method other than GET, HEAD, OPTIONS and
      TRACE (a DELETE, say). The gateway states the framing itself (:func:`_forward_headers`):
      RFC 9110 section 8.6, a request without content says nothing of its length unless its
      method anticipates content.
    - Waiting for "100 Continue" before sending the body when the caller's request carried
      "Expect: 100-continue" (forwarded, RFC 9110 section 10.1.1). The body goes out as the
      caller sends it, as it always did, which that section allows: a service that never
      answers 100 (not every server does) would otherwise hold the request for ever, no
      timeout running until the body is sent. The caller got its own 100 from the gateway's
      server once the body was asked for.
    """

    def update_body_from_data(self, body: Any, _stacklevel: int = 3) -> None:
        stated = hdrs.CONTENT_LENGTH in self.headers
        super().update_body_from_data(body)
        if body is None and not stated:
            self.headers.popall(hdrs.CONTENT_LENGTH, None)

    def update_expect_continue(self, expect: bool = False) -> None:
        return None


def _tls_context() -> ssl.SSLContext:
    """TLS for an https service, as the gateway's httpx transport set it up: certificates
    verified against certifi's CA bundle (the environment's SSL_CERT_* ignored, like every
    other setting from the environment), HTTP/1.1 offered by ALPN (RFC 7301)."""
    context = ssl.create_default_context(cafile=certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context


class Upstream:
    """One service as the gateway sees it: its pool of connections and its circuit breaker.

    Built in the gateway's lifespan: an aiohttp session belongs to the running event loop.
    """

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
        origin = URL(self.base_url)
        # What the service sees as Host: its own authority, the port left out when it is the
        # scheme's default (RFC 9110 section 7.2), as httpx sent it.
        host = origin.host_port_subcomponent
        if host is None:
            raise ValueError(f"the {spec.name} service's URL has no host: {base_url!r}")
        self.host = host
        connector = aiohttp.TCPConnector(
            limit=MAX_CONNECTIONS,
            limit_per_host=MAX_CONNECTIONS,
            keepalive_timeout=KEEPALIVE_SECONDS,
            # A new connection looks the name up afresh, as before: no cache to go stale when
            # a service moves.
            use_dns_cache=False,
            ssl=_tls_context() if origin.scheme == "https" else True,
        )
        # connect_timeout bounds getting a connection: waiting for a free one from the pool,
        # then opening one (TLS included); ``timeout`` bounds each wait for the service's
        # bytes once the request is sent, the head and every chunk of the body alike. No
        # total: a long download that keeps moving is no timeout.
        self.timeouts = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_connect=connect_timeout, sock_read=timeout
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=self.timeouts,
            # The session is shared by every caller: a cookie a service sets belongs to the
            # caller it answered, so the gateway never keeps one (it would send it for the next).
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_NO_AUTO_HEADERS,
            # Bodies pass as the service encoded them (Content-Encoding is end to end).
            auto_decompress=False,
            trust_env=False,
            request_class=_Request,
            max_line_size=_MAX_FIELD_BYTES,
            max_field_size=_MAX_FIELD_BYTES,
            max_headers=_MAX_FIELDS,
        )
        # aiohttp resends an idempotent request once, on its own, when a connection fails
        # (a reused one most of all). The gateway decides retries itself (idempotent_attempts,
        # only for requests without a body), so each attempt is exactly one sending. aiohttp
        # has no public switch for this; the attribute is one of the session's declared ones.
        self.session._retry_connection = False

    def unavailable(self, why: str) -> Problem:
        return Problem(
            503,
            f"the {self.spec.name} service is unavailable ({why}); other services are unaffected",
            title="Service Unavailable",
            headers={"Retry-After": str(max(1, self.breaker.retry_after()))},
            service=self.spec.name,
        )

    async def aclose(self) -> None:
        await self.session.close()


# How the gateway's 503 details and /healthz name a failure to reach a service: the words
# they have always used (httpx's exception names), whichever client library raised it. The
# most specific first: aiohttp's timeouts are connection errors too, its connector errors OS
# errors.
_FAILURE_NAMES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (aiohttp.ConnectionTimeoutError, "ConnectTimeout"),
    (aiohttp.ServerTimeoutError, "ReadTimeout"),
    (aiohttp.ClientConnectorError, "ConnectError"),
    ((aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError), "RemoteProtocolError"),
    (aiohttp.ClientOSError, "ReadError"),  # a reset, most often while awaiting the answer
    (aiohttp.ClientConnectionError, "NetworkError"),
)


def failure_name(exc: BaseException) -> str:
    """A failure to reach a service, as the gateway reports it (see _FAILURE_NAMES)."""
    for kind, name in _FAILURE_NAMES:
        if isinstance(exc, kind):
            return name
    return type(exc).__name__


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
        method: str = scope["method"]
        url = _target_url(upstream.base_url, scope)
        headers = _forward_headers(scope, head, declared, upstream.host)
        upload = _Upload(request, state.max_body_bytes, upstream.timeout) if has_body else None
        if not upstream.breaker.allow():
            raise upstream.unavailable("circuit open after repeated failures")
        attempts = state.idempotent_attempts if (method in IDEMPOTENT and not has_body) else 1
        try:
            response = await self._send(
                upstream, method, url, headers, upload, attempts, state.max_body_bytes
            )
        except ClientDisconnect:
            # The caller hung up mid-upload: nobody to answer, and no fault of the service.
            log.info("caller went away during upload", extra={"service": self.spec.name})
            return
        relayed = False
        try:
            relayed = await _relay(response, receive, send, upload)
        finally:
            if relayed:
                response.release()  # the connection goes back to the pool
            else:
                # Body left unread (the caller went away, or the service broke off): the
                # connection cannot carry another request.
                response.close()

    async def _send(
        self,
        upstream: Upstream,
        method: str,
        url: URL,
        headers: list[tuple[str, str]],
        upload: _Upload | None,
        attempts: int,
        max_body: int,
    ) -> aiohttp.ClientResponse:
        for attempt in range(1, attempts + 1):
            try:
                response = await _request(upstream.session, method, url, headers, upload)
            except Exception as exc:
                # aiohttp sends the body from a task of its own and reports anything that
                # stopped it as a connection error; when the caller's body was what failed,
                # that is the failure, not the service.
                failure = exc if upload is None or upload.error is None else upload.error
                _give_up_unless_retried(upstream, failure, attempt < attempts, max_body)
                continue
            except BaseException:
                upstream.breaker.release_probe()
                raise
            upstream.breaker.record_success()
            return response
        raise AssertionError("unreachable: the loop returns or raises")


async def _request(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    headers: list[tuple[str, str]],
    upload: _Upload | None,
) -> aiohttp.ClientResponse:
    """One sending of the request, up to the head of the service's answer."""
    if upload is None:
        return await session.request(method, url, headers=headers, allow_redirects=False)
    async with asyncio.timeout(None) as stall:
        upload.stall = stall
        try:
            return await session.request(
                method, url, headers=headers, data=upload, allow_redirects=False
            )
        finally:
            upload.stall = None


def _give_up_unless_retried(
    upstream: Upstream, failure: Exception, may_retry: bool, max_body: int
) -> None:
    """Returns if the request is to be sent again; else raises what the caller gets."""
    if isinstance(failure, BodyTooLarge):
        upstream.breaker.release_probe()
        raise Problem(413, _too_large(max_body)) from None
    if isinstance(failure, TimeoutError):  # aiohttp's, or the upload's stall
        # Connecting (or waiting for a pooled connection) timed out: the service never saw
        # the request, and an idempotent one may be tried again.
        connecting = isinstance(failure, aiohttp.ConnectionTimeoutError)
        if connecting and may_retry:
            return
        upstream.breaker.record_failure()
        if connecting:
            raise upstream.unavailable("connection timed out") from None
        # A timed-out request may still be running at the service: never sent twice.
        raise Problem(
            504,
            f"the {upstream.spec.name} service did not answer within {upstream.timeout:g} s",
            service=upstream.spec.name,
        ) from None
    if isinstance(failure, _RETRYABLE):
        if may_retry:
            log.info("retrying idempotent request", extra={"service": upstream.spec.name})
            return
        upstream.breaker.record_failure()
        raise upstream.unavailable(f"not reachable: {failure_name(failure)}") from None
    upstream.breaker.release_probe()
    raise failure


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


class _Upload:
    """The caller's request body as it arrives, for aiohttp to send (from a task of its own),
    aborted once it passes ``limit`` (chunked uploads); and how it ended, since aiohttp
    reports a body that failed as a connection error of its own.

    It also times the service's side of the upload. aiohttp has no write timeout, and its
    read timeout starts once the body is sent: a service that stops reading a large body
    would hold the request for ever. So each chunk must be taken by the connection within the
    service's timeout (``stall``, armed while aiohttp sends it), as httpx's write timeout
    had it; the caller's own pace is not timed, as before.
    """

    __slots__ = ("_limit", "_request", "_seconds", "error", "finished", "stall")

    def __init__(self, request: Request, limit: int, seconds: float) -> None:
        self._request = request
        self._limit = limit
        self._seconds = seconds
        self.error: Exception | None = None
        # Set once the body is read to its end or has failed: until then its reads are the
        # ones taking the caller's ASGI messages.
        self.finished = asyncio.Event()
        # The deadline of the request being sent, while it is being sent (ServiceProxy._send).
        self.stall: asyncio.Timeout | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        seen = 0
        try:
            async for chunk in self._request.stream():
                seen += len(chunk)
                if seen > self._limit:
                    raise BodyTooLarge
                if chunk:
                    if self.stall is not None:
                        self.stall.reschedule(loop.time() + self._seconds)
                    yield chunk  # aiohttp writes it, waiting while the connection is full
                    if self.stall is not None:
                        self.stall.reschedule(None)
        except Exception as exc:  # BodyTooLarge, or ClientDisconnect: the caller hung up
            self.error = exc
            raise
        finally:
            self.finished.set()


async def _relay(
    response: aiohttp.ClientResponse, receive: Receive, send: Send, upload: _Upload | None
) -> bool:
    """The service's response to the caller, chunk by chunk as it arrives; whether all of it
    was read from the service."""
    headers, length = _response_headers(response)
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    # The chunk that completes a declared length goes out as the last one (no empty closing
    # message). Once the caller hangs up the server silently drops what we send, so relaying
    # alone would keep pulling from the service, for ever on an endless stream. Unless the
    # body is small, watch for the disconnect and stop at the next chunk (closing the
    # service's connection when the response is closed).
    remaining = -1 if length is None else length
    small = 0 <= remaining <= _SMALL_BODY
    caller_gone = None if small else asyncio.create_task(_disconnected(receive, upload))
    complete = False
    try:
        async for chunk in response.content.iter_any():
            if caller_gone is not None and caller_gone.done():
                log.info("caller went away during the response")
                return False
            remaining -= len(chunk)
            complete = remaining == 0
            await send({"type": "http.response.body", "body": chunk, "more_body": not complete})
        if not complete:
            await send({"type": "http.response.body", "body": b""})
        return True
    finally:
        if caller_gone is not None:
            caller_gone.cancel()


async def _disconnected(receive: Receive, upload: _Upload | None) -> None:
    # A service may answer before it has read the whole request body (RFC 9112 section 9.5),
    # and aiohttp goes on sending it meanwhile: the caller's messages are the upload's until
    # it ends. What is left to receive after that is the disconnect.
    if upload is not None:
        await upload.finished.wait()
    while (await receive())["type"] != "http.disconnect":
        pass


def _too_large(limit: int) -> str:
    return f"request body exceeds the gateway limit of {limit} bytes"


def _target_url(base_url: str, scope: Scope) -> URL:
    """The service's URL for this request: the path and query exactly as the caller sent them.

    ASGI's ``path`` is percent-decoded, so "a%2Fb" would become "a/b" and "a%3Fb" a query;
    the raw path keeps the caller's bytes. The URL is built as already encoded, so neither yarl
    nor aiohttp re-encodes or normalises it (RFC 3986 section 6.2.2: "%7e" and "~" are the
    same resource to a normaliser, not necessarily to the service). Dot segments are refused:
    a normaliser would resolve them, and "/identity/../audit/x" would reach the service (or
    anything on the way) as a path other than the one routed (RFC 3986 section 5.2.4).
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
        return URL(base_url + path + (f"?{query}" if query else ""), encoded=True)
    except ValueError as exc:
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
    scope: Scope, head: _RequestHead, declared: int | None, host: str
) -> list[tuple[str, str]]:
    skip = _REQUEST_SKIP
    if head.connection:
        skip = skip | _connection_options([v.decode("latin-1") for v in head.connection])
    # aiohttp takes fields as text and writes them as UTF-8. A value that is UTF-8 (ASCII
    # above all) so reaches the service byte for byte; other bytes (RFC 9110 section 5.5's
    # obs-text, Latin-1 as a rule) it would rewrite, so such a request is refused rather
    # than forwarded altered.
    try:
        headers = [("Host", host)]
        headers += [
            (k.decode("latin-1"), v.decode()) for k, v in head.fields if k.lower() not in skip
        ]
        forwarded_for = head.forwarded_for.decode() if head.forwarded_for else None
        forwarded_host = head.host.decode() if head.host else None
    except UnicodeDecodeError:
        name = next(k for k, v in head.fields if not _is_utf8(v)).decode("latin-1")
        raise Problem(
            400, f"the {name} header field is not UTF-8 text; it cannot be forwarded unchanged"
        ) from None
    # RFC 9112 section 6.1: with Transfer-Encoding, a Content-Length is not to be trusted;
    # aiohttp frames a body streamed without a length as chunked (and says so at the end).
    # Without either, a method that anticipates content says it has none.
    if declared is not None and not head.chunked:
        headers.append(("content-length", str(declared)))
    elif not head.chunked and scope["method"] in _CONTENT_METHODS:
        headers.insert(1, ("Content-Length", "0"))
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    headers.append(("x-forwarded-for", f"{forwarded_for}, {peer}" if forwarded_for else peer))
    if forwarded_host:
        headers.append(("x-forwarded-host", forwarded_host))
    headers.append(("x-forwarded-proto", scope.get("scheme", "http")))
    request_id = current_request_id()
    if request_id:
        headers.append(("x-request-id", request_id))
    return headers


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def _response_headers(
    response: aiohttp.ClientResponse,
) -> tuple[list[tuple[bytes, bytes]], int | None]:
    """The fields to relay, and the body length the service declared (if one plain number)."""
    # The service's bytes as received. Lowercased, as ASGI requires: the request-id middleware
    # replaces "x-request-id" by exact name, and a service's "X-Request-ID" would otherwise
    # reach the caller as a second id.
    fields = [(k.lower(), v) for k, v in response.raw_headers]
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
