"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and costs a task per request)."""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.kit.context import (
    REQUEST_ID_HEADER,
    accept_or_new_request_id,
    reset_request_id,
    set_request_id,
)
from services.kit.errors import Problem, render

access_log = logging.getLogger("onecard.access")
log = logging.getLogger(__name__)

REQUESTS = Counter(
    "onecard_http_requests_total", "HTTP requests handled", ["service", "method", "route", "status"]
)
LATENCY = Histogram(
    "onecard_http_request_duration_seconds",
    "Time to the end of the response",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Probes and scrapes would drown the access log; they are still counted in the metrics. Any
# path ending so is one, also under a public prefix: ``/identity/healthz`` is probed through
# the gateway, and both processes would otherwise log every probe. Every service polls the
# ledger's ``/audit/policy`` (services.kit.policy_watch); a change to it is a ledger entry.
_QUIET_SUFFIXES = ("/healthz", "/readyz", "/metrics", "/audit/policy")
_REQUEST_ID_BYTES = REQUEST_ID_HEADER.encode()


class RequestContextMiddleware:
    """Accepts or mints ``X-Request-ID``, echoes it, logs one access line, records metrics."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service
        # The metrics' children by label values: prometheus_client's labels() validates and
        # locks on every call, a third of this middleware's own cost per request.
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = accept_or_new_request_id(incoming)
        scope.setdefault("state", {})["request_id"] = request_id
        token = set_request_id(request_id)
        status = 500
        response_started = False
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                # Ours replaces any the app set (ASGI header names are lowercase).
                message["headers"] = [
                    *(h for h in message.get("headers", ()) if h[0] != _REQUEST_ID_BYTES),
                    (_REQUEST_ID_BYTES, request_id.encode("latin-1")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Answered here rather than by Starlette's ServerErrorMiddleware, which re-raises
            # after answering: the caller gets a problem with the request id, the log gets the
            # traceback once, and nothing about the internals leaves the process.
            if response_started:
                raise  # headers already sent: all we can do is abort the connection
            log.exception("unhandled error", extra={"path": scope["path"]})
            problem = Problem(
                500, "an internal error occurred; quote the request id when reporting it"
            )
            await render(Request(scope, receive), problem)(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            counted = self._counted.get((method, template, status))
            if counted is None:
                counted = REQUESTS.labels(self.service, method, template, str(status))
                self._counted[method, template, status] = counted
            counted.inc()
            timed = self._timed.get((method, template))
            if timed is None:
                timed = self._timed[method, template] = LATENCY.labels(
                    self.service, method, template
                )
            timed.observe(elapsed)
            if not scope["path"].endswith(_QUIET_SUFFIXES):
                access_log.info(
                    "%s %s %s",
                    method,
                    scope["path"],
                    status,
                    extra={"status": status, "duration_ms": round(elapsed * 1000, 2)},
                )
            reset_request_id(token)
