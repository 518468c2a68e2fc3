"""JSON logs, one object per line, with the request id and secrets redacted.

Security rule: national ID numbers, PINs, private keys and tokens are never logged. Fields with
sensitive names are masked, and values that look like an ID number or a JWT are masked wherever
they appear, as a second line of defence against a careless log call.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from services.kit.context import current_request_id

SENSITIVE_FIELDS = frozenset(
    {
        "national_id",
        "id_number",
        "pin",
        "puk",
        "password",
        "token",
        "access_token",
        "refresh_token",
        "authorization",
        "private_key",
        "secret",
        "assertion",
        "client_assertion",
    }
)
# GB 11643 citizen ID numbers (17 digits + digit or X) and compact JWS/JWT strings.
_ID_NUMBER = re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
REDACTED = "[redacted]"


def redact_text(value: str) -> str:
    return _JWT.sub(REDACTED, _ID_NUMBER.sub(REDACTED, value))


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            k: REDACTED if str(k).lower() in SENSITIVE_FIELDS else _redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


class _OnecardFormatter(JsonFormatter):
    def __init__(self, service: str) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
        self.service = service

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        log_data["service"] = self.service
        request_id = current_request_id()
        if request_id:
            log_data["request_id"] = request_id
        return _redact(log_data)  # type: ignore[no-any-return]


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the call, not at configuration."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure(service: str, level: str = "INFO") -> None:
    """Route every logger (ours, uvicorn's, SQLAlchemy's) through one JSON handler on stderr."""
    handler = _StderrHandler()
    handler.setFormatter(_OnecardFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The kit's middleware writes one access line per request with the request id.
    logging.getLogger("uvicorn.access").disabled = True
