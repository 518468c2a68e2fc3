"""The FHIR store through the gateway: reads, searches, creates, Synthea ingest (issue 5).

Method, and why:
- The whole platform as ``onecard up`` starts it (:mod:`bench.fhir_platform`): on PostgreSQL
  and the machine's Redis when they answer (databases of this run's own, dropped afterwards),
  else the embedded default; the report says which. A hospital's backend client (registered as
  the demo registers it) uses a ``system/*.cruds`` token from ``client_credentials``.
- Ingest first: the Synthea transaction Bundles of ``/work/shared/fhir-data/synthea`` (the
  hospital and practitioner files first, alone: the patients' Bundles refer to their
  Organizations and Practitioners by conditional reference), then the patients' Bundles, 8 in
  flight, each one request (FHIR R4 http.html#transaction). Entries per second is every entry
  of every Bundle over the wall time of the whole ingest, files read and parsed beforehand.
- Then, each warmed up and measured closed loop with 8 connections through the gateway
  (:mod:`bench.fhir_load` over :mod:`bench.loadgen`): read by id
  (``GET /fhir/Observation/{id}``), ``GET /fhir/Observation?patient={id}`` (first page, the
  server's default ``_count``), create (``POST /fhir/Observation``, answered 201), and
  ``Patient/{id}/$everything`` when the server has it. Reads and searches spread over 8
  ingested patients (one per connection).
- Reads and searches are level 3: each is recorded durably in the audit ledger before it is
  answered. The ledger's entries (its table) and answered submissions (its access log) are
  counted around each measurement, so the report gives the entries per submission (the
  services' audit clients send what queued meanwhile together).
- Every answer other than the expected status is an error: figures are printed, the run fails.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table

from bench import BenchmarkError
from bench.fhir_load import CreatePool, Figures, PostTarget, spread
from bench.fhir_platform import Ledger, Platform, platform
from bench.loadgen import ConnectionPool, Target, run_fast

SYNTHEA = Path(os.environ.get("ONECARD_BENCH_SYNTHEA", "/work/shared/fhir-data/synthea"))
CONCURRENCY = 8
# Requests per measurement (after a warm-up of a tenth of it): a few seconds each at the
# targets' rates. On a slower (or busier) machine each stops after MEASURE_SECONDS, so the
# whole run stays within a few minutes.
WARMUP_SECONDS = 5.0
MEASURE_SECONDS = 25.0
READS = 4_000
SEARCHES = 3_200
CREATES = 1_400
EVERYTHING = 160
TARGETS = {
    "read by id": 2_000.0,
    "Observation?patient= search": 1_600.0,
    "create Observation": 700.0,
    "Synthea ingest": 1_300.0,
}
BUNDLE_TIMEOUT = 120.0


@dataclass
class Ingested:
    """What the Synthea ingest gave: its figures and ids to load afterwards."""

    bundles: int
    entries: int
    elapsed_s: float
    # Per patient Bundle: (Patient id, Observation ids), from the transaction-response.
    patients: list[tuple[str, list[str]]]


@dataclass
class Measured:
    name: str
    figures: Figures
    # What the audit ledger was sent and wrote meanwhile.
    ledger: Ledger
    unit: str = "req/s"


def _bundle_files() -> list[Path]:
    files = sorted(SYNTHEA.glob("*.json"))
    if not files:
        raise BenchmarkError(f"no Synthea bundles in {SYNTHEA}")
    # The shared resources first: patients' Bundles refer to them conditionally.
    return sorted(
        files, key=lambda p: (not p.name.startswith(("hospital", "practitioner")), p.name)
    )


def _ids(request: dict[str, Any], answer: dict[str, Any]) -> tuple[str | None, list[str]]:
    """The Patient id and Observation ids the server gave, from a transaction-response.

    FHIR R4 bundle.html#transaction-response: one entry per request entry, in the same order,
    each with ``response.location`` ``Type/id/_history/v``.
    """
    patient = None
    observations = []
    for entry in answer.get("entry", []):
        location = str(entry.get("response", {}).get("location", ""))
        parts = location.split("/")
        if len(parts) >= 2 and parts[0] == "Patient":
            patient = parts[1]
        elif len(parts) >= 2 and parts[0] == "Observation":
            observations.append(parts[1])
    if len(answer.get("entry", [])) != len(request.get("entry", [])):
        raise BenchmarkError("a transaction-response has not one entry per request entry")
    return patient, observations


async def _ingest(base_url: str, token: str) -> Ingested:
    files = _bundle_files()
    bodies = [path.read_bytes() for path in files]
    parsed = [orjson.loads(body) for body in bodies]
    entries = sum(len(b.get("entry", [])) for b in parsed)
    shared = sum(1 for p in files if p.name.startswith(("hospital", "practitioner")))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    patients: list[tuple[str, list[str]]] = []
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=BUNDLE_TIMEOUT, limits=limits, trust_env=False
    ) as http:

        async def post(index: int) -> None:
            response = await http.post("/fhir", content=bodies[index], headers=headers)
            if response.status_code != 200:
                raise BenchmarkError(
                    f"{files[index].name} answered {response.status_code}: {response.text[:500]}"
                )
            patient, observations = _ids(parsed[index], response.json())
            if patient is not None:
                patients.append((patient, observations))

        started = time.perf_counter()
        for index in range(shared):
            await post(index)
        queue = list(range(shared, len(files)))

        async def worker() -> None:
            while queue:
                await post(queue.pop(0))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return Ingested(len(files), entries, elapsed, patients)


def _observation(patient: str) -> bytes:
    """A vital sign as a hospital posts one: LOINC-coded, with value and time."""
    return orjson.dumps(
        {
            "resourceType": "Observation",
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [
                    {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}
                ]
            },
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": "2026-11-28T09:30:00+08:00",
            "valueQuantity": {
                "value": 72,
                "unit": "/min",
                "system": "http://unitsofmeasure.org",
                "code": "/min",
            },
        }
    )


async def _closed_loop(pools: list[ConnectionPool], requests: int) -> Figures:
    warm = await spread(pools, max(len(pools), requests // 10), max_seconds=WARMUP_SECONDS)
    if warm.errors:
        raise BenchmarkError(f"{pools[0].target.url} during warm-up: {warm.errors}")
    try:
        return await spread(pools, requests, max_seconds=MEASURE_SECONDS)
    finally:
        for pool in pools:
            pool.close()


def _measure(
    platform_: Platform, name: str, pools: list[ConnectionPool], requests: int
) -> Measured:
    before = platform_.ledger()
    try:
        figures = run_fast(lambda: _closed_loop(pools, requests))
    except OSError as exc:
        raise BenchmarkError(f"{name}: lost a server: {exc}{platform_.casualties()}") from None
    return Measured(name, figures, platform_.ledger() - before)


def _everything_answers(base_url: str, token: str, patient: str) -> str | None:
    """None when ``$everything`` answers 200 with a Content-Length; else why not."""
    with httpx.Client(base_url=base_url, timeout=60, trust_env=False) as http:
        response = http.get(
            f"/fhir/Patient/{patient}/$everything", headers={"Authorization": f"Bearer {token}"}
        )
    if response.status_code != 200:
        return f"GET /fhir/Patient/{{id}}/$everything answered {response.status_code}"
    if "content-length" not in response.headers:
        return "$everything answered without Content-Length (the load generator needs it)"
    return None


def run(console: Console) -> None:
    with tempfile.TemporaryDirectory(prefix="onecard-bench-fhir-") as tmp:
        started = time.perf_counter()
        with platform(Path(tmp) / "var") as p:
            console.print(
                f"platform ready in {time.perf_counter() - started:.1f} s on {p.where}; "
                f"gateway {p.gateway}"
            )
            results, ingested, skipped = _run_all(p)
            casualties = p.casualties()
    _report(console, results, ingested, skipped)
    failed = {m.name: m.figures.errors for m in results if m.figures.errors}
    if failed:
        raise BenchmarkError(f"answers other than the expected status: {failed}{casualties}")


def _run_all(p: Platform) -> tuple[list[Measured], Ingested, str | None]:
    host, port = "127.0.0.1", p.gateway_port
    token = p.hospital_token()
    before = p.ledger()
    try:
        ingested = asyncio.run(_ingest(p.gateway, token))
    except httpx.HTTPError as exc:
        raise BenchmarkError(f"ingest: {exc!r}{p.casualties()}") from None
    ingest = Measured(
        "Synthea ingest",
        Figures(requests=ingested.entries, elapsed_s=ingested.elapsed_s),
        p.ledger() - before,
        unit="entries/s",
    )
    chosen = [(pid, obs) for pid, obs in ingested.patients if obs][:CONCURRENCY]
    if not chosen:
        raise BenchmarkError("the Synthea ingest produced no patient with Observations")
    # As many targets as connections: the chosen patients again when there are fewer.
    spread_over = [chosen[i % len(chosen)] for i in range(CONCURRENCY)]
    results = [ingest]

    auth = (("Authorization", f"Bearer {p.hospital_token()}"),)
    reads = [
        ConnectionPool(
            Target("read", host, port, f"/fhir/Observation/{obs[i % len(obs)]}", auth), 1
        )
        for i, (_, obs) in enumerate(spread_over)
    ]
    results.append(_measure(p, "read by id", reads, READS))

    auth = (("Authorization", f"Bearer {p.hospital_token()}"),)
    searches = [
        ConnectionPool(Target("search", host, port, f"/fhir/Observation?patient={pid}", auth), 1)
        for pid, _ in spread_over
    ]
    results.append(_measure(p, "Observation?patient= search", searches, SEARCHES))

    auth = (("Authorization", f"Bearer {p.hospital_token()}"),)
    creates: list[ConnectionPool] = [
        CreatePool(
            PostTarget("create", host, port, "/fhir/Observation", auth, body=_observation(pid)),
            1,
        )
        for pid, _ in spread_over
    ]
    results.append(_measure(p, "create Observation", creates, CREATES))

    token = p.hospital_token()
    skipped = _everything_answers(p.gateway, token, chosen[0][0])
    if skipped is None:
        auth = (("Authorization", f"Bearer {token}"),)
        everything = [
            ConnectionPool(
                Target("everything", host, port, f"/fhir/Patient/{pid}/$everything", auth), 1
            )
            for pid, _ in spread_over
        ]
        results.append(_measure(p, "Patient/$everything", everything, EVERYTHING))
    return results, ingested, skipped


def _verdict(passed: bool) -> str:
    return "[green]PASS[/green]" if passed else "[red]MISS[/red]"


def _report(
    console: Console, results: list[Measured], ingested: Ingested, skipped: str | None
) -> None:
    table = Table(
        title=f"FHIR store through the gateway, concurrency {CONCURRENCY}, hospital system token",
        title_justify="left",
    )
    for column in (
        "measurement",
        "requests",
        "measured",
        "target",
        "",
        "p50 ms",
        "p99 ms",
        "ledger entries/POSTs",
    ):
        table.add_column(column, justify="left" if column == "measurement" else "right")
    for m in results:
        target = TARGETS.get(m.name)
        ingest = m.unit == "entries/s"
        table.add_row(
            m.name,
            f"{m.figures.requests:,}" + (" entries" if ingest else ""),
            f"{m.figures.rate:,.0f} {m.unit}",
            f">= {target:,.0f}" if target else "-",
            _verdict(m.figures.rate >= target) if target else "",
            "-" if ingest else f"{m.figures.latency_ms(50):.1f}",
            "-" if ingest else f"{m.figures.latency_ms(99):.1f}",
            f"{m.ledger.entries:,}/{m.ledger.submissions:,} = {m.ledger.per_submission()}",
        )
    console.print(table)
    for m in results:
        if m.name == "Patient/$everything":
            console.print(
                f"$everything p50 {m.figures.latency_ms(50):.1f} ms at concurrency "
                f"{CONCURRENCY} (no target in issue 5)"
            )
    notes = [
        f"- Ingest: {ingested.bundles} Synthea transaction Bundles, {ingested.entries:,} entries "
        f"in {ingested.elapsed_s:.1f} s (hospital and practitioner Bundles first, alone; then "
        f"{CONCURRENCY} Bundles in flight).",
        f"- Reads, searches, creates and $everything over {len(ingested.patients[:CONCURRENCY])} "
        "ingested patients, one per connection; each warmed up first (a tenth of its requests, "
        f"at most {WARMUP_SECONDS:g} s), then measured for its requests or {MEASURE_SECONDS:g} s, "
        "whichever comes first, in rounds of 25 requests per connection.",
        "- Ledger: entries it wrote (warm-up included) / submissions (POST /audit/entries) it "
        "answered meanwhile, from its table and its access log.",
    ]
    if skipped is not None:
        notes.append(f"- $everything skipped: {skipped}.")
    console.print("\n".join(notes))
