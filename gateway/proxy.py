"""Forwarding one request to one service: streamed both ways, over a pooled connection.

What crosses unchanged: method, path, query, body, the caller's ``Authorization`` header
(services decide on the user's own token, DESIGN.md). What the gateway adds: ``X-Request-ID``
and the RFC 7239-style ``X-Forwarded-*`` headers so services can build absolute URLs (FHIR
paging links start with the base URL the client used).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from gateway.breaker import CircuitBreaker
from services.kit.context import current_request_id
from services.kit.errors import Problem
from services.kit.topology import ServiceSpec

log = logging.getLogger(__name__)

# RFC 9110 section 7.6.1: connection-specific fields are not forwarded by an intermediary.
HOP_BY_HOP = frozenset(
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
# The gateway's own server adds date and server; the service's copies would be duplicates.
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
# Failures where the request cannot have been processed, or a stale pooled connection.
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError)

Admission = Callable[[Request], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


class Upstream:
    """One service as the gateway sees it: its pool of connections and its circuit breaker."""

    def __init__(
        self, spec: ServiceSpec, base_url: str, *, connect_timeout: float, breaker: CircuitBreaker
    ) -> None:
        self.spec = spec
        self.base_url = base_url
        self.breaker = breaker
        self.client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(spec.timeout, connect=connect_timeout, pool=connect_timeout),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=64),
            trust_env=False,
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
    """ASGI endpoint forwarding every request under a service's prefixes to that service."""

    def __init__(self, spec: ServiceSpec) -> None:
        self.spec = spec

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state.gateway
        upstream: Upstream = state.upstreams[self.spec.name]
        request = Request(scope, receive)
        for admit in state.admissions:
            await admit(request)

        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise Problem(400, "Content-Length is not a number")
            if int(declared) > state.max_body_bytes:
                raise Problem(413, _too_large(state.max_body_bytes))
        has_body = declared not in (None, "0") or "transfer-encoding" in request.headers

        if not upstream.breaker.allow():
            raise upstream.unavailable("circuit open after repeated failures")

        outgoing = upstream.client.build_request(
            scope["method"],
            httpx.URL(path=scope["path"], query=scope["query_string"]),
            headers=_forward_headers(scope, request),
            content=_limited(request, state.max_body_bytes) if has_body else None,
        )
        attempts = (
            state.idempotent_attempts if (scope["method"] in IDEMPOTENT and not has_body) else 1
        )
        response = await self._send(upstream, outgoing, attempts, state.max_body_bytes)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k, v) for k, v in response.headers.raw if k.lower() not in _RESPONSE_SKIP
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def _send(
        self, upstream: Upstream, outgoing: httpx.Request, attempts: int, max_body: int
    ) -> httpx.Response:
        for attempt in range(1, attempts + 1):
            try:
                response = await upstream.client.send(outgoing, stream=True)
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
                    f"{upstream.spec.timeout:g} s",
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


def _too_large(limit: int) -> str:
    return f"request body exceeds the gateway limit of {limit} bytes"


def _forward_headers(scope: Scope, request: Request) -> list[tuple[bytes, bytes]]:
    headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
    if "content-length" in request.headers and "transfer-encoding" not in request.headers:
        headers.append((b"content-length", request.headers["content-length"].encode()))
    client = scope.get("client")
    forwarded_for = request.headers.get("x-forwarded-for")
    peer = client[0] if client else "unknown"
    headers.append(
        (
            b"x-forwarded-for",
            f"{forwarded_for}, {peer}".encode() if forwarded_for else peer.encode(),
        )
    )
    headers.append((b"x-forwarded-host", request.headers.get("host", "").encode("latin-1")))
    headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
    request_id = current_request_id()
    if request_id:
        headers.append((b"x-request-id", request_id.encode()))
    return headers


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body as it arrives, aborted once it passes ``limit`` (chunked uploads)."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge
        if chunk:
            yield chunk
