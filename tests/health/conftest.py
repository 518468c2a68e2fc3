"""The whole health app in-process, with tokens from a test signer instead of the identity
service (its JWKS replaced by a static key set, as tests/services/audit/test_routes.py does)."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI

from health.app import create_app
from health.settings import HealthSettings
from services.kit.tokens import KeySet, StaticKeySource, sign_access_token
from tests.harness import serve_asgi

ISSUER = "http://testserver"
FHIR_KEY = ec.generate_private_key(ec.SECP256R1())


def _synthea_dir() -> Path:
    """The Synthea bundles (../shared/fhir-data/synthea beside the checkout, as in the
    workplace; ``ONECARD_SYNTHEA_DIR`` elsewhere). Wherever the checkout was cloned, the
    workplace's copy is found by walking up its parents, then at its usual place."""
    override = os.environ.get("ONECARD_SYNTHEA_DIR")
    if override:
        return Path(override)
    here = Path(__file__).resolve()
    candidates = [p / "shared" / "fhir-data" / "synthea" for p in here.parents]
    candidates.append(Path("/work/shared/fhir-data/synthea"))
    for candidate in candidates:
        if any(candidate.glob("*.json")):
            return candidate
    return candidates[-1]


SYNTHEA_DIR = _synthea_dir()


def synthea_file(name: str) -> Path:
    """The Synthea bundle whose file name starts with ``name``."""
    found = sorted(SYNTHEA_DIR.glob(f"{name}*.json"))
    if not found:
        raise FileNotFoundError(
            f"no Synthea bundle {name}* in {SYNTHEA_DIR}: set ONECARD_SYNTHEA_DIR to the "
            "folder of the shared fhir-data/synthea bundles"
        )
    return found[0]


def fhir_auth(scope: str = "system/*.cruds", *, client_id: str = "hospital-a") -> dict[str, str]:
    """An Authorization header with a token for the FHIR store (a hospital's backend client)."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": client_id,
        "aud": [ISSUER + "/fhir"],
        "exp": now + 300,
        "iat": now,
        "jti": secrets.token_hex(8),
        "client_id": client_id,
        "scope": scope,
        "acr": "3",
        "amr": ["pop"],
    }
    return {"Authorization": "Bearer " + sign_access_token(claims, private_key=FHIR_KEY, kid="kf")}


def conforms(resource: dict[str, Any]) -> None:
    """Fail unless ``resource`` is a valid FHIR R4 resource (what a strict client parses)."""
    from fhir.resources.R4B import get_fhir_model_class

    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


@pytest.fixture
async def fhir_app(make_settings: Callable[..., Any]) -> FastAPI:
    app = create_app(make_settings(HealthSettings, public_url=ISSUER))
    # Read by the kit's lifespan instead of fetching the identity service's JWKS.
    app.state.token_keys = StaticKeySource(KeySet({"kf": FHIR_KEY.public_key()}))
    return app


@pytest.fixture
async def fhir(fhir_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The health app over ASGI; every request carries a ``system/*.cruds`` token unless the
    test passes its own Authorization header."""
    async with serve_asgi(fhir_app) as http:
        http.headers.update(fhir_auth())
        yield http
