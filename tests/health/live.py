"""The health app on a real port, for the third-party FHIR clients (fhirpy, fhirclient) that
speak HTTP over their own libraries (aiohttp, requests) and cannot use an ASGI transport."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI

from tests.harness import ServerThread


@dataclass(frozen=True)
class LiveFhir:
    """Where the clients point: the FHIR base URL they use, as a user would configure it."""

    base: str


class _LifespanServer(ServerThread):
    """uvicorn runs the app's lifespan in its own thread and loop, so the database engine and
    Redis connections live on the loop that serves the requests (asyncpg connections are tied
    to the loop that opened them)."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__(app)
        self.config.lifespan = "on"


@contextlib.contextmanager
def _serve(app: FastAPI) -> Iterator[ServerThread]:
    server = _LifespanServer(app).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def live_fhir(fhir_app: FastAPI) -> Iterator[LiveFhir]:
    """The health app (on the test's backend) served on 127.0.0.1 at a free port."""
    with _serve(fhir_app) as server:
        yield LiveFhir(base=f"{server.url}/fhir")
