"""The kit's audit client against a real ledger process: write-ahead and fail closed (issue 4).

The ledger runs as its own process (uvicorn, the platform's real app) so it can be killed
mid-stream; the service under test is a kit app with one level-3 route that records each
access before answering, and one level-2 route that records in the background.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import APIRouter, Depends, FastAPI, Request
from sqlmodel import select

from services.audit.models import AuditEntry
from services.audit.settings import AuditSettings
from services.kit.app import create_service_app
from services.kit.audit import AuditClient, audit_access
from services.kit.auth import require_token
from services.kit.database import Database
from services.kit.protection import protection_guard
from services.kit.settings import ServiceSettings
from services.kit.tokens import (
    AccessToken,
    KeySet,
    StaticKeySource,
    public_jwk,
    sign_access_token,
)
from tests.gateway.conftest import JwksDouble
from tests.harness import free_port, serve_asgi, server_thread, wait_until

ISSUER = "http://testserver"
KID = "audit-test"
KEY = ec.generate_private_key(ec.SECP256R1())
CITIZEN = "cz_0123456789abcdef"


def _token(*, audience: str, scope: str, sub: str, client_id: str, acr: str) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": sub,
        "aud": [ISSUER + audience],
        "exp": now + 300,
        "iat": now,
        "jti": secrets.token_hex(8),
        "client_id": client_id,
        "scope": scope,
        "acr": acr,
        "amr": ["sc", "pin"],
    }
    return sign_access_token(claims, private_key=KEY, kid=KID)


async def service_token(refresh: bool = False) -> str:
    """What a platform service's credentials get it from identity: ``audit.append``."""
    return _token(
        audience="/audit", scope="audit.append", sub="svc_test", client_id="svc_test", acr="3"
    )


def citizen_headers(scope: str = "patient/*.rs", acr: str = "2") -> dict[str, str]:
    token = _token(audience="/test", scope=scope, sub=CITIZEN, client_id="term_desk", acr=acr)
    return {"Authorization": f"Bearer {token}"}


# --- The ledger, as a process of its own ---------------------------------------------------


@dataclass
class LedgerProcess:
    settings: AuditSettings
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "uvicorn", "--factory", "services.audit.app:create_app"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"the ledger did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    async def entries(self) -> list[dict[str, Any]]:
        db = Database.for_settings(self.settings)
        try:
            async with db.sessionmaker() as session:
                rows = (await session.exec(select(AuditEntry).order_by(AuditEntry.seq))).all()  # type: ignore[arg-type]
        finally:
            await db.dispose()
        return [orjson.loads(row.record) for row in rows]


@pytest.fixture
def ledger(make_settings: Callable[..., Any], tmp_path: Path) -> Iterator[LedgerProcess]:
    with server_thread(JwksDouble({"keys": [public_jwk(KEY.public_key(), KID)]})) as jwks:
        settings: AuditSettings = make_settings(
            AuditSettings, public_url=ISSUER, jwks_url=jwks.url + "/jwks.json"
        )
        env = {**os.environ, "ONECARD_ENVIRONMENT": "test"}
        for name in ("var_dir", "database_url", "database_schema", "redis_url", "redis_prefix"):
            value = getattr(settings, name)
            if value is not None:
                env[f"ONECARD_{name.upper()}"] = str(value)
        env.update(ONECARD_PUBLIC_URL=ISSUER, ONECARD_JWKS_URL=settings.jwks_url)
        ledger = LedgerProcess(settings, free_port(), env, tmp_path / "ledger.log")
        ledger.start()
        try:
            yield ledger
        finally:
            if ledger.process is not None and ledger.process.poll() is None:
                ledger.process.terminate()
                ledger.process.wait(timeout=10)


# --- The service under test ----------------------------------------------------------------


class DemoSettings(ServiceSettings):
    service = "demo"


# The graded-protection table applies (unlisted paths hold level 3) and can be changed by the
# security administrator in the ledger.
router = APIRouter(prefix="/test", dependencies=[Depends(protection_guard())])
Reader = Annotated[AccessToken, Depends(require_token("patient/*.rs"))]


@router.get("/records/{record_id}")
async def read_record(record_id: str, request: Request, token: Reader) -> dict[str, str]:
    # Level-3 data: the entry is durable before the answer leaves, or the answer is a 503.
    await audit_access(
        request, entity_type="Observation", entity_id=record_id, citizen=token.sub, level=3
    )
    return {"id": record_id, "value": "level-3 data"}


@router.get("/summary")
async def read_summary(request: Request, token: Reader) -> dict[str, str]:
    await audit_access(request, entity_type="summary", citizen=token.sub, level=2)
    return {"summary": "level-2 data"}


@pytest.fixture
async def service(
    make_settings: Callable[..., Any], ledger: LedgerProcess
) -> AsyncIterator[httpx.AsyncClient]:
    async def start(app: FastAPI) -> None:
        app.state.token_keys = StaticKeySource(KeySet({KID: KEY.public_key()}))
        await app.state.audit.aclose()
        app.state.audit = AuditClient(ledger_url=ledger.url, tokens=service_token, timeout=1.0)

    app = create_service_app(
        settings=make_settings(
            DemoSettings, public_url=ISSUER, audit_url=ledger.url, policy_refresh_seconds=0.2
        ),
        title="a service under audit",
        routers=[router],
        on_startup=start,
        token_audience="/test",
    )
    async with serve_asgi(app) as http:
        yield http


# --- Behaviour ------------------------------------------------------------------------------


async def test_a_level_3_answer_leaves_only_once_its_entry_is_in_the_ledger(
    service: httpx.AsyncClient, ledger: LedgerProcess
) -> None:
    response = await service.get("/test/records/obs-1", headers=citizen_headers())
    assert response.status_code == 200
    # No waiting: the entry was durable before the answer was sent.
    [entry] = await ledger.entries()
    assert entry["request_id"] == response.headers["x-request-id"]
    assert entry["citizen"] == CITIZEN
    assert entry["entity_type"] == "Observation"
    assert entry["entity_id"] == "obs-1"
    assert entry["action"] == "R"
    assert entry["outcome"] == "success"
    assert entry["level"] == 3
    # The card holder acted through the registration desk's terminal.
    assert entry["agent"] == {"who": CITIZEN, "role": "person", "acting_via": "term_desk"}


async def test_every_refusal_is_recorded(service: httpx.AsyncClient, ledger: LedgerProcess) -> None:
    refused = await service.get("/test/records/obs-1", headers=citizen_headers("benefits.read"))
    assert refused.status_code == 403
    anonymous = await service.get("/test/records/obs-1")
    assert anonymous.status_code == 401

    async def both_recorded() -> bool:
        return len(await ledger.entries()) == 2

    await wait_until(both_recorded)
    by_request = {e["request_id"]: e for e in await ledger.entries()}
    scope_refusal = by_request[refused.headers["x-request-id"]]
    assert scope_refusal["outcome"] == "refused"
    assert scope_refusal["agent"]["who"] == CITIZEN
    assert "lacks scope patient/*.rs" in scope_refusal["outcome_detail"]
    no_token = by_request[anonymous.headers["x-request-id"]]
    assert no_token["outcome"] == "refused"
    assert no_token["agent"] == {"who": "anonymous"}
    assert no_token["entity_type"] == "test"


async def test_with_the_ledger_down_level_3_data_is_refused_and_lower_levels_catch_up(
    service: httpx.AsyncClient, ledger: LedgerProcess
) -> None:
    ledger.kill()
    started = time.monotonic()
    down = await service.get("/test/records/obs-2", headers=citizen_headers())
    assert down.status_code == 503
    assert time.monotonic() - started < 5  # bounded by the audit timeout, not hanging
    assert down.headers["retry-after"] == "2"
    assert "never served unaudited" in down.json()["detail"]
    assert "level-3 data" not in down.text
    # Level 2 is served and its entry waits in the background for the ledger to return.
    summary = await service.get("/test/summary", headers=citizen_headers())
    assert summary.status_code == 200

    ledger.start()

    async def caught_up() -> bool:
        entries = await ledger.entries()
        return any(e["request_id"] == summary.headers["x-request-id"] for e in entries)

    await wait_until(caught_up, timeout=15)
    # The refused level-3 read was never recorded as served.
    assert not any(
        e["request_id"] == down.headers["x-request-id"] and e["outcome"] == "success"
        for e in await ledger.entries()
    )


async def test_killing_the_ledger_mid_stream_serves_nothing_unaudited(
    service: httpx.AsyncClient, ledger: LedgerProcess
) -> None:
    """Issue 4: kill the ledger while 1,000 audited requests run; every request either got
    its audit entry or was refused."""
    total, concurrency = 1000, 16
    results: list[httpx.Response] = []
    headers = citizen_headers()
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            results.append(await service.get(f"/test/records/obs-{i}", headers=headers))
            if len(results) == 300:
                ledger.kill()
            if len(results) == 600:
                ledger.start()

    await asyncio.gather(*(worker() for _ in range(concurrency)))

    assert len(results) == total
    statuses = {r.status_code for r in results}
    assert statuses <= {200, 503}, statuses
    served = {r.headers["x-request-id"] for r in results if r.status_code == 200}
    refused = {r.headers["x-request-id"] for r in results if r.status_code == 503}
    # The kill really happened mid-stream.
    assert served
    assert refused
    recorded = {e["request_id"] for e in await ledger.entries() if e["outcome"] == "success"}
    assert served <= recorded  # nothing served unaudited
    entries = await ledger.entries()
    assert len({e["request_id"] for e in entries}) == len(entries)  # no entry stored twice


async def test_the_security_administrators_policy_is_enforced_within_seconds(
    service: httpx.AsyncClient, ledger: LedgerProcess
) -> None:
    one_factor = citizen_headers(acr="1")  # the card alone, without its PIN
    assert (await service.get("/test/summary", headers=one_factor)).status_code == 403

    admin = _token(
        audience="/audit", scope="policy.manage", sub="adm_sec", client_id="adm_sec", acr="3"
    )
    change = {
        "policy": {"rules": [{"prefix": "/test/summary", "level": 2}]},
        "based_on": 0,
        "reason": "the summary holds no health data",
    }
    async with httpx.AsyncClient(base_url=ledger.url) as http:
        response = await http.put(
            "/audit/policy", json=change, headers={"Authorization": f"Bearer {admin}"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["version"] == 1

    async def lowered() -> bool:
        response = await service.get("/test/summary", headers=one_factor)
        return response.status_code == 200

    await wait_until(lowered, timeout=5)
    # The records keep level 3, and the change itself is in the ledger.
    assert (await service.get("/test/records/r", headers=one_factor)).status_code == 403
    changes = [e for e in await ledger.entries() if e["entity_type"] == "ProtectionPolicy"]
    assert [(c["agent"]["who"], c["action"], c["entity_id"]) for c in changes] == [
        ("adm_sec", "U", "1")
    ]
