"""The audit client every service and the gateway use to write to the ledger (issue 4).

Write-ahead, fail closed (DESIGN.md "Audit and graded protection"): an access to level-3 data
is recorded with :meth:`AuditClient.record`, which returns only once the ledger has durably
stored the entry, and raises :class:`AuditUnavailable` (503) otherwise, so the caller never
serves level-3 data unaudited. Refusals and lower levels use :meth:`AuditClient.record_later`:
queued and retried in the background until the ledger has them.

Entries from concurrent requests are sent together (group commit on the client side: whatever
queued while the previous submission was in flight leaves in the next one), at most
``max_in_flight`` submissions at a time. Every entry carries an id chosen here, so a retry after
a timeout or a ledger restart can never store it twice (the ledger's append is idempotent on
``entry_id``).

The client authenticates as a platform service: an access token with scope ``audit.append``,
obtained with the service's registered key (``services.kit.credentials``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from starlette.requests import Request

from services.kit.audit_record import Agent, AuditRecord
from services.kit.context import current_request_id
from services.kit.credentials import TokenUnavailable
from services.kit.errors import Problem
from services.kit.protection import policy_of
from services.kit.sqltypes import utcnow
from services.kit.tokens import AccessToken

log = logging.getLogger(__name__)

ENTRIES_PATH = "/audit/entries"
RETRY_AFTER_SECONDS = 2
# RFC 9110 section 9.3: the interaction a method stands for, as AuditEvent.action codes.
ACTIONS = {"GET": "R", "HEAD": "R", "POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}

TokenSource = Callable[[bool], Awaitable[str]]
"""Returns a bearer token for the ledger; called with True after the ledger refused the last
one (fetch a new one)."""


class AuditUnavailable(Problem):
    """The ledger did not confirm an entry in time: the access it records must not happen."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            503,
            f"the audit ledger did not confirm this access ({reason}); protected data is "
            "never served unaudited: retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


@dataclass(slots=True)
class _Pending:
    record: AuditRecord
    # Set for write-ahead records: the request waits on it. None: delivered in the background.
    done: asyncio.Future[None] | None
    attempts: int = 0


class AuditClient:
    """Batches entries to the ledger at ``ledger_url``; see the module docstring."""

    def __init__(
        self,
        *,
        ledger_url: str,
        tokens: TokenSource,
        timeout: float = 2.0,
        max_batch: int = 200,
        max_in_flight: int = 1,
        backlog_limit: int = 20_000,
    ) -> None:
        self.timeout = timeout
        self.max_batch = max_batch
        self.backlog_limit = backlog_limit
        self._tokens = tokens
        self._entries_url = ledger_url.rstrip("/") + ENTRIES_PATH
        # aiohttp, not httpx: a submission is on the path of every audited request, and
        # aiohttp's client (its HTTP parser in C) spent about 75 µs of CPU per small JSON POST
        # where httpx spent about 440, measured side by side at concurrency 8 on one machine.
        # Made on first use: an aiohttp session belongs to the event loop that runs it.
        self._http: aiohttp.ClientSession | None = None
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0

    # -- what callers use ---------------------------------------------------------------------

    async def record(self, record: AuditRecord) -> None:
        """Return once the ledger durably holds ``record``; else raise :class:`AuditUnavailable`."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending(record, done))
        try:
            # The deliverer gives up on its own deadline; this one only guards a stuck task.
            await asyncio.wait_for(asyncio.shield(done), self.timeout * 3)
        except TimeoutError:
            raise AuditUnavailable(f"no receipt within {self.timeout * 3:g} s") from None

    def record_later(self, record: AuditRecord) -> None:
        """Deliver ``record`` in the background, retrying until the ledger has it."""
        if self._closing:
            log.warning("audit.dropped", extra={"entry_id": record.entry_id, "why": "closing"})
            return
        backlog = sum(1 for p in self._queue if p.done is None)
        if backlog >= self.backlog_limit:
            # Bounded memory beats an unbounded queue that takes the whole service down; the
            # loss is counted and logged so an operator sees it.
            self.dropped += 1
            log.error("audit.dropped", extra={"entry_id": record.entry_id, "why": "backlog full"})
            return
        self._enqueue(_Pending(record, None))

    async def aclose(self, *, flush_timeout: float = 2.0) -> None:
        """Stop, after trying for ``flush_timeout`` to deliver what is queued."""
        self._closing = True
        deadline = time.monotonic() + flush_timeout
        while (self._queue or self._tasks) and time.monotonic() < deadline:
            self._wakeup.set()
            await asyncio.sleep(0.02)
        if self._flusher is not None:
            self._flusher.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pending in self._queue:
            if pending.done is not None and not pending.done.done():
                pending.done.set_exception(AuditUnavailable("the service is stopping"))
            else:
                log.warning("audit.dropped", extra={"entry_id": pending.record.entry_id})
        self._queue.clear()
        if self._http is not None:
            await self._http.close()
        close = getattr(self._tokens, "aclose", None)
        if close is not None:
            await close()

    # -- delivery -----------------------------------------------------------------------------

    def _enqueue(self, pending: _Pending) -> None:
        self._queue.append(pending)
        self._wake()

    def _wake(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())
        self._wakeup.set()

    async def _flush_forever(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._slots.acquire()
            # Write-ahead entries first: a request is waiting on each of them.
            waiting = [p for p in self._queue if p.done is not None][: self.max_batch]
            chosen = {id(p) for p in waiting}
            batch = (
                waiting
                + [p for p in self._queue if id(p) not in chosen][: self.max_batch - len(waiting)]
            )
            taken = {id(p) for p in batch}
            self._queue = deque(p for p in self._queue if id(p) not in taken)
            task = asyncio.get_running_loop().create_task(self._deliver(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, batch: list[_Pending]) -> None:
        try:
            error, retryable = await self._submit_with_retries(batch)
        finally:
            self._slots.release()
        retry: list[_Pending] = []
        for pending in batch:
            if pending.done is not None:
                if pending.done.done():
                    continue
                if error is None:
                    pending.done.set_result(None)
                else:
                    pending.done.set_exception(AuditUnavailable(error))
            elif error is not None:
                if retryable and not self._closing:
                    pending.attempts += 1
                    retry.append(pending)
                else:
                    log.error("audit.dropped", extra={"entry_id": pending.record.entry_id})
        if retry:
            log.warning("audit.retrying", extra={"entries": len(retry), "reason": error})
            # Background entries wait a little (the ledger is down or restarting), then queue
            # again behind newer ones; their ids keep a late duplicate harmless.
            delay = min(5.0, 0.2 * 2 ** min(retry[0].attempts, 5))
            asyncio.get_running_loop().call_later(delay, self._requeue, retry)

    def _requeue(self, retry: list[_Pending]) -> None:
        if not self._closing:
            self._queue.extend(retry)
            self._wake()

    async def _submit_with_retries(self, batch: list[_Pending]) -> tuple[str | None, bool]:
        """(None, _) once the ledger acknowledged every entry of ``batch``; else why not, and
        whether trying again later may help."""
        deadline = time.monotonic() + self.timeout
        # pydantic serializes each entry (its JSON mode: what model_dump(mode="json") gives).
        body = b'{"entries":[%s]}' % b",".join(
            p.record.model_dump_json(exclude_none=True).encode() for p in batch
        )
        refresh = False
        delay = 0.05
        while True:
            try:
                token = await self._tokens(refresh)
                status, answer = await self._post(body, token)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                reason = f"ledger unreachable: {type(exc).__name__}"
            except TokenUnavailable as exc:
                reason = str(exc)
            else:
                if status in (200, 201):
                    return self._check_receipts(batch, _json_or_none(answer)), True
                if status == 401 and not refresh:
                    refresh = True  # an expired or rotated token: one fresh try at once
                    continue
                reason = f"ledger answered {status}"
                if status < 500 and status != 429:
                    # A refusal will not change on retry: a bug or a misconfiguration.
                    log.error(
                        "audit.refused",
                        extra={"status": status, "detail": answer[:300].decode(errors="replace")},
                    )
                    return reason, False
            if time.monotonic() + delay > deadline:
                return reason, True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _post(self, body: bytes, token: str) -> tuple[int, bytes]:
        """One submission: the ledger's status and body."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=min(self.timeout, 1.0)),
                connector=aiohttp.TCPConnector(limit=0),
                trust_env=False,
            )
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with self._http.post(self._entries_url, data=body, headers=headers) as response:
            return response.status, await response.read()

    @staticmethod
    def _check_receipts(batch: list[_Pending], body: Any) -> str | None:
        receipts = body.get("receipts") if isinstance(body, dict) else None
        stored = {r.get("entry_id") for r in receipts or () if isinstance(r, dict)}
        missing = [p.record.entry_id for p in batch if p.record.entry_id not in stored]
        return f"no receipt for {len(missing)} entries" if missing else None


def _json_or_none(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


# --- Building records -----------------------------------------------------------------------


def new_entry_id() -> str:
    return uuid.uuid4().hex


def agent_of(token: AccessToken | None) -> Agent:
    """Who acted (FHIR AuditEvent.agent; IHE BALP): the token's subject, with the terminal or
    app acting for them (RFC 8693 ``act``) when it is not the subject itself."""
    if token is None:
        return Agent(who="anonymous")
    via = None
    if token.act and isinstance(token.act.get("sub"), str):
        via = token.act["sub"]
    elif token.client_id != token.sub:
        via = token.client_id
    role = "institution" if token.client_id == token.sub else "person"
    return Agent(who=token.sub, role=role, acting_via=via)


def access_record(
    request: Request,
    *,
    entity_type: str,
    level: int,
    action: str | None = None,
    entity_id: str | None = None,
    citizen: str | None = None,
    outcome: str = "success",
    detail: str | None = None,
    purpose: str | None = None,
    token: AccessToken | None = None,
) -> AuditRecord:
    """The entry for one request: who (from its verified token), what, whose, why, outcome."""
    token = token or getattr(request.state, "access_token", None)
    return AuditRecord(
        entry_id=new_entry_id(),
        time=utcnow(),
        action=action or ACTIONS.get(request.method, "E"),
        agent=agent_of(token),
        on_behalf_of=None,
        entity_type=entity_type,
        entity_id=entity_id,
        citizen=citizen,
        purpose=purpose,
        outcome=outcome,
        outcome_detail=detail[:500] if detail else None,
        request_id=current_request_id() or None,
        source=request.client.host if request.client else None,
        level=level,
    )


def refusal_record(request: Request, problem: Problem) -> AuditRecord:
    """The entry for a refused request (401 or 403): what was asked, by whom, and why not."""
    level = problem.extensions.get("protection_level")
    path = request.url.path
    return access_record(
        request,
        entity_type=_entity_type(path),
        level=level if isinstance(level, int) else _route_level(request),
        outcome="refused",
        detail=f"{problem.status} {request.method} {path[:200]}: {problem.detail}",
    )


def _entity_type(path: str) -> str:
    """``/fhir/Observation/1`` -> Observation; ``/insurance/claims`` -> insurance."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "fhir" and parts[1][:1].isupper():
        candidate = parts[1]
    else:
        candidate = parts[0] if parts else "root"
    cleaned = "".join(c for c in candidate if c.isalnum() or c in "_.-")[:64]
    return cleaned if cleaned[:1].isalpha() else "request"


def _route_level(request: Request) -> int:
    return policy_of(request).level_for(request.method, request.url.path)


async def audit_access(request: Request, **fields: Any) -> None:
    """Record one access of ``request`` (fields as for :func:`access_record`) before its
    response leaves: durably first for level 3 and above (raises :class:`AuditUnavailable`),
    in the background below."""
    record = access_record(request, **fields)
    client: AuditClient | None = getattr(request.app.state, "audit", None)
    if client is None:
        # Only outside production (settings refuse a missing ledger there): a developer's
        # service without a ledger still says what it would have recorded.
        log.info("audit.local", extra={"record": record.model_dump(mode="json")})
        return
    if record.level >= 3:
        await client.record(record)
    else:
        client.record_later(record)
