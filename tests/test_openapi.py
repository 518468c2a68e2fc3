"""The committed OpenAPI documents match the code (regenerate with ``make openapi``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli import openapi_documents, render_document
from services.kit import topology

OPENAPI = Path(__file__).resolve().parent.parent / "openapi"


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, object]]:
    return openapi_documents()


@pytest.mark.parametrize("name", [spec.name for spec in topology.ALL])
def test_committed_document_matches_the_code(
    name: str, documents: dict[str, dict[str, object]]
) -> None:
    committed = OPENAPI / f"{name}.json"
    assert committed.exists(), f"{committed} is missing; run `make openapi`"
    assert committed.read_text() == render_document(documents[name]), (
        f"{committed} drifted from the code; run `make openapi` and commit the result"
    )


def test_every_document_describes_the_operational_endpoints(
    documents: dict[str, dict[str, object]],
) -> None:
    for name, document in documents.items():
        paths = document["paths"]
        assert isinstance(paths, dict)
        assert {"/healthz", "/readyz", "/metrics"} <= set(paths), name
