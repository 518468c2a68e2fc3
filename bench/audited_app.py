"""A bench-only service: one level-3 read, served with and without write-ahead auditing.

Used by :mod:`bench.audit_latency` and nothing else (it is not in the topology). Run as its own
process, with the same uvicorn options as every platform service (``services.kit.serve``)::

    python -m bench.audited_app --port 9000

Two twin routes do the same work on the same process: verify the bearer token (ES256, keys
from ``ONECARD_JWKS_URL``, revocation checked in Redis), enforce the graded-protection table
(``/bench`` is unlisted, so level 3: card + PIN), look the Observation up and answer it.
``/bench/audited/...`` additionally records the access with ``audit_access(..., level=3)``
before answering, which returns only once the ledger holds the entry durably (DESIGN.md
"Audit and graded protection": no level-3 response without a durable record). The difference
between the two is what auditing adds to a level-3 request, and nothing else.

The audit client authenticates to the ledger with an ``audit.append`` access token read from
the file named by ``ONECARD_BENCH_AUDIT_TOKEN_FILE`` (written 0600 by the benchmark, which holds
the signing key), instead of the platform credentials a real service exchanges for one.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request

from services.kit import logging as kit_logging
from services.kit.app import create_service_app
from services.kit.audit import AuditClient, audit_access
from services.kit.auth import require_token
from services.kit.credentials import TokenUnavailable
from services.kit.errors import Problem
from services.kit.protection import protection_guard
from services.kit.settings import ServiceSettings
from services.kit.tokens import AccessToken

SERVICE = "bench_audited"
TOKEN_AUDIENCE = "/bench"
READ_SCOPE = "patient/Observation.rs"
RECORDS = 64


class AuditedBenchSettings(ServiceSettings):
    service = SERVICE

    # The file holding this service's ``audit.append`` bearer token (bench only).
    bench_audit_token_file: Path | None = None


class FileTokens:
    """The ledger's bearer token from a file: read on first use and again when the ledger
    refused the last one (the benchmark may have replaced it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._token: str | None = None

    async def __call__(self, refresh: bool) -> str:
        if self._token is None or refresh:
            try:
                token = (await asyncio.to_thread(self.path.read_text)).strip()
            except OSError as exc:
                raise TokenUnavailable(f"cannot read the audit token file: {exc}") from None
            if not token:
                raise TokenUnavailable(f"the audit token file {self.path} is empty")
            self._token = token
        return self._token


def _observations() -> dict[str, dict[str, Any]]:
    """A few FHIR R4 Observations (a blood pressure reading, LOINC 85354-9) to read."""
    return {
        f"obs-{i}": {
            "resourceType": "Observation",
            "id": f"obs-{i}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "effectiveDateTime": "2026-11-01T08:30:00+08:00",
            "component": [
                {
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                    "valueQuantity": {"value": 110 + i % 30, "unit": "mm[Hg]"},
                },
                {
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                    "valueQuantity": {"value": 70 + i % 20, "unit": "mm[Hg]"},
                },
            ],
        }
        for i in range(RECORDS)
    }


OBSERVATIONS = _observations()

# The router's guard applies the graded-protection table to both routes alike.
router = APIRouter(prefix=TOKEN_AUDIENCE, dependencies=[Depends(protection_guard())])
Reader = Annotated[AccessToken, Depends(require_token(READ_SCOPE))]


def _find(record_id: str) -> dict[str, Any]:
    observation = OBSERVATIONS.get(record_id)
    if observation is None:
        raise Problem(404, f"no Observation {record_id[:64]!r}")
    return observation


@router.get("/audited/Observation/{record_id}", summary="A level-3 read, audited write-ahead")
async def read_audited(record_id: str, request: Request, token: Reader) -> dict[str, Any]:
    observation = _find(record_id)
    # Durable in the ledger before the answer leaves, or a 503 (AuditUnavailable).
    await audit_access(
        request, entity_type="Observation", entity_id=record_id, citizen=token.sub, level=3
    )
    return observation


@router.get("/unaudited/Observation/{record_id}", summary="The same read, without auditing")
async def read_unaudited(record_id: str, token: Reader) -> dict[str, Any]:
    return _find(record_id)


def create_app(settings: AuditedBenchSettings | None = None) -> FastAPI:
    settings = settings or AuditedBenchSettings()
    ledger_url = settings.audit_url
    token_file = settings.bench_audit_token_file
    if ledger_url is None or token_file is None:
        raise ValueError(
            "the audited bench service needs ONECARD_AUDIT_URL and ONECARD_BENCH_AUDIT_TOKEN_FILE"
        )

    async def start(app: FastAPI) -> None:
        # The kit installed a client with platform credentials this bench service does not
        # have; the same client class, with the bench's token, replaces it.
        await app.state.audit.aclose()
        app.state.audit = AuditClient(
            ledger_url=ledger_url, tokens=FileTokens(token_file), timeout=settings.audit_timeout
        )

    return create_service_app(
        settings=settings,
        title="onecard bench: audited level-3 read",
        routers=[router],
        on_startup=start,
        token_audience=TOKEN_AUDIENCE,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audited_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    kit_logging.configure(SERVICE, args.log_level)
    # The options of services.kit.serve, so both routes run as a platform service would.
    uvicorn.run(
        "bench.audited_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=10,
        server_header=False,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
