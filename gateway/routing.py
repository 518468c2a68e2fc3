"""Which requests the gateway forwards, decided before FastAPI sees them.

Forwarded requests are nearly all the gateway serves, and FastAPI has nothing to do for them:
no parameters, no dependencies, no response model. Routed through it they still passed its
middleware stack (error, telemetry and body-limit layers, exception handlers, an exit stack)
and the router's matching against every route in turn. :class:`Dispatcher` sits in front
instead: a request under a service's prefix goes through the kit's request-context middleware
(request id minted or propagated and echoed, metrics, access log, any unexpected error a 500
problem carrying the request id) straight to that service's :class:`ServiceProxy`; a refusal
(:class:`Problem`) is answered as problem+json as everywhere else. Everything else, the
lifespan included, goes to the FastAPI app as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.proxy import ServiceProxy
from services.kit.errors import Problem, render
from services.kit.middleware import RequestContextMiddleware
from services.kit.topology import ServiceSpec


@dataclass(frozen=True, slots=True)
class ProxyRoute:
    """What the metrics call the route (``scope["route"].path``), as Starlette's did."""

    path: str


class Dispatcher:
    def __init__(self, app: ASGIApp, *, services: tuple[ServiceSpec, ...], service: str) -> None:
        self.app = app
        # Longest prefix first, so a prefix that extends another wins.
        self.prefixes: list[tuple[str, ASGIApp, ProxyRoute, ProxyRoute]] = []
        for spec in services:
            endpoint = RequestContextMiddleware(_Endpoint(ServiceProxy(spec)), service=service)
            for prefix in spec.prefixes:
                self.prefixes.append(
                    (prefix, endpoint, ProxyRoute(prefix), ProxyRoute(prefix + "/{path:path}"))
                )
        self.prefixes.sort(key=lambda entry: len(entry[0]), reverse=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            for prefix, endpoint, exact, below in self.prefixes:
                if path.startswith(prefix):
                    rest = path[len(prefix) :]
                    if not rest or rest[0] == "/":
                        scope["route"] = below if rest else exact
                        await endpoint(scope, receive, send)
                        return
        await self.app(scope, receive, send)


class _Endpoint:
    """One service's proxy, its refusals answered as problems."""

    def __init__(self, proxy: ServiceProxy) -> None:
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.proxy(scope, receive, send_tracking)
        except Problem as problem:
            if started:
                raise  # too late to answer: the connection is aborted, as for any other error
            await render(Request(scope, receive), problem)(scope, receive, send)
