"""A closed-loop HTTP/1.1 load generator that costs the client as little CPU as possible.

The client shares the machine's cores with the servers it measures, so every microsecond it
spends per request is taken from them. That rules out httpx/aiohttp (tens to hundreds of
microseconds of Python per request). Instead each of ``concurrency`` keep-alive connections is
an ``asyncio.Protocol`` driven from its ``data_received`` callback: the request is one
pre-built ``bytes`` object, the response is parsed only as far as the status code and
``Content-Length``, and the next request is written from the same callback. No coroutine,
future or task is created per request. uvloop is used when installed (it is, via
``uvicorn[standard]``) because its transport callbacks are several times cheaper.

Closed loop, back to back: each connection has exactly one request in flight, so concurrency
is exactly the connection count and throughput is what the server sustains at that load.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

T = TypeVar("T")

# One round must never hang the benchmark on a stuck server.
ROUND_TIMEOUT_SECONDS = 60.0
_HEAD_END = b"\r\n\r\n"
_CONTENT_LENGTH = b"\r\ncontent-length:"
_CONNECTION_CLOSE = b"\r\nconnection: close"
# Characters a header field name (an RFC 9110 token) cannot hold.
_NOT_TOKEN = frozenset(' \t\r\n:"(),/;<=>?@[\\]{}')
# Response heads larger than this are not what the benchmark requests; refuse, don't buffer.
_MAX_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Target:
    """One URL to load: where to connect and the exact request bytes to send."""

    label: str
    host: str
    port: int
    path: str
    # Extra request headers (e.g. ``Authorization``), sent as given with every request. Part
    # of the pre-built request bytes, so they cost the hot path nothing. Kept out of ``repr``:
    # a bearer token must never reach a log or a traceback.
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def request(self) -> bytes:
        # The smallest well-formed HTTP/1.1 request (RFC 9112 section 3: Host is required);
        # keep-alive is the HTTP/1.1 default, so no Connection header.
        return (
            f"GET {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "User-Agent: onecard-bench\r\n"
            "Accept: application/json\r\n"
            + "".join(_header_line(name, value) for name, value in self.headers)
            + "\r\n"
        ).encode("ascii")


def _header_line(name: str, value: str) -> str:
    # RFC 9110 section 5: a field name is a token and a value holds no CR, LF or NUL; anything
    # else would split the request (header injection). The value is never echoed: it may be a
    # bearer token.
    if not name or any(c in _NOT_TOKEN for c in name) or any(c in value for c in "\r\n\x00"):
        raise ValueError(f"invalid request header {name!r}")
    return f"{name}: {value}\r\n"


@dataclass
class RoundResult:
    """What one burst of requests against one target gave."""

    requests: int = 0
    elapsed_s: float = 0.0
    # Latency of each 200 answer, send to last body byte, in nanoseconds.
    latencies_ns: list[int] = field(default_factory=list)
    # Everything that was not a 200, by kind ("HTTP 429", "connection lost", ...).
    errors: Counter[str] = field(default_factory=Counter)


class _ProtocolError(Exception):
    pass


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.sent_at = 0
        self.in_flight = False
        self.open = False
        # The body of the last answer with status >= 400, for the error report (copied only
        # then: the hot path of a successful answer does not pay for it).
        self.error_body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.open = True

    def send(self) -> None:
        assert self.transport is not None
        self.in_flight = True
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.pool.next_request(self))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(_HEAD_END)
        if end < 0:
            if len(self.buffer) > _MAX_HEAD_BYTES:
                self._fail("response head too large")
            return
        head = bytes(self.buffer[:end]).lower()
        length_at = head.find(_CONTENT_LENGTH)
        if length_at < 0:
            # Chunked bodies would need a real parser (and client CPU); the routes benchmarked
            # here all declare their length, so a missing one is a finding worth stopping for.
            self._fail("response without Content-Length")
            return
        line_end = head.find(b"\r\n", length_at + 2)
        raw_length = head[length_at + len(_CONTENT_LENGTH) : line_end if line_end > 0 else None]
        try:
            total = end + len(_HEAD_END) + int(raw_length)
            status = int(head[9:12])  # "HTTP/1.1 200 OK": the code sits at a fixed offset
        except ValueError:
            self._fail("unparsable response head")
            return
        if len(self.buffer) < total:
            return  # the rest of the body is still on its way
        elapsed = time.perf_counter_ns() - self.sent_at
        if status >= 400:
            self.error_body = bytes(self.buffer[end + len(_HEAD_END) : total])
        del self.buffer[:total]
        self.in_flight = False
        if head.find(_CONNECTION_CLOSE) >= 0:
            # The server will close after this answer: stop using this connection now.
            self.open = False
        self.pool.completed(self, status, elapsed)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.in_flight:
            self.in_flight = False
            self.pool.lost(self, "connection lost" if exc is None else f"connection lost: {exc}")

    def _fail(self, why: str) -> None:
        self.in_flight = False
        self.open = False
        if self.transport is not None:
            self.transport.abort()
        self.pool.lost(self, why)

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()


class ConnectionPool:
    """``concurrency`` keep-alive connections to one target, reused across rounds."""

    def __init__(self, target: Target, concurrency: int) -> None:
        self.target = target
        self.concurrency = concurrency
        self.request = target.request()
        self.connections: list[_Connection] = []
        self._result = RoundResult()
        self._remaining = 0
        self._busy = 0
        self._done: asyncio.Future[float] | None = None

    async def _ensure_open(self) -> None:
        """(Re)open connections outside the timed part, e.g. after a server idle timeout."""
        loop = asyncio.get_running_loop()
        alive = [c for c in self.connections if c.open]
        for c in self.connections:
            if not c.open:
                c.close()
        while len(alive) < self.concurrency:
            _, protocol = await loop.create_connection(
                lambda: _Connection(self), self.target.host, self.target.port
            )
            alive.append(protocol)
        self.connections = alive

    async def run(self, requests: int) -> RoundResult:
        """Send ``requests`` requests, back to back on every connection; time the whole burst."""
        await self._ensure_open()
        loop = asyncio.get_running_loop()
        self._result = RoundResult(latencies_ns=[])
        self._done = loop.create_future()
        self._remaining = requests
        self._busy = 0
        started = time.perf_counter()
        for connection in self.connections:
            if self._remaining == 0:
                break
            self._remaining -= 1
            self._busy += 1
            connection.send()
        try:
            finished = await asyncio.wait_for(self._done, ROUND_TIMEOUT_SECONDS)
        except TimeoutError:
            for connection in self.connections:
                connection.close()
            self._result.errors[f"no answer within {ROUND_TIMEOUT_SECONDS:g} s"] += self._busy
            finished = time.perf_counter()
        result = self._result
        result.elapsed_s = finished - started
        if self._remaining:
            # Every connection was closed by the server before the round was through.
            result.errors["not sent: every connection closed"] += self._remaining
        return result

    # Called from the connections' callbacks, i.e. on the hot path: keep it short.
    def next_request(self, connection: _Connection) -> bytes:
        """The bytes ``connection`` sends next: the target's one request (subclasses vary it)."""
        return self.request

    def completed(self, connection: _Connection, status: int, elapsed_ns: int) -> None:
        result = self._result
        result.requests += 1
        if status == 200:
            result.latencies_ns.append(elapsed_ns)
        else:
            result.errors[f"HTTP {status}"] += 1
        if self._remaining and connection.open:
            self._remaining -= 1
            connection.send()
        else:
            self._idle()

    def lost(self, connection: _Connection, why: str) -> None:
        self._result.requests += 1
        self._result.errors[why] += 1
        self._idle()

    def _idle(self) -> None:
        self._busy -= 1
        if self._busy == 0 and self._done is not None and not self._done.done():
            # Requests a dead connection could not send are simply not sent; the errors say why.
            self._done.set_result(time.perf_counter())

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        self.connections = []


def percentile(sorted_values: Sequence[int], pct: float) -> int:
    """Nearest-rank percentile (no interpolation: every figure is a latency that happened)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def run_fast(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on uvloop when available (cheaper callbacks), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())
