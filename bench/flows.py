"""Closed-loop load of multi-request flows with :mod:`bench.loadgen`'s cheap connections.

Some things a client does are several requests in a row, each new: the counter pre-settles a
bill and then settles it, with a bill id never used before. :class:`FlowPool` runs such flows
back to back on each keep-alive connection, one request in flight per connection, building each
flow's requests when it starts (the caller's ``make_flow``), so the client still costs the
servers only a few microseconds of Python per request (an httpx client costs about a
millisecond per settlement here, taken from the same two cores as the servers).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.loadgen import ConnectionPool, Target, _Connection, _header_line

# One step of a flow: the request's bytes and the status that means it succeeded.
Step = tuple[bytes, int]
# (connection index, flow number on that connection) -> the flow's steps.
MakeFlow = Callable[[int, int], Sequence[Step]]


def post(
    host: str, port: int, path: str, body: bytes, *, headers: Sequence[tuple[str, str]] = ()
) -> bytes:
    """The bytes of one HTTP/1.1 POST of a JSON body (RFC 9112 section 3 and 6)."""
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "User-Agent: onecard-bench\r\n"
        "Accept: application/json\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        + "".join(_header_line(name, value) for name, value in headers)
        + "\r\n"
    ).encode("ascii")
    return head + body


@dataclass
class _Flow:
    steps: Sequence[Step]
    started_ns: int
    at: int = 0


class FlowPool(ConnectionPool):
    """``concurrency`` connections, each running flows one after another.

    ``run(n)`` runs ``n`` flows in all; its result counts flows: ``requests`` is the flows
    finished (or failed), ``latencies_ns`` the time from a successful flow's first request sent
    to its last answer, ``errors`` what failed, with the step and the start of the answer.
    """

    def __init__(self, host: str, port: int, concurrency: int, make_flow: MakeFlow) -> None:
        super().__init__(Target("flow", host, port, "/"), concurrency)
        self.make_flow = make_flow
        # The flow in progress by connection (its id); flows started by connection index (a
        # reopened connection takes over an index and goes on counting from there).
        self._flows: dict[int, _Flow] = {}
        self._numbers: dict[int, int] = {}

    def next_request(self, connection: _Connection) -> bytes:
        key = id(connection)
        flow = self._flows.get(key)
        if flow is None:
            index = self.connections.index(connection)
            number = self._numbers.get(index, 0) + 1
            self._numbers[index] = number
            flow = self._flows[key] = _Flow(self.make_flow(index, number), time.perf_counter_ns())
        return flow.steps[flow.at][0]

    def completed(self, connection: _Connection, status: int, elapsed_ns: int) -> None:
        key = id(connection)
        flow = self._flows[key]
        expected = flow.steps[flow.at][1]
        if status != expected:
            del self._flows[key]
            answer = connection.error_body[:160].decode("utf-8", "replace")
            self._finish(connection, f"HTTP {status} at step {flow.at + 1}: {answer}")
            return
        flow.at += 1
        if flow.at < len(flow.steps) and connection.open:
            connection.send()  # the flow's next request, on the same connection
            return
        del self._flows[key]
        self._result.latencies_ns.append(time.perf_counter_ns() - flow.started_ns)
        self._finish(connection, None)

    def lost(self, connection: _Connection, why: str) -> None:
        self._flows.pop(id(connection), None)
        super().lost(connection, why)

    def _finish(self, connection: _Connection, error: str | None) -> None:
        result = self._result
        result.requests += 1
        if error is not None:
            result.errors[error] += 1
        if self._remaining and connection.open:
            self._remaining -= 1
            connection.send()  # a new flow
        else:
            self._idle()
