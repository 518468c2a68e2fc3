"""The terminal simulator: what a card terminal (or the citizen's phone) does, over HTTP.

A registered terminal holds client credentials (its id and the private key whose CSR it sent
at registration). For each tap it uses its own short token (``client_credentials`` with a
``private_key_jwt`` assertion, scope ``terminal.auth``, kept until shortly before it
expires), asks for a challenge, lets the card sign it, and posts the card's answer; the
identity service answers with the holder's token. :func:`tap` is the whole flow, importable
so a benchmark can run thousands of them on one ``httpx.AsyncClient``.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import CertificateSigningRequestBuilder, Name, NameAttribute
from cryptography.x509.oid import NameOID

from identity.terminals.cards import jwk_thumbprint
from services.kit.credentials import TOKEN_PATH, ClientCredentials
from services.kit.tokens import unverified_claims

TERMINAL_SCOPE = "terminal.auth"
REGISTER_PATH = "/identity/terminals"
CHALLENGE_PATH = "/identity/terminal/challenges"
AUTHENTICATE_PATH = "/identity/terminal/authentications"
QR_REDEEM_PATH = "/identity/terminal/qr-redemptions"
APP_CHALLENGE_PATH = "/identity/app/challenges"
APP_SESSION_PATH = "/identity/app/sessions"
# Renew the terminal's own token this long before it expires, so no tap meets an expired one.
TOKEN_MARGIN_SECONDS = 30


class FlowError(Exception):
    """The platform refused a step; ``detail`` and ``code`` are its problem+json members."""

    def __init__(self, step: str, response: httpx.Response) -> None:
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        self.status = response.status_code
        self.code: str | None = body.get("code") or body.get("error")
        self.detail: str = body.get("detail") or response.text[:200]
        self.retry_after = response.headers.get("retry-after")
        super().__init__(f"{step} refused ({self.status}): {self.detail}")


class Card(Protocol):
    """What a terminal needs from a card (``identity.simulators.card.VirtualCard`` is one)."""

    @property
    def certificate_pem(self) -> str | None: ...

    def sign_challenge(
        self, *, domain: str, terminal_id: str, nonce: bytes, pin: str | None
    ) -> tuple[bytes, bool]: ...


@dataclass(frozen=True)
class TapResult:
    """The holder's token as issued, and its claims (decoded for display, not verified here)."""

    access_token: str
    expires_in: int
    scope: str
    response: dict[str, Any] = field(repr=False)

    @property
    def claims(self) -> dict[str, Any]:
        return unverified_claims(self.access_token)


def _b64url_nonce(nonce: str) -> bytes:
    return base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))


def card_answer(card: Card, challenge: dict[str, Any], *, pin: str | None) -> dict[str, Any]:
    """Let the card sign the challenge and build the answer to post (the PIN stays here)."""
    certificate = card.certificate_pem
    if certificate is None:
        raise ValueError("the card holds no certificate yet: it was never issued")
    signature, pin_verified = card.sign_challenge(
        domain=challenge["domain"],
        terminal_id=challenge["terminal_id"],
        nonce=_b64url_nonce(challenge["nonce"]),
        pin=pin,
    )
    return {
        "nonce": challenge["nonce"],
        "certificate": certificate,
        "signature": base64.b64encode(signature).decode(),
        "pin_verified": pin_verified,
    }


class VirtualTerminal:
    """A registered terminal: its credentials and its current token."""

    def __init__(self, credentials: ClientCredentials) -> None:
        self.credentials = credentials
        self._token: str | None = None
        self._renew_at = 0.0

    @property
    def terminal_id(self) -> str:
        return self.credentials.client_id

    async def access_token(self, http: httpx.AsyncClient) -> str:
        """The terminal's own token (scope terminal.auth), fetched again shortly before expiry."""
        if self._token is not None and time.monotonic() < self._renew_at:
            return self._token
        response = await http.post(TOKEN_PATH, data=self.credentials.token_form(TERMINAL_SCOPE))
        if response.status_code != 200:
            raise FlowError("terminal token", response)
        body = response.json()
        self._token = str(body["access_token"])
        self._renew_at = time.monotonic() + int(body["expires_in"]) - TOKEN_MARGIN_SECONDS
        return self._token

    async def _post(self, http: httpx.AsyncClient, step: str, path: str, body: Any) -> Any:
        headers = {"Authorization": f"Bearer {await self.access_token(http)}"}
        response = await http.post(path, json=body, headers=headers)
        if response.status_code != 200:
            raise FlowError(step, response)
        return response.json()

    async def challenge(self, http: httpx.AsyncClient) -> dict[str, Any]:
        result: dict[str, Any] = await self._post(http, "challenge", CHALLENGE_PATH, {})
        return result

    async def authenticate(self, http: httpx.AsyncClient, answer: dict[str, Any]) -> TapResult:
        body = await self._post(http, "authentication", AUTHENTICATE_PATH, answer)
        return _result(body)

    async def redeem_qr(self, http: httpx.AsyncClient, qr: str) -> TapResult:
        body = await self._post(http, "QR redemption", QR_REDEEM_PATH, {"qr": qr})
        return _result(body)


def _result(body: dict[str, Any]) -> TapResult:
    return TapResult(
        access_token=body["access_token"],
        expires_in=int(body["expires_in"]),
        scope=body["scope"],
        response=body,
    )


async def tap(
    http: httpx.AsyncClient, *, terminal: VirtualTerminal, card: Card, pin: str | None = None
) -> TapResult:
    """One complete terminal authentication: challenge, the card signs, the holder's token.

    ``http`` is based at the platform's public URL (the gateway, or the identity app itself).
    Raises :class:`FlowError` when the platform refuses a step.
    """
    challenge = await terminal.challenge(http)
    return await terminal.authenticate(http, card_answer(card, challenge, pin=pin))


# -- registration --------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredTerminal:
    credentials: ClientCredentials
    certificate_pem: str
    info: dict[str, Any]


def terminal_csr(key: ec.EllipticCurvePrivateKey) -> str:
    """A PKCS#10 request for the terminal's key: proof that the terminal holds it."""
    subject = Name([NameAttribute(NameOID.COMMON_NAME, "onecard terminal")])
    csr = CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


async def register(
    http: httpx.AsyncClient,
    *,
    admin_token: str,
    facility: str,
    purpose: str,
    base_url: str,
    name: str | None = None,
) -> RegisteredTerminal:
    """Register a new terminal with an administrator's ``terminal.manage`` token.

    The key pair is made here, on the terminal; only its CSR leaves. The registered key id is
    the key's RFC 7638 thumbprint, which the terminal computes itself.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    body: dict[str, Any] = {"facility": facility, "purpose": purpose, "csr": terminal_csr(key)}
    if name is not None:
        body["name"] = name
    response = await http.post(
        REGISTER_PATH, json=body, headers={"Authorization": f"Bearer {admin_token}"}
    )
    if response.status_code != 201:
        raise FlowError("registration", response)
    info: dict[str, Any] = response.json()
    credentials = ClientCredentials(
        client_id=info["terminal_id"],
        kid=jwk_thumbprint(key.public_key()),
        private_key=key,
        base_url=base_url.rstrip("/"),
    )
    return RegisteredTerminal(
        credentials=credentials, certificate_pem=info["certificate"], info=info
    )


# -- the citizen's phone as a terminal -----------------------------------------------------


async def app_login(
    http: httpx.AsyncClient, *, installation_id: str, card: Card, pin: str | None = None
) -> dict[str, Any]:
    """The app's card login over NFC: its access token and refresh token (RFC 6749 5.1)."""
    response = await http.post(APP_CHALLENGE_PATH, json={"installation_id": installation_id})
    if response.status_code != 200:
        raise FlowError("app challenge", response)
    answer = card_answer(card, response.json(), pin=pin)
    response = await http.post(
        APP_SESSION_PATH, json={**answer, "installation_id": installation_id}
    )
    if response.status_code != 200:
        raise FlowError("app sign-in", response)
    tokens: dict[str, Any] = response.json()
    return tokens
