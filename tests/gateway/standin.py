"""A stand-in service run as a process of its own, so a test can kill it with SIGKILL.

``python -m uvicorn tests.gateway.standin:app --port N``. ``.../slow?seconds=S`` answers after
S seconds; anything else answers 200 at once.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"].endswith("/slow"):
        query = parse_qs(scope["query_string"].decode())
        await asyncio.sleep(float(query["seconds"][0]))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"alive"})
