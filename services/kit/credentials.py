"""A registered client's credentials file and the SMART Backend Services token request.

What a hospital system (or a terminal, an administrator, a platform service) holds: its client
id and the private key whose public JWK it registered. To get a token it signs a short client
assertion (RFC 7523, ``private_key_jwt``) addressed to the token endpoint, and posts it with
``grant_type=client_credentials`` (SMART App Launch, backend services).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.kit.tokens import public_jwk, sign_jwt

FORMAT = "onecard-client-credentials/1"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_PATH = "/identity/oauth2/token"  # noqa: S105 - a URL path, not a secret


@dataclass
class ClientCredentials:
    client_id: str
    kid: str
    private_key: ec.EllipticCurvePrivateKey
    # The public base URL the client talks to (the gateway); the token endpoint is under it.
    base_url: str

    @classmethod
    def generate(cls, *, client_id: str, base_url: str) -> ClientCredentials:
        """A fresh key pair for a client about to be registered."""
        return cls(
            client_id=client_id,
            kid="c" + secrets.token_hex(6),
            private_key=ec.generate_private_key(ec.SECP256R1()),
            base_url=base_url.rstrip("/"),
        )

    @property
    def jwk(self) -> dict[str, str]:
        """The public JWK to register (RFC 7517)."""
        return public_jwk(self.private_key.public_key(), self.kid)

    @property
    def token_endpoint(self) -> str:
        return self.base_url + TOKEN_PATH

    def assertion(self, *, audience: str | None = None, lifetime: int = 60) -> str:
        """A single-use client assertion (RFC 7523 section 3), valid ``lifetime`` seconds."""
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience or self.token_endpoint,
            "iat": now,
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        return sign_jwt(claims, private_key=self.private_key, kid=self.kid, typ="JWT")

    def token_form(self, scope: str | None = None) -> dict[str, str]:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(),
        }
        if scope:
            form["scope"] = scope
        return form

    async def fetch_token(self, http: httpx.AsyncClient, scope: str | None = None) -> str:
        """An access token for this client (raises on refusal, with the server's detail)."""
        response = await http.post(TOKEN_PATH, data=self.token_form(scope))
        if response.status_code != 200:
            raise RuntimeError(f"token request refused ({response.status_code}): {response.text}")
        token: str = response.json()["access_token"]
        return token

    # -- the credentials file (mode 0600: it holds a private key) -----------------------------
    def save(self, path: Path) -> None:
        data: dict[str, Any] = {
            "format": FORMAT,
            "client_id": self.client_id,
            "kid": self.kid,
            "base_url": self.base_url,
            "private_key": self.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ClientCredentials:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a onecard client credentials file")
        key = serialization.load_pem_private_key(data["private_key"].encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} does not hold an EC private key")
        return cls(
            client_id=data["client_id"], kid=data["kid"], private_key=key, base_url=data["base_url"]
        )


class TokenUnavailable(Exception):
    """No access token could be had (no credentials file yet, or the token endpoint refused)."""


class ServiceTokens:
    """Access tokens for one platform service, from its credentials file (SMART Backend
    Services ``client_credentials``, ``private_key_jwt``), cached until shortly before they
    expire.

    The credentials file is read on each fetch, not at start-up: a service starts before the
    identity service has provisioned it, and picks its credentials up as soon as they exist.
    """

    # Fetch a new token this long before the current one expires (tokens live 300 s).
    MARGIN_SECONDS = 30.0

    def __init__(
        self,
        *,
        credentials_path: Path,
        token_url: str,
        audience: str,
        scope: str,
        timeout: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.credentials_path = credentials_path
        self.token_url = token_url
        # RFC 7523 section 3: the assertion's aud is the token endpoint's public URL, even
        # when the service reaches identity directly (the identity service checks it so).
        self.audience = audience
        self.scope = scope
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires = 0.0

    async def __call__(self, refresh: bool = False) -> str:
        if self._token is not None and not refresh and time.time() < self._expires:
            return self._token
        async with self._lock:
            if self._token is not None and not refresh and time.time() < self._expires:
                return self._token
            self._token, lifetime = await self._fetch()
            self._expires = time.time() + max(lifetime - self.MARGIN_SECONDS, 1.0)
            return self._token

    async def _fetch(self) -> tuple[str, float]:
        try:
            credentials = ClientCredentials.load(self.credentials_path)
        except FileNotFoundError:
            raise TokenUnavailable(f"no service credentials at {self.credentials_path}") from None
        except (ValueError, KeyError, OSError) as exc:
            raise TokenUnavailable(f"unusable service credentials: {exc}") from None
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": credentials.assertion(audience=self.audience),
            "scope": self.scope,
        }
        try:
            response = await self._http.post(self.token_url, data=form)
        except httpx.HTTPError as exc:
            raise TokenUnavailable(f"token endpoint unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise TokenUnavailable(f"token endpoint answered {response.status_code}")
        body = response.json()
        return str(body["access_token"]), float(body.get("expires_in", 60))

    async def aclose(self) -> None:
        await self._http.aclose()
