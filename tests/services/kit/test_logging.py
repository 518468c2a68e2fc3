"""Logs are JSON lines with the request id, and never carry ID numbers, PINs or tokens."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from services.kit import logging as kit_logging
from services.kit.context import reset_request_id, set_request_id

# A syntactically valid GB 11643 number (check digit included) and a compact JWS.
ID_NUMBER = "11010519491231002X"
JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjaXRpemVuLTEifQ.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    kit_logging.configure("identity", "INFO")
    yield capsys
    root.handlers[:], root.level = saved


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_each_line_is_json_with_service_level_and_request_id(
    captured: pytest.CaptureFixture[str],
) -> None:
    token = set_request_id("req-12345678")
    try:
        logging.getLogger("identity.cards").info("card issued", extra={"card": "C0001"})
    finally:
        reset_request_id(token)
    [line] = _lines(captured)
    assert line["message"] == "card issued"
    assert line["level"] == "INFO"
    assert line["service"] == "identity"
    assert line["logger"] == "identity.cards"
    assert line["request_id"] == "req-12345678"
    assert line["card"] == "C0001"


def test_sensitive_fields_are_masked_by_name(captured: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("t").info(
        "login", extra={"pin": "123456", "authorization": "Bearer x", "detail": {"puk": "87654321"}}
    )
    [line] = _lines(captured)
    assert line["pin"] == "[redacted]"
    assert line["authorization"] == "[redacted]"
    assert line["detail"] == {"puk": "[redacted]"}


def test_id_numbers_and_tokens_are_masked_wherever_they_appear(
    captured: pytest.CaptureFixture[str],
) -> None:
    logging.getLogger("t").warning("lookup of %s with %s failed", ID_NUMBER, JWT)
    out = captured.readouterr().err
    assert ID_NUMBER not in out
    assert JWT not in out
    assert "lookup of [redacted] with [redacted] failed" in out


def test_longer_digit_runs_are_not_mistaken_for_id_numbers() -> None:
    assert kit_logging.redact_text("order 1234567890123456789") == "order 1234567890123456789"
