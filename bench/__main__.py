"""``python -m bench [NAME ...]``: run the benchmarks (all, or those whose name matches).

To add a benchmark, write a function ``run(console)`` in its own module of this package and
append one :class:`Benchmark` to :data:`BENCHMARKS`. The function prints its own figures and
raises :class:`bench.BenchmarkError` when it could not measure; a missed target is printed,
never raised, so the exit code says "measured" or "could not measure" and nothing else.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from bench import (
    BenchmarkError,
    audit_append,
    audit_latency,
    audit_verify,
    fhir_scale,
    fhir_store,
    gateway_overhead,
    machine,
    settlement,
    terminal_auth,
    tokens,
)


@dataclass(frozen=True)
class Benchmark:
    name: str
    summary: str
    run: Callable[[Console], None]


BENCHMARKS: list[Benchmark] = [
    Benchmark(
        "gateway",
        "Gateway overhead: the same request direct and through the gateway (issue 2)",
        gateway_overhead.run,
    ),
    Benchmark(
        "tokens",
        "Token verifications/s: the kit's verifier against raw ES256 (issue 3)",
        tokens.run,
    ),
    Benchmark(
        "terminal-auth",
        "Terminal authentications/s through the gateway, concurrency 16 (issue 3)",
        terminal_auth.run,
    ),
    Benchmark(
        "audit-append",
        "Durable audit appends/s at concurrency 16, on PostgreSQL (issue 4)",
        audit_append.run,
    ),
    Benchmark(
        "audit-latency",
        "Added p50 latency of a level-3 request because of auditing, concurrency 1 and 16 "
        "(issue 4)",
        audit_latency.run,
    ),
    Benchmark(
        "audit-verify",
        "onecard audit verify on 1,000,000 entries, entries/s (issue 4)",
        audit_verify.run,
    ),
    Benchmark(
        "fhir",
        "FHIR store through the gateway: read, search, create, Synthea ingest, $everything "
        "(issue 5)",
        fhir_store.run,
    ),
    Benchmark(
        "fhir-scale",
        "Patient + code + date Observation search on 1,000,000 resources, p50/p99 (issue 5)",
        fhir_scale.run,
    ),
    Benchmark(
        "settlement",
        "Settlements/s through the gateway at concurrency 16, overpayment under 50 parallel "
        "claims near the cap, contribution import rows/s (issue 6)",
        settlement.run,
    ),
]


def select(filters: Sequence[str]) -> list[Benchmark]:
    """Benchmarks whose name contains any of the filters (all of them without filters)."""
    if not filters:
        return list(BENCHMARKS)
    return [b for b in BENCHMARKS if any(f.lower() in b.name.lower() for f in filters)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run only benchmarks whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    console = Console()
    if not console.is_terminal:
        # Piped into a log (CI, `make bench | tee`): rich would fall back to 80 columns and
        # wrap the tables; a fixed wider layout keeps each row on one line.
        console = Console(width=120)

    if args.list:
        for benchmark in BENCHMARKS:
            console.print(f"{benchmark.name:<12} {benchmark.summary}")
        return 0
    chosen = select(args.names)
    if not chosen:
        known = ", ".join(b.name for b in BENCHMARKS)
        console.print(f"[red]no benchmark matches {' '.join(args.names)!r}[/red]; known: {known}")
        return 2

    _print_machine(console)
    failed = []
    for benchmark in chosen:
        console.rule(f"[bold]{benchmark.name}[/bold]: {benchmark.summary}")
        started = time.perf_counter()
        try:
            benchmark.run(console)
        except BenchmarkError as exc:
            failed.append(benchmark.name)
            console.print(f"[bold red]{benchmark.name} could not measure:[/bold red] {exc}")
        except Exception:
            # Anything unexpected is a failure too, shown in full so it can be fixed.
            failed.append(benchmark.name)
            console.print_exception()
        console.print(f"{benchmark.name} took {time.perf_counter() - started:.1f} s\n")
    if failed:
        console.print(f"[bold red]failed:[/bold red] {', '.join(failed)}")
        return 1
    return 0


def _print_machine(console: Console) -> None:
    table = Table(title="Machine", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in machine.describe().rows():
        table.add_row(key, value)
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
