"""Every service and the gateway enforce the newest graded-protection policy the security
administrator set in the ledger (``GET /audit/policy``), within ``interval`` seconds.

Until the ledger has answered once, and whenever it cannot be reached, the policy last known
stays in force (at start-up: the settings' ``ONECARD_PROTECTION_POLICY`` over the defaults): a
ledger outage never lowers a level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
from fastapi import FastAPI
from pydantic import ValidationError

from services.kit.protection import PolicyOverride, ProtectionPolicy

log = logging.getLogger(__name__)

POLICY_PATH = "/audit/policy"


class PolicyWatcher:
    def __init__(self, app: FastAPI, *, ledger_url: str, interval: float = 5.0) -> None:
        self.app = app
        self.interval = interval
        self.version = 0
        self._http = httpx.AsyncClient(base_url=ledger_url.rstrip("/"), timeout=2.0)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def refresh(self) -> bool:
        """Fetch the policy once; True when a newer version was put in force."""
        try:
            response = await self._http.get(POLICY_PATH)
            response.raise_for_status()
            body = response.json()
            version = int(body["version"])
            override = PolicyOverride.model_validate(body["policy"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError, ValidationError) as exc:
            log.debug("policy.unavailable", extra={"reason": type(exc).__name__})
            return False
        if version <= self.version:
            return False
        self.app.state.protection_policy = ProtectionPolicy.from_override(override)
        self.version = version
        log.info("policy.updated", extra={"version": version})
        return True

    async def _watch(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._http.aclose()
