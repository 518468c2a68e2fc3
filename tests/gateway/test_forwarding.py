"""What crosses the gateway: requests and responses arrive as sent, streamed, with a request id.

Forwarding does not depend on which Redis backs the rate limit, so these run on the embedded
backend only; tests/gateway/test_ratelimit.py covers both backends.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from starlette.types import Message

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.conftest import (
    CHUNK,
    RunningDouble,
    TokenIssuer,
    gateway_server,
    http_ok,
    pattern,
    raw_upstream,
)
from tests.harness import serve_asgi, wait_until

pytestmark = pytest.mark.parametrize("backend", ["embedded"], indirect=True)

MakeSettings = Callable[..., GatewaySettings]
PROBLEM = "application/problem+json"


def routed(upstream: RunningDouble) -> dict[str, str]:
    """Every service routed to the one double, so any prefix reaches it."""
    return dict.fromkeys(("identity", "health", "social_security", "audit"), upstream.url)


# --- Requests -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "audience"),
    [
        ("GET", "/identity/citizens/c-1", "/identity"),
        ("POST", "/fhir/Observation", "/fhir"),
        ("PUT", "/insurance/enrolments/e-1", "/insurance"),
        ("PATCH", "/social-security/pensions/p-1", "/social-security"),
        ("DELETE", "/audit/records/r-1", "/audit"),
        # /.well-known belongs to the identity service but is no audience of its own.
        ("OPTIONS", "/.well-known/openid-configuration", "/identity"),
    ],
)
async def test_method_path_query_body_and_authorization_arrive_unchanged(
    gateway_settings: MakeSettings,
    upstream: RunningDouble,
    issuer: TokenIssuer,
    method: str,
    path: str,
    audience: str,
) -> None:
    body = b'{"resourceType": "Observation", "status": "final"}'
    # A token for the route's own service only: the gateway picks the audience by route.
    token = issuer.bearer(audience=audience)
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        response = await client.request(
            method,
            path + "?patient=p-1&_count=10&code=http%3A%2F%2Floinc.org%7C1234-5&flag",
            content=body,
            headers={"Authorization": token, "Content-Type": "application/fhir+json"},
        )
    assert response.status_code == 200
    [seen] = upstream.seen
    assert seen.method == method
    assert seen.path == path
    assert seen.query == "patient=p-1&_count=10&code=http%3A%2F%2Floinc.org%7C1234-5&flag"
    assert bytes(seen.body) == body
    assert seen.all("authorization") == [token]
    assert seen.header("content-type") == "application/fhir+json"
    assert seen.header("content-length") == str(len(body))


async def test_percent_encoded_path_reaches_the_service_byte_for_byte(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    # An encoded slash, question mark, percent sign and space are data, not structure: the
    # service must see them encoded exactly as the caller sent them.
    raw = "/fhir/Binary/a%2Fb%3Fc%25d%20e%23f"
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        response = await client.get(raw + "?q=1")
    assert response.status_code == 200
    [seen] = upstream.seen
    assert seen.raw_path == raw
    assert seen.path == "/fhir/Binary/a/b?c%d e#f"
    assert seen.query == "q=1"


@pytest.mark.parametrize(
    "path", ["/identity/../audit/records", "/fhir/Patient/./p-1", "/fhir/a/%2E%2E/audit"]
)
async def test_a_path_with_dot_segments_is_refused_rather_than_rewritten(
    gateway_settings: MakeSettings, upstream: RunningDouble, path: str
) -> None:
    # Forwarded, "/identity/../audit/x" would reach the service as "/audit/x": a different
    # resource from the one the gateway routed and will check policy on. Sent as raw bytes,
    # because httpx resolves dot segments before sending.
    with gateway_server(create_app(gateway_settings(routed(upstream)))) as gateway:
        status, body = await raw_exchange(
            gateway.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    assert status == 400
    assert "dot segment" in json.loads(body)["detail"]
    assert upstream.seen == []


async def raw_exchange(port: int, request: str) -> tuple[int, bytes]:
    """One HTTP/1.1 exchange written by hand; the status and the body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request.encode())
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_the_service_sees_exactly_the_callers_headers_plus_forwarding_ones(
    gateway_settings: MakeSettings, upstream: RunningDouble, issuer: TokenIssuer
) -> None:
    token = issuer.bearer()
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        request = client.build_request(
            "GET",
            "/identity/me",
            headers=[
                ("Authorization", token),
                ("Accept", "application/json"),
                ("X-Terminal", "t-17"),
                ("X-Terminal", "t-18"),  # repeated fields keep their order
                ("X-Forwarded-For", "203.0.113.7"),
                # Forged by the caller: the gateway states these itself.
                ("X-Forwarded-Host", "evil.example"),
                ("X-Forwarded-Proto", "gopher"),
                # Hop-by-hop (RFC 9110 section 7.6.1), including one named by Connection.
                ("Connection", "keep-alive, X-Hop-Secret"),
                ("X-Hop-Secret", "for-the-gateway-only"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Upgrade", "h2c"),
                ("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0"),
            ],
        )
        # Only what the caller sent should reach the service: drop the test client's defaults.
        for name in ("user-agent", "accept-encoding"):
            del request.headers[name]
        response = await client.send(request)
    assert response.status_code == 200
    [seen] = upstream.seen
    request_id = response.headers["x-request-id"]
    assert sorted(seen.headers) == sorted(
        [
            ("host", upstream.url.removeprefix("http://")),
            ("authorization", token),
            ("accept", "application/json"),
            ("x-terminal", "t-17"),
            ("x-terminal", "t-18"),
            ("x-forwarded-for", "203.0.113.7, 127.0.0.1"),
            ("x-forwarded-host", "testserver"),
            ("x-forwarded-proto", "http"),
            ("x-request-id", request_id),
        ]
    )
    assert seen.all("x-terminal") == ["t-17", "t-18"]


async def test_a_cookie_set_for_one_caller_is_never_sent_for_another(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    upstream.script("login", headers=[(b"set-cookie", b"session=alice-secret; Path=/; HttpOnly")])
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        alice = await client.post("/identity/login")
        client.cookies.clear()  # the next caller is someone else, without Alice's cookie
        await client.get("/identity/me")
    assert alice.headers["set-cookie"] == "session=alice-secret; Path=/; HttpOnly"
    assert upstream.seen[1].header("cookie") is None


# --- Request ids --------------------------------------------------------------------------


async def test_a_request_id_is_minted_and_the_service_and_caller_see_the_same_one(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        first = await client.get("/identity/me")
        second = await client.get("/identity/me")
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert [s.header("x-request-id") for s in upstream.seen] == ids
    assert ids[0] != ids[1]
    assert all(len(i) == 32 for i in ids)


async def test_a_valid_incoming_request_id_is_propagated_and_a_bad_one_replaced(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        kept = await client.get("/fhir/Patient", headers={"X-Request-ID": "hospital-7.req-0042"})
        replaced = await client.get("/fhir/Patient", headers={"X-Request-ID": "x" * 500})
    assert kept.headers["x-request-id"] == "hospital-7.req-0042"
    assert upstream.seen[0].all("x-request-id") == ["hospital-7.req-0042"]
    minted = replaced.headers["x-request-id"]
    assert minted != "x" * 500
    assert upstream.seen[1].all("x-request-id") == [minted]


async def test_the_caller_gets_one_request_id_even_when_the_service_sends_its_own(
    gateway_settings: MakeSettings,
) -> None:
    # Header names are case-insensitive; a service answering "X-Request-ID" in its own
    # spelling must not give the caller two ids. (A raw server: uvicorn would lowercase it.)
    reply = (
        b"HTTP/1.1 200 OK\r\nX-Request-ID: service-made-this-up\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\nok"
    )
    with raw_upstream(lambda _: reply) as service:
        async with serve_asgi(create_app(gateway_settings({"identity": service.url}))) as client:
            response = await client.get("/identity/me", headers={"X-Request-ID": "caller-id-123"})
    assert response.headers.get_list("x-request-id") == ["caller-id-123"]
    assert response.text == "ok"


# --- Responses ----------------------------------------------------------------------------


async def test_status_headers_and_body_come_back_unchanged(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    body = bytes(range(256)) * 4  # not text: the gateway must not decode anything
    upstream.script(
        "created",
        status=201,
        headers=[
            (b"content-type", b"application/octet-stream"),
            (b"location", b"/fhir/Binary/b-1/_history/1"),
            (b"etag", b'W/"1"'),
            (b"set-cookie", b"a=1; Path=/"),
            (b"set-cookie", b"b=2; Path=/"),
            (b"content-length", str(len(body)).encode()),
        ],
        body=body,
    )
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        response = await client.post("/fhir/Binary/created", content=b"x")
    assert response.status_code == 201
    assert response.content == body
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["location"] == "/fhir/Binary/b-1/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert response.headers["content-length"] == str(len(body))


async def test_a_redirect_is_handed_to_the_caller_not_followed(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    upstream.script("moved", status=302, headers=[(b"location", b"https://idp.example/login")])
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        response = await client.get("/identity/moved")
    assert response.status_code == 302
    assert response.headers["location"] == "https://idp.example/login"
    assert len(upstream.seen) == 1


async def test_a_compressed_response_passes_through_still_compressed(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    text = b'{"resourceType": "Bundle"}' * 100
    upstream.script(
        "bundle",
        headers=[(b"content-encoding", b"gzip"), (b"content-type", b"application/fhir+json")],
        body=gzip.compress(text),
    )
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        response = await client.get("/fhir/bundle", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == text  # decoded once, by the caller's client
    assert upstream.seen[0].header("accept-encoding") == "gzip"


async def test_through_a_real_server_date_and_server_headers_appear_once(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    # The service's own uvicorn adds date and server; the gateway's uvicorn adds them again.
    with gateway_server(create_app(gateway_settings(routed(upstream)))) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            response = await client.get("/identity/me")
    assert response.status_code == 200
    assert len(response.headers.get_list("date")) == 1
    assert len(response.headers.get_list("server")) == 1


async def test_empty_bodies_and_head_answers_complete_through_a_real_server(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    # The relay ends a response with the chunk that completes its declared length; one with
    # nothing to send (no content, a HEAD answer) must still be completed.
    upstream.script("empty", headers=[(b"content-length", b"0")])
    upstream.script("nothing", status=204)
    body = b"twelve bytes"
    upstream.script("sized", headers=[(b"content-length", str(len(body)).encode())], body=body)
    with gateway_server(create_app(gateway_settings(routed(upstream)))) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as client:
            empty = await client.get("/fhir/empty")
            nothing = await client.delete("/fhir/nothing")
            head = await client.head("/fhir/sized")
            sized = await client.get("/fhir/sized")
    assert (empty.status_code, empty.content) == (200, b"")
    assert (nothing.status_code, nothing.content) == (204, b"")
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(body))
    assert head.content == b""
    assert sized.content == body


# --- Streaming ----------------------------------------------------------------------------


async def test_a_large_response_streams_through_intact(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    size = 8 * 1024 * 1024 + 123
    with gateway_server(create_app(gateway_settings(routed(upstream)))) as gateway:
        async with (
            httpx.AsyncClient(base_url=gateway.url) as client,
            client.stream("GET", f"/fhir/Binary/big?bytes={size}") as response,
        ):
            digest = hashlib.sha256()
            async for chunk in response.aiter_bytes():
                digest.update(chunk)
    assert response.status_code == 200
    assert digest.hexdigest() == hashlib.sha256(pattern(size)).hexdigest()


async def test_response_bytes_reach_the_caller_before_the_service_has_finished(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    # The double holds back its last chunk until we have the first: a gateway that buffered
    # whole responses would never deliver the first chunk.
    with gateway_server(create_app(gateway_settings(routed(upstream)))) as gateway:
        async with (
            httpx.AsyncClient(base_url=gateway.url) as client,
            client.stream("GET", "/fhir/Binary/gated") as response,
        ):
            chunks = response.aiter_raw()
            first = await asyncio.wait_for(anext(chunks), 5)
            upstream.release.set()
            rest = b"".join([chunk async for chunk in chunks])
    assert first == b"first"
    assert rest == b"last"


async def test_a_large_chunked_upload_streams_through_intact(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    data = pattern(6 * 1024 * 1024 + 7)

    async def upload() -> AsyncIterator[bytes]:
        yield data[:CHUNK]
        # The service must hold the first chunk before we send the rest: the gateway
        # forwards as it receives, it does not collect the body first.
        await wait_until(lambda: upstream.seen and len(upstream.seen[0].body) >= CHUNK, timeout=5)
        for start in range(CHUNK, len(data), CHUNK):
            yield data[start : start + CHUNK]

    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        response = await client.post("/fhir/Binary", content=upload())
    assert response.status_code == 200
    [seen] = upstream.seen
    assert seen.header("transfer-encoding") == "chunked"
    assert seen.header("content-length") is None
    assert seen.complete
    assert hashlib.sha256(seen.body).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_when_the_caller_hangs_up_the_gateway_stops_pulling_from_the_service(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    # An endless stream (events, a long export): once its caller is gone, the gateway must
    # let go of the service too, not relay into the void for ever.
    with gateway_server(create_app(gateway_settings(routed(upstream)))) as gateway:
        async with (
            httpx.AsyncClient(base_url=gateway.url) as client,
            client.stream("GET", "/audit/events/endless") as response,
        ):
            assert await anext(response.aiter_raw()) == b"tick\n"
        await wait_until(lambda: upstream.seen[0].abandoned, timeout=5)


async def test_a_caller_that_hangs_up_mid_upload_is_not_treated_as_an_error(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    # Driven at the ASGI level: the caller sends part of a chunked body, then disconnects.
    app = create_app(gateway_settings(routed(upstream)))
    messages = [{"type": "http.request", "body": b"x" * 1000, "more_body": True}]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/fhir/Binary",
        "raw_path": b"/fhir/Binary",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"gateway"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)
    # Nobody is left to answer: no 500, no traceback, and the service got no whole request.
    assert sent == []
    assert not any(s.complete for s in upstream.seen)


# --- Limits and bad input -----------------------------------------------------------------


async def test_a_declared_body_over_the_limit_gets_413_without_reaching_the_service(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    settings = gateway_settings(routed(upstream), max_body_bytes=1024)
    async with serve_asgi(create_app(settings)) as client:
        refused = await client.post("/fhir/Binary", content=b"x" * 1025)
        at_limit = await client.post("/fhir/Binary", content=b"x" * 1024)
    assert refused.status_code == 413
    assert refused.headers["content-type"] == PROBLEM
    assert "1024 bytes" in refused.json()["detail"]
    assert at_limit.status_code == 200
    assert len(upstream.seen) == 1  # only the request at the limit


async def test_a_chunked_body_that_grows_past_the_limit_gets_413(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    async def chunks(total: int) -> AsyncIterator[bytes]:
        for _ in range(total // 256):
            yield b"y" * 256

    settings = gateway_settings(routed(upstream), max_body_bytes=1024)
    async with serve_asgi(create_app(settings)) as client:
        refused = await client.post("/fhir/Binary", content=chunks(2048))
        at_limit = await client.post("/fhir/Binary", content=chunks(1024))
    assert refused.status_code == 413
    assert refused.headers["content-type"] == PROBLEM
    assert at_limit.status_code == 200
    # The service never got a complete oversized body to act on.
    assert [len(s.body) for s in upstream.seen if s.complete] == [1024]


async def test_an_unknown_route_gets_404_problem_json(gateway_settings: MakeSettings) -> None:
    async with serve_asgi(create_app(gateway_settings())) as client:
        responses = [await client.get(path) for path in ("/nope", "/identityx/a", "/")]
    for response in responses:
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
    assert responses[0].json()["detail"] == "no route matches GET /nope"


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"abc")],
        [(b"content-length", b"-5")],
        [(b"content-length", b"1\xb2")],  # a superscript two: str.isdigit() says yes
        [(b"content-length", b"3"), (b"content-length", b"4")],  # RFC 9112 section 6.3
    ],
    ids=["letters", "negative", "superscript", "conflicting"],
)
async def test_a_malformed_content_length_gets_400(
    gateway_settings: MakeSettings, upstream: RunningDouble, headers: list[tuple[bytes, bytes]]
) -> None:
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        response = await client.post("/fhir/Binary", content=b"abc", headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    assert "Content-Length" in response.json()["detail"]
    assert upstream.seen == []


async def test_a_header_value_that_is_not_utf8_is_refused_not_rewritten(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    # RFC 9110 section 5.5: obs-text (here Latin-1 "é") may only be passed on as it came; the
    # gateway's client would rewrite it, so the request stops at the gateway with a reason.
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        refused = await client.get(
            "/fhir/Patient", headers={b"X-Note": "caf\xe9".encode("latin-1")}
        )
        plain = await client.get("/fhir/Patient", headers={b"X-Note": "caf\u00e9".encode()})
    assert refused.status_code == 400
    assert refused.headers["content-type"] == PROBLEM
    assert "x-note" in refused.json()["detail"].lower()
    assert plain.status_code == 200  # UTF-8 text crosses byte for byte
    [seen] = upstream.seen
    # The double reads header bytes as Latin-1: these are the UTF-8 bytes sent, unchanged.
    assert seen.header("x-note") == "caf\u00e9".encode().decode("latin-1")


async def test_expect_100_continue_is_forwarded_and_the_body_sent_without_waiting(
    gateway_settings: MakeSettings,
) -> None:
    # RFC 9110 section 10.1.1 allows a client to send the body without waiting for 100
    # Continue; a service that never sends one (this raw one does not) still gets the body.
    with raw_upstream(lambda _: http_ok(b"stored")) as service:
        settings = gateway_settings({"health": service.url}, upstream_timeouts={"health": 2.0})
        async with serve_asgi(create_app(settings)) as client:
            started = time.monotonic()
            response = await client.post(
                "/fhir/Binary", content=b"x" * 5000, headers={"Expect": "100-continue"}
            )
            elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.content == b"stored"
    assert elapsed < 1.5
    assert service.request_lines == [b"POST /fhir/Binary HTTP/1.1"]
