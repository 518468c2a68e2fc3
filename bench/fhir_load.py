"""Closed-loop load on FHIR routes with :mod:`bench.loadgen`: several targets, and POSTs.

:class:`bench.loadgen.ConnectionPool` loads one fixed GET and counts only 200 as a success.
The FHIR benchmarks need more: reads and searches spread over several resources (one target
per connection, so no single row stays hot in every cache) and creates, which are POSTs
answered ``201 Created`` (FHIR R4 http.html#create). Both are thin layers over the same
callback-driven connections, so the client costs the servers as little CPU as there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.loadgen import ConnectionPool, RoundResult, Target, _Connection, _header_line, percentile


@dataclass(frozen=True)
class PostTarget(Target):
    """A POST of a fixed body (``Prefer`` etc. in ``headers``); 201 is its success."""

    body: bytes = field(default=b"", repr=False)
    content_type: str = "application/fhir+json"

    def request(self) -> bytes:
        head = (
            f"POST {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "User-Agent: onecard-bench\r\n"
            "Accept: application/fhir+json\r\n"
            f"Content-Type: {self.content_type}\r\n"
            f"Content-Length: {len(self.body)}\r\n"
            + "".join(_header_line(name, value) for name, value in self.headers)
            + "\r\n"
        ).encode("ascii")
        return head + self.body


# Requests per connection and round: a few seconds even at tens of requests per second.
ROUND_PER_POOL = 25


class CreatePool(ConnectionPool):
    """A pool whose requests succeed with ``201 Created`` (a create's answer)."""

    def completed(self, connection: _Connection, status: int, elapsed_ns: int) -> None:
        # Count a 201 as loadgen counts a 200: only other statuses are errors.
        super().completed(connection, 200 if status == 201 else status, elapsed_ns)


@dataclass
class Figures:
    """Requests of one measurement, over all its targets."""

    requests: int = 0
    elapsed_s: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0

    def latency_ms(self, pct: float) -> float:
        return percentile(sorted(self.latencies_ns), pct) / 1e6 if self.latencies_ns else 0.0


async def spread(
    pools: Sequence[ConnectionPool], requests: int, *, max_seconds: float | None = None
) -> Figures:
    """Up to ``requests`` in all, shared evenly by ``pools`` (each closed loop), at once.

    Sent in short rounds (loadgen bounds a round's duration to catch a stuck server, and a busy
    machine may serve only tens of requests per second), until ``requests`` are answered or
    ``max_seconds`` have passed: the figures are then what was measured in that time.
    """
    figures = Figures()
    per_round = ROUND_PER_POOL * len(pools)
    while figures.requests < requests:
        if max_seconds is not None and figures.elapsed_s >= max_seconds:
            break
        wanted = min(per_round, requests - figures.requests)
        share, extra = divmod(wanted, len(pools))
        started = time.perf_counter()
        results: list[RoundResult] = await asyncio.gather(
            *(pool.run(share + (1 if i < extra else 0)) for i, pool in enumerate(pools))
        )
        figures.elapsed_s += time.perf_counter() - started
        for result in results:
            figures.requests += result.requests
            figures.latencies_ns.extend(result.latencies_ns)
            for kind, count in result.errors.items():
                figures.errors[kind] = figures.errors.get(kind, 0) + count
        if figures.errors:
            break  # the caller reports them; going on would only add more of the same
    return figures
