"""Run one service in the foreground: what ``onecard serve NAME`` and the launcher's children do."""

from __future__ import annotations

from typing import Any

import uvicorn
from uvicorn.importer import import_from_string

from services.kit import logging as kit_logging
from services.kit.topology import by_name


def serve(name: str, *, host: str, port: int, log_level: str = "INFO") -> None:
    spec = by_name(name)
    # Configure JSON logging before uvicorn prints its first line.
    kit_logging.configure(name, log_level)

    def factory() -> Any:
        app = import_from_string(spec.factory)()
        # One app for the life of this process: its start-up heap can be frozen.
        app.state.freeze_startup_heap = True
        return app

    uvicorn.run(
        factory,
        factory=True,
        host=host,
        port=port,
        log_config=None,
        access_log=False,  # the kit's middleware logs each request once, with its request id
        lifespan="on",
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=10,
        server_header=False,
        # The gateway is the public entry: X-Forwarded-For from a caller is not to be trusted
        # (uvicorn would by default for loopback peers); services read the gateway's own
        # X-Forwarded-* headers explicitly where they need them.
        proxy_headers=False,
    )
