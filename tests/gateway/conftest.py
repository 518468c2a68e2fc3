"""Gateway fixtures: stand-ins for the services on real ports, and the gateway wired to them.

The gateway is only as good as what it does on the wire, so its upstreams are real HTTP servers
(uvicorn in a thread, or a raw TCP server for misbehaviour no ASGI app can produce) and Redis
is the test backend's real one. Every service the gateway knows gets a URL from the test,
so a platform someone left running on the default ports never answers a test by accident.
Bearer tokens are real ES256 access tokens whose keys the gateway fetches from a JWKS served
on a real port, as it fetches the identity service's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.types import Receive, Scope, Send

from gateway.settings import GatewaySettings
from services.kit import topology
from services.kit.tokens import public_jwk, sign_access_token
from tests.harness import ServerThread, free_port, server_thread

CHUNK = 64 * 1024


def dead_url() -> str:
    """A URL where nothing listens: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


def pattern(size: int) -> bytes:
    """``size`` bytes in which every 64 KiB chunk differs, so loss or reordering shows."""
    block = bytes(range(256)) * (CHUNK // 256)
    out = bytearray()
    index = 0
    while len(out) < size:
        out += index.to_bytes(4, "big") + block[4:]
        index += 1
    return bytes(out[:size])


@dataclass
class Seen:
    """One request as a service received it."""

    method: str
    path: str
    raw_path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)
    # False when the body was cut off (the caller or the gateway went away mid-upload).
    complete: bool = False
    # Set when the gateway hung up on an endless response.
    abandoned: bool = False

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


@dataclass
class Scripted:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class UpstreamDouble:
    """A stand-in for a service, reachable under any prefix; the last path segment picks
    what it does:

    - ``.../slow?seconds=S``: answers after S seconds, or stops when the caller goes away;
    - ``.../big?bytes=N``: streams ``pattern(N)`` in 64 KiB chunks;
    - ``.../gated``: sends one chunk, then the rest only once the test sets ``release``;
    - ``.../endless``: streams a line every 20 ms until the gateway hangs up;
    - a name given to :meth:`script`: that canned response;
    - anything else: 200 with a JSON description of the request as received.

    Every request is recorded in ``seen``, its body as it arrives.
    """

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.scripted: dict[str, Scripted] = {}
        self.release = threading.Event()

    def script(
        self,
        name: str,
        *,
        status: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
    ) -> None:
        self.scripted[name] = Scripted(status, headers or [], body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        seen = Seen(
            method=scope["method"],
            path=scope["path"],
            raw_path=scope["raw_path"].decode("latin-1"),
            query=scope["query_string"].decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
        )
        self.seen.append(seen)
        action = scope["path"].rstrip("/").rsplit("/", 1)[-1]
        params = {k: v[0] for k, v in parse_qs(seen.query).items()}

        if not await _read_body(receive, seen):
            return  # the gateway went away mid-upload; nobody to answer
        if action == "slow":
            await _answer_slowly(receive, send, float(params["seconds"]))
        elif action == "big":
            await _stream(send, pattern(int(params["bytes"])))
        elif action == "gated":
            await self._gated(send)
        elif action == "endless":
            await _endless(receive, send, seen)
        elif action in self.scripted:
            canned = self.scripted[action]
            await send(
                {"type": "http.response.start", "status": canned.status, "headers": canned.headers}
            )
            await send({"type": "http.response.body", "body": canned.body})
        else:
            await _send_json(send, _describe(seen))

    async def _gated(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        # Polled rather than waited on in a thread, so a failing test never blocks shutdown.
        for _ in range(1000):
            if self.release.is_set():
                break
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"last"})


async def _read_body(receive: Receive, seen: Seen) -> bool:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        seen.body += message.get("body", b"")
        if not message.get("more_body", False):
            seen.complete = True
            return True


async def _answer_slowly(receive: Receive, send: Send, seconds: float) -> None:
    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        # Stop as soon as the caller hangs up, so the server's shutdown never waits on us.
        await asyncio.wait_for(until_disconnect(), seconds)
    except TimeoutError:
        await _send_json(send, {"slow": seconds})


async def _endless(receive: Receive, send: Send, seen: Seen) -> None:
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())
    await send({"type": "http.response.start", "status": 200, "headers": []})
    while not gone.is_set():
        await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
        await asyncio.sleep(0.02)
    await watcher
    seen.abandoned = True


async def _stream(send: Send, data: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for start in range(0, len(data), CHUNK):
        chunk = data[start : start + CHUNK]
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _send_json(send: Send, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _describe(seen: Seen) -> dict[str, Any]:
    return {
        "method": seen.method,
        "path": seen.path,
        "raw_path": seen.raw_path,
        "query": seen.query,
        "headers": seen.headers,
        "body": seen.body.decode("utf-8", "replace"),
        "body_length": len(seen.body),
    }


class RunningDouble(UpstreamDouble):
    """An upstream double together with the server it runs on."""

    server: ServerThread

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def upstream() -> Iterator[RunningDouble]:
    double = RunningDouble()
    with server_thread(double) as server:
        double.server = server
        yield double


# --- A raw TCP upstream: HTTP/1.1 spoken badly on purpose ---------------------------------

Reply = Callable[[int], bytes | None]


class RawUpstream(socketserver.ThreadingTCPServer):
    """Reads each request, then sends whatever ``reply(n)`` returns for the n-th request (from
    1) and closes the connection; ``None`` closes it without a word."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.request_lines: list[bytes] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RawHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RawHandler(socketserver.BaseRequestHandler):
    server: RawUpstream

    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(CHUNK)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        # Read a declared body to the end: closing with unread input would send a reset
        # instead of the clean close under test.
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                while len(body) < int(value):
                    more = self.request.recv(CHUNK)
                    if not more:
                        return
                    body += more
        with self.server.lock:
            self.server.request_lines.append(head.split(b"\r\n", 1)[0])
            number = len(self.server.request_lines)
        answer = self.server.reply(number)
        if answer is not None:
            self.request.sendall(answer)


@contextlib.contextmanager
def raw_upstream(reply: Reply) -> Iterator[RawUpstream]:
    server = RawUpstream(reply)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _SilentHandler(socketserver.BaseRequestHandler):
    server: SilentServer

    def handle(self) -> None:
        # Read and never answer, until the test ends (then the connection is closed).
        self.request.settimeout(0.05)
        while not self.server.stopping.is_set():
            try:
                if not self.request.recv(CHUNK):
                    return
            except TimeoutError:
                continue


class SilentServer(socketserver.ThreadingTCPServer):
    """Accepts connections and never says a word: a hung server, or a network partition."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = True

    def __init__(self) -> None:
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", 0), _SilentHandler)

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port


@contextlib.contextmanager
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def http_ok(body: bytes = b"ok") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


# --- Tokens ---------------------------------------------------------------------------------

# Not the default public URL, so a test passes only if the gateway takes issuer and audiences
# from its settings.
PUBLIC_URL = "https://onecard.test"
KID = "gateway-test-1"
# Every public prefix that is an audience (the identity service's /.well-known is not one).
AUDIENCE_PREFIXES = tuple(
    prefix for spec in topology.SERVICES for prefix in spec.prefixes if prefix != "/.well-known"
)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class JwksDouble:
    """Publishes a JWK Set at ``/jwks.json``, as the identity service does at
    ``/.well-known/jwks.json``; any other path answers 503 (a JWKS endpoint that is down)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.body = json.dumps(jwks).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        ok = scope["path"] == "/jwks.json"
        await send(
            {
                "type": "http.response.start",
                "status": 200 if ok else 503,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": self.body if ok else b"{}"})


@dataclass
class TokenIssuer:
    """The signing side of the identity service, for tests: a P-256 key whose JWKS is served
    at ``jwks_url``, and valid access tokens (RFC 9068 claims, DESIGN.md "Tokens") signed
    with it."""

    public_url: str
    server_url: str
    key: ec.EllipticCurvePrivateKey
    kid: str

    @property
    def jwks_url(self) -> str:
        return self.server_url + "/jwks.json"

    @property
    def down_jwks_url(self) -> str:
        """A JWKS URL on the same server that answers 503."""
        return self.server_url + "/down.json"

    def claims(
        self, *, audience: str | Sequence[str] = AUDIENCE_PREFIXES, **overrides: Any
    ) -> dict[str, Any]:
        """Claims of a good token for ``audience`` (public prefixes); None removes a claim."""
        prefixes = [audience] if isinstance(audience, str) else list(audience)
        now = int(time.time())
        values: dict[str, Any] = {
            "iss": self.public_url,
            "sub": "p-" + uuid.uuid4().hex[:12],
            "aud": [self.public_url + prefix for prefix in prefixes],
            "exp": now + 300,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "client_id": "citizen-app",
            "scope": "openid patient/*.rs benefits.read",
            "acr": "2",
            "amr": ["hwk", "pin"],
        }
        values.update(overrides)
        return {k: v for k, v in values.items() if v is not None}

    def token(
        self,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        """A signed access token; ``claims`` as for :meth:`claims`."""
        return sign_access_token(
            self.claims(**claims), private_key=key or self.key, kid=kid or self.kid
        )

    def bearer(self, **claims: Any) -> str:
        """An ``Authorization`` value carrying a fresh token."""
        return "Bearer " + self.token(**claims)


@pytest.fixture(scope="session")
def issuer() -> Iterator[TokenIssuer]:
    """One signing key and its JWKS server per test process: key generation and a server
    start are the slow part, and nothing a test does changes them."""
    key = new_key()
    with server_thread(JwksDouble({"keys": [public_jwk(key, KID)]})) as server:
        yield TokenIssuer(public_url=PUBLIC_URL, server_url=server.url, key=key, kid=KID)


# --- The gateway ----------------------------------------------------------------------------


@pytest.fixture
def gateway_settings(
    make_settings: Callable[..., Any], issuer: TokenIssuer
) -> Callable[..., GatewaySettings]:
    """Gateway settings on this test's backend, trusting ``issuer``'s tokens; services not
    named get a dead URL."""

    def make(upstreams: dict[str, str] | None = None, **overrides: Any) -> GatewaySettings:
        urls = {spec.name: dead_url() for spec in topology.SERVICES}
        urls.update(upstreams or {})
        values: dict[str, Any] = {
            "public_url": issuer.public_url,
            "jwks_url": issuer.jwks_url,
            # These tests drive the forwarding machinery with anonymous requests to every
            # prefix; the refusal of tokenless requests is tests/gateway/test_protection.py's.
            "protection_require_token": False,
        }
        values.update(overrides)
        settings: GatewaySettings = make_settings(GatewaySettings, upstreams=urls, **values)
        return settings

    return make


class GatewayServer(ServerThread):
    """The gateway on a real port with uvicorn running its lifespan, as ``onecard up`` does:
    needed where the ASGI test transport would hide the behaviour (it buffers responses and
    adds no ``date``/``server`` headers)."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.config.lifespan = "on"


@contextlib.contextmanager
def gateway_server(app: Any) -> Iterator[GatewayServer]:
    server = GatewayServer(app)
    server.start()
    try:
        yield server
    finally:
        server.stop()
