"""The kit's token module: signing, JWKs and RFC 8725 verification, attack by attack."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import string
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jose import jwt as jose_jwt
from jose.exceptions import JOSEError
from starlette.types import Receive, Scope, Send

from services.kit.tokens import (
    MAX_ACCESS_TOKEN_SECONDS,
    MAX_TOKEN_BYTES,
    TOKEN_TYPE,
    AccessToken,
    JwksSource,
    KeySet,
    KeySourceError,
    StaticKeySource,
    TokenError,
    TokenVerifier,
    load_jwk,
    public_jwk,
    scope_allows,
    sign_access_token,
    sign_jwt,
)
from tests.harness import server_thread

ISSUER = "https://onecard.example/identity"
AUDIENCE = "health"
KID = "k1"
PRIVATE_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = PRIVATE_KEY.public_key()


# --- Helpers shared with test_revocation and test_auth --------------------------------------


def claims(**overrides: Any) -> dict[str, Any]:
    """Claims of a good access token, issued now for ``AUDIENCE``; None removes a claim."""
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "p-7f3a9c",
        "aud": AUDIENCE,
        "exp": now + 300,
        "iat": now,
        "jti": f"jti-{time.perf_counter_ns()}",
        "client_id": "terminal-app",
        "scope": "patient/Observation.rs benefits.read",
        "acr": "2",
        "amr": ["hwk", "pin"],
        "act": {"sub": "terminal:pharmacy-12"},
        "card": "C-0001",
        "sid": "s-42",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def access_token(**overrides: Any) -> str:
    return sign_access_token(claims(**overrides), private_key=PRIVATE_KEY, kid=KID)


def verifier(**kwargs: Any) -> TokenVerifier:
    options: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "keys": StaticKeySource(KeySet({KID: PUBLIC_KEY})),
    }
    options.update(kwargs)
    return TokenVerifier(**options)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segments(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"


def es256(header: dict[str, Any], payload: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    """A token signed with a real ES256 signature over whatever header we like."""
    signing_input = segments(header, payload)
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def good_header(**overrides: Any) -> dict[str, Any]:
    header = {"alg": "ES256", "typ": TOKEN_TYPE, "kid": KID}
    header.update(overrides)
    return {k: v for k, v in header.items() if v is not None}


async def refused(token: str, **kwargs: Any) -> str:
    """The reason ``verifier(**kwargs)`` gives for refusing ``token``."""
    with pytest.raises(TokenError) as caught:
        await verifier(**kwargs).verify(token)
    reason = caught.value.reason
    if len(token) > 20:
        assert token[:20] not in reason, "an error must never quote the token"
    return reason


# --- A good token --------------------------------------------------------------------------


async def test_a_good_token_passes_with_every_claim_parsed() -> None:
    values = claims(aud=[AUDIENCE, "social_security"], nbf=int(time.time()) - 5)
    token = sign_access_token(values, private_key=PRIVATE_KEY, kid=KID)

    parsed = await verifier().verify(token)

    assert parsed == AccessToken(
        iss=ISSUER,
        sub="p-7f3a9c",
        aud=(AUDIENCE, "social_security"),
        exp=values["exp"],
        iat=values["iat"],
        jti=values["jti"],
        client_id="terminal-app",
        scope=frozenset({"patient/Observation.rs", "benefits.read"}),
        acr="2",
        amr=("hwk", "pin"),
        act={"sub": "terminal:pharmacy-12"},
        card="C-0001",
        sid="s-42",
        nbf=values["nbf"],
    )
    assert parsed.claims == values
    assert parsed.has_scope("patient/Observation.r")
    assert not parsed.has_scope("card.manage")


async def test_a_minimal_token_gets_defaults_for_the_optional_claims() -> None:
    token = access_token(amr=None, act=None, card=None, sid=None, acr="1", scope="")
    parsed = await verifier().verify(token)
    assert (parsed.amr, parsed.act, parsed.card, parsed.sid, parsed.nbf) == (
        (),
        None,
        None,
        None,
        None,
    )
    assert parsed.scope == frozenset()
    assert parsed.aud == (AUDIENCE,)


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT"])
async def test_typ_compares_as_a_media_type(typ: str) -> None:
    # RFC 8725 section 3.11, RFC 9068 section 2.1, RFC 7515 section 4.1.9.
    token = es256(good_header(typ=typ), claims(), PRIVATE_KEY)
    assert (await verifier().verify(token)).sub == "p-7f3a9c"


async def test_the_header_of_the_signer_is_exactly_alg_typ_kid() -> None:
    header = json.loads(base64.urlsafe_b64decode(access_token().split(".")[0] + "=="))
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": KID}


async def test_a_verifier_may_serve_several_audiences() -> None:
    token = access_token(aud="social_security")
    gateway = verifier(audience={"health", "social_security"})
    assert (await gateway.verify(token)).aud == ("social_security",)


async def test_other_signed_payloads_verify_under_their_own_typ() -> None:
    now = int(time.time())
    qr = {"iss": ISSUER, "sub": "p-1", "aud": AUDIENCE, "exp": now + 60, "iat": now, "jti": "q1"}
    token = sign_jwt(qr, private_key=PRIVATE_KEY, kid=KID, typ="onecard-qr+jwt")

    assert await verifier().verify_claims(token, typ="onecard-qr+jwt", max_lifetime=60) == qr
    # ...and never as an access token, nor an access token as a QR payload.
    assert await refused(token) == "unexpected typ 'onecard-qr+jwt'"
    with pytest.raises(TokenError, match="unexpected typ 'at\\+jwt'"):
        await verifier().verify_claims(access_token(), typ="onecard-qr+jwt")
    long_qr = sign_jwt(
        {**qr, "exp": now + 120}, private_key=PRIVATE_KEY, kid=KID, typ="onecard-qr+jwt"
    )
    with pytest.raises(TokenError, match="lifetime 120 s exceeds 60 s"):
        await verifier().verify_claims(long_qr, typ="onecard-qr+jwt", max_lifetime=60)


async def test_a_client_assertion_may_leave_out_iat_when_the_caller_says_so() -> None:
    # RFC 7523 section 3: iat is optional in a client assertion; the caller decides.
    now = int(time.time())
    assertion = {"iss": "hospital-1", "sub": "hospital-1", "aud": "https://id/token",
                 "exp": now + 60, "jti": "a1"}  # fmt: skip
    token = sign_jwt(assertion, private_key=PRIVATE_KEY, kid=KID, typ="JWT")
    client = verifier(issuer="hospital-1", audience="https://id/token")
    with pytest.raises(TokenError, match="missing claim 'iat'"):
        await client.verify_claims(token, typ="JWT")
    required = ("iss", "sub", "aud", "exp", "jti")
    assert await client.verify_claims(token, typ="JWT", require=required) == assertion


# --- Algorithms ----------------------------------------------------------------------------


async def test_alg_none_is_refused() -> None:
    token = segments(good_header(alg="none"), claims()) + "."
    assert await refused(token) == "algorithm none not allowed (only ES256)"


@pytest.mark.parametrize("alg", ["None", "NONE", "es256", "ES384", "ES512", "EdDSA", "PS256"])
async def test_every_other_algorithm_is_refused_by_name(alg: str) -> None:
    token = segments(good_header(alg=alg), claims()) + "." + "A" * 86
    assert await refused(token) == f"algorithm {alg} not allowed (only ES256)"


async def test_a_header_without_alg_is_refused() -> None:
    token = segments(good_header(alg=None), claims()) + "." + "A" * 86
    assert await refused(token) == "header has no alg"


def public_key_bytes(form: str) -> bytes:
    encoding = serialization.Encoding.PEM if form == "PEM" else serialization.Encoding.DER
    return PUBLIC_KEY.public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)


def hs256_with(secret: bytes, payload: dict[str, Any]) -> str:
    signing_input = segments({"alg": "HS256", "typ": TOKEN_TYPE, "kid": KID}, payload)
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


async def test_python_jose_accepts_hs256_signed_with_the_der_public_key_when_unpinned() -> None:
    # The key-confusion attack (RFC 8725 section 2.1) against python-jose 3.5.0 itself: the
    # attacker MACs with the public key; a caller that hands jose the key bytes and no
    # algorithm list gets the forged claims back. This is why nothing else imports jose.
    der = public_key_bytes("DER")
    forged = hs256_with(der, claims(scope="audit.read card.manage"))
    assert jose_jwt.decode(forged, der, audience=AUDIENCE)["scope"] == "audit.read card.manage"
    # jose spots the PEM form (it refuses PEM as an HMAC secret), but not DER.
    pem = public_key_bytes("PEM")
    with pytest.raises(JOSEError, match="should not be used as an HMAC secret"):
        jose_jwt.decode(hs256_with(pem, claims()), pem, audience=AUDIENCE)


@pytest.mark.parametrize("form", ["PEM", "DER"])
async def test_hs256_signed_with_our_public_key_is_refused(form: str) -> None:
    forged = hs256_with(public_key_bytes(form), claims(scope="audit.read"))
    assert await refused(forged) == "algorithm HS256 not allowed (only ES256)"


async def test_rs256_with_an_attackers_key_is_refused() -> None:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing_input = segments(good_header(alg="RS256"), claims())
    signature = attacker.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    assert await refused(f"{signing_input}.{b64(signature)}") == (
        "algorithm RS256 not allowed (only ES256)"
    )


# --- Header --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typ", "reason"),
    [
        ("JWT", "unexpected typ 'JWT'"),
        ("application/jwt", "unexpected typ 'application/jwt'"),
        ("onecard-qr+jwt", "unexpected typ 'onecard-qr+jwt'"),
        ("at+jwt; charset=x", "unexpected typ <str>"),
        (None, "header has no typ"),
    ],
)
async def test_a_wrong_or_missing_typ_is_refused(typ: str | None, reason: str) -> None:
    assert await refused(es256(good_header(typ=typ), claims(), PRIVATE_KEY)) == reason


@pytest.mark.parametrize(
    "header",
    [
        {"jku": "https://attacker.example/jwks.json"},
        {"jwk": public_jwk(ec.generate_private_key(ec.SECP256R1()), "attacker")},
        {"x5u": "https://attacker.example/cert.pem"},
        {"x5c": ["MIIB..."]},
        {"crit": ["exp"], "exp": 1},
    ],
    ids=["jku", "jwk", "x5u", "x5c", "crit"],
)
async def test_headers_that_bring_their_own_key_are_refused(header: dict[str, Any]) -> None:
    # Signed with our real key, so only the header can be the reason.
    name = next(iter(header))
    token = es256(good_header(**header), claims(), PRIVATE_KEY)
    assert await refused(token) == f"header '{name}' not allowed"


async def test_a_header_without_kid_is_refused() -> None:
    assert await refused(es256(good_header(kid=None), claims(), PRIVATE_KEY)) == "header has no kid"


async def test_an_unknown_kid_is_refused() -> None:
    token = es256(good_header(kid="k-unknown"), claims(), PRIVATE_KEY)
    assert await refused(token) == "unknown key id"


@pytest.mark.parametrize(
    "token",
    [
        "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a2V5.aXY.Y2lwaGVy.dGFn",
        "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..aXY.Y2lwaGVy.dGFn",
    ],
)
async def test_jwe_shaped_tokens_are_refused(token: str) -> None:
    assert await refused(token) == "encrypted tokens (JWE) are not accepted"


async def test_a_jws_with_an_enc_header_is_refused_as_jwe() -> None:
    token = es256(good_header(enc="A256GCM"), claims(), PRIVATE_KEY)
    assert await refused(token) == "encrypted tokens (JWE) are not accepted"


# --- Shape, size, signature ------------------------------------------------------------------


async def test_an_oversized_token_is_refused_before_it_is_parsed() -> None:
    big = access_token(padding="x" * MAX_TOKEN_BYTES)  # validly signed, just too big
    assert await refused(big) == f"token larger than {MAX_TOKEN_BYTES} bytes"
    assert (
        await refused("!" * (MAX_TOKEN_BYTES + 1)) == f"token larger than {MAX_TOKEN_BYTES} bytes"
    )


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "token is not a compact JWS (three base64url parts)"),
        ("not a token", "token is not a compact JWS (three base64url parts)"),
        ("a.b", "token is not a compact JWS (three base64url parts)"),
        ("a.b.c.d", "token is not a compact JWS (three base64url parts)"),
        ("eyJ9.e30.sig", "token header is not base64url-encoded JSON"),
        (f"{b64(b'[1]')}.e30.sig", "token header is not a JSON object"),
        ("éé.e30.sig", "token is not a compact JWS (three base64url parts)"),
    ],
)
async def test_malformed_tokens_get_a_clear_reason(token: str, reason: str) -> None:
    assert await refused(token) == reason


async def test_a_tampered_payload_is_refused() -> None:
    header, _, signature = access_token().split(".")
    richer = b64(json.dumps(claims(scope="audit.read card.manage")).encode())
    assert await refused(f"{header}.{richer}.{signature}") == "invalid signature"


async def test_a_signature_by_another_key_under_our_kid_is_refused() -> None:
    impostor = ec.generate_private_key(ec.SECP256R1())
    assert await refused(es256(good_header(), claims(), impostor)) == "invalid signature"


@pytest.mark.parametrize(
    "signature",
    ["", "A" * 85, "A" * 87, "A" * 86, "!" + "A" * 85, "!!" + "A" * 84],
    ids=["empty", "short", "long", "zeros", "junk-1", "junk-2"],
)
async def test_a_malformed_signature_is_refused(signature: str) -> None:
    header, payload, _ = access_token().split(".")
    assert await refused(f"{header}.{payload}.{signature}") == "invalid signature"


async def test_any_mangled_token_is_refused_with_a_token_error() -> None:
    # Whatever an attacker does to a token, the answer is a reason, never a crash (a 500).
    rng = random.Random(9068)
    good = access_token()
    alphabet = string.ascii_letters + string.digits + "-_.=!+/ é\x00"
    check = verifier()
    for _ in range(2000):
        chars = list(good)
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(chars))
            action = rng.choice(["replace", "insert", "delete", "cut"])
            if action == "replace":
                chars[position] = rng.choice(alphabet)
            elif action == "insert":
                chars.insert(position, rng.choice(alphabet))
            elif action == "delete":
                del chars[position]
            else:
                chars = chars[:position]
            if not chars:
                break
        mangled = "".join(chars)
        if mangled == good:
            continue
        with pytest.raises(TokenError):
            await check.verify(mangled)


async def test_only_the_canonical_base64url_of_a_signature_is_accepted() -> None:
    # Base64url of 64 bytes leaves 4 spare bits in the last character; a lenient decoder
    # accepts 15 other spellings of the same signature (RFC 4648 section 3.5).
    token = access_token()
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    last = alphabet.index(token[-1])
    assert last % 16 == 0
    for other in alphabet[last + 1 : last + 16]:
        assert await refused(token[:-1] + other) == "invalid signature"
    # Nor the standard alphabet's "+" and "/" for base64url's "-" and "_".
    while not any(c in "-_" for c in token.rsplit(".", 1)[1]):
        token = access_token()
    at = max(token.rfind("-"), token.rfind("_"))
    standard = token[:at] + {"-": "+", "_": "/"}[token[at]] + token[at + 1 :]
    assert await refused(standard) == "invalid signature"
    assert (await verifier().verify(token)).sub == "p-7f3a9c"


async def test_a_signed_payload_that_is_not_json_is_refused() -> None:
    signing_input = f"{b64(json.dumps(good_header()).encode())}.{b64(b'not json')}"
    r, s = decode_dss_signature(PRIVATE_KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    token = f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    assert await refused(token) == "token payload is not base64url-encoded JSON"


# --- Claims --------------------------------------------------------------------------------


async def test_python_jose_does_not_require_exp_by_default() -> None:
    token = es256(good_header(), claims(exp=None), PRIVATE_KEY)
    jose_key = public_jwk(PUBLIC_KEY, KID)
    decoded = jose_jwt.decode(token, jose_key, algorithms=["ES256"], audience=AUDIENCE)
    assert "exp" not in decoded  # a token that never expires, accepted


@pytest.mark.parametrize(
    "name", ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "acr"]
)
async def test_every_required_claim_is_required(name: str) -> None:
    token = es256(good_header(), claims(**{name: None}), PRIVATE_KEY)
    assert await refused(token) == f"missing claim '{name}'"


async def test_a_wrong_issuer_is_refused() -> None:
    assert await refused(access_token(iss="https://attacker.example")) == (
        "unexpected issuer 'https://attacker.example'"
    )


@pytest.mark.parametrize("aud", ["social_security", ["gateway", "audit"], []])
async def test_a_token_for_another_audience_is_refused(aud: Any) -> None:
    assert await refused(access_token(aud=aud)) == (
        "token is not for this audience (expected health)"
    )


async def test_an_expired_token_is_refused() -> None:
    now = int(time.time())
    assert await refused(access_token(iat=now - 400, exp=now - 100)) == "token expired"


async def test_clock_skew_within_the_leeway_is_tolerated() -> None:
    now = int(time.time())
    token = access_token(iat=now + 5, nbf=now + 5, exp=now + 305)
    assert (await verifier(leeway=10).verify(token)).iat == now + 5
    late = access_token(iat=now - 300, exp=now - 5)
    assert (await verifier(leeway=10).verify(late)).exp == now - 5


async def test_a_token_not_yet_valid_is_refused() -> None:
    now = int(time.time())
    assert await refused(access_token(nbf=now + 60)) == "token not yet valid (nbf is in the future)"
    future = access_token(iat=now + 60, exp=now + 300)
    assert await refused(future) == "token not yet valid (issued in the future)"


async def test_an_access_token_living_longer_than_300_s_is_refused() -> None:
    now = int(time.time())
    long_lived = sign_jwt(
        claims(iat=now, exp=now + 600), private_key=PRIVATE_KEY, kid=KID, typ=TOKEN_TYPE
    )
    assert await refused(long_lived) == f"token lifetime 600 s exceeds {MAX_ACCESS_TOKEN_SECONDS} s"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": "tomorrow"}, "claim 'exp' must be a number"),
        ({"iat": True}, "claim 'iat' must be a number"),
        ({"sub": ""}, "claim 'sub' must be a non-empty string"),
        ({"jti": 7}, "claim 'jti' must be a non-empty string"),
        ({"aud": 7}, "claim 'aud' must be a string or a list of strings"),
        ({"client_id": ""}, "claim 'client_id' must be a non-empty string"),
        ({"scope": ["a", "b"]}, "claim 'scope' must be a string"),
        ({"acr": "9"}, "claim 'acr' must be one of 1, 2, 3"),
        ({"acr": ["2"]}, "claim 'acr' must be one of 1, 2, 3"),
        ({"amr": "pin"}, "claim 'amr' must be a list of strings"),
        ({"act": "terminal"}, "claim 'act' must be an object"),
        ({"card": 12}, "claim 'card' must be a non-empty string"),
        ({"sid": ""}, "claim 'sid' must be a non-empty string"),
    ],
)
async def test_claims_of_the_wrong_type_are_refused(overrides: dict[str, Any], reason: str) -> None:
    assert await refused(es256(good_header(), claims(**overrides), PRIVATE_KEY)) == reason


# --- Signing and keys ----------------------------------------------------------------------


def test_the_signer_refuses_access_tokens_no_verifier_would_accept() -> None:
    with pytest.raises(ValueError, match="lacks exp"):
        sign_access_token(claims(exp=None), private_key=PRIVATE_KEY, kid=KID)
    now = int(time.time())
    with pytest.raises(ValueError, match="at most 300 s"):
        sign_access_token(claims(iat=now, exp=now + 301), private_key=PRIVATE_KEY, kid=KID)
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="P-256"):
        sign_jwt(claims(), private_key=p384, kid=KID, typ=TOKEN_TYPE)


def test_a_public_jwk_round_trips_and_never_carries_the_private_key() -> None:
    jwk = public_jwk(PRIVATE_KEY, KID)  # given the private key, it still exports the public one
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "use", "alg"}
    assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"], jwk["kid"]) == (
        "EC",
        "P-256",
        "sig",
        "ES256",
        KID,
    )
    assert load_jwk(jwk).public_numbers() == PUBLIC_KEY.public_numbers()


def _jwk(**overrides: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = public_jwk(PUBLIC_KEY, KID)
    jwk.update(overrides)
    return jwk


@pytest.mark.parametrize(
    ("jwk", "reason"),
    [
        (_jwk(kty="RSA"), "kty EC, crv P-256"),
        (_jwk(kty="oct", k="c2VjcmV0"), "kty EC, crv P-256"),
        (_jwk(crv="P-384"), "kty EC, crv P-256"),
        (_jwk(d="AAAA"), "private key"),
        (_jwk(alg="HS256"), "alg 'HS256' is not ES256"),
        (_jwk(use="enc"), "use 'enc' is not sig"),
        (_jwk(x="AAAA"), "'x' must be 32 octets"),
        (_jwk(y=None), "'y' must be 32 octets"),
        (_jwk(x=b64(b"\x00" * 32), y=b64(b"\x00" * 32)), "not a point on P-256"),
    ],
)
def test_load_jwk_refuses_anything_but_a_public_p256_signing_key(
    jwk: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        load_jwk(jwk)


def test_a_jwks_keeps_the_keys_it_understands_and_refuses_private_ones() -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    jwks = {
        "keys": [
            public_jwk(PUBLIC_KEY, "k1"),
            public_jwk(other, "k2"),
            {"kty": "RSA", "kid": "r1", "n": "AQAB", "e": "AQAB"},
            _jwk(kid="enc1", use="enc"),
            _jwk(kid=None),
        ]
    }
    keys = KeySet.from_jwks(jwks)
    assert keys.kids == ("k1", "k2")
    assert KeySet.from_jwks(keys.jwks()).kids == ("k1", "k2")
    with pytest.raises(ValueError, match="private key"):
        KeySet.from_jwks({"keys": [{**public_jwk(PUBLIC_KEY, "k1"), "d": "AAAA"}]})
    with pytest.raises(ValueError, match="'keys' list"):
        KeySet.from_jwks({"kty": "EC"})
    with pytest.raises(ValueError, match="P-256"):
        KeySet({"k": ec.generate_private_key(ec.SECP384R1()).public_key()})
    with pytest.raises(TypeError, match="public keys only"):
        KeySet({"k": PRIVATE_KEY})  # type: ignore[dict-item]


async def test_a_static_key_source_follows_a_rotation() -> None:
    source = StaticKeySource(KeySet({KID: PUBLIC_KEY}))
    check = verifier(keys=source)
    nxt = ec.generate_private_key(ec.SECP256R1())
    rotated = sign_access_token(claims(), private_key=nxt, kid="k2")
    assert await refused(rotated, keys=source) == "unknown key id"
    source.replace(KeySet({KID: PUBLIC_KEY, "k2": nxt.public_key()}))
    assert (await check.verify(rotated)).sub == "p-7f3a9c"


# --- Keys from a JWKS URL ------------------------------------------------------------------


class JwksEndpoint:
    """A real JWKS endpoint (served by uvicorn) that counts how often it is fetched."""

    def __init__(self, keys: dict[str, ec.EllipticCurvePrivateKey]) -> None:
        self.keys = dict(keys)
        self.fetches = 0
        self.status = 200

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        self.fetches += 1
        body = json.dumps({"keys": [public_jwk(k, kid) for kid, k in self.keys.items()]})
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def endpoint() -> Iterator[tuple[JwksEndpoint, str]]:
    jwks = JwksEndpoint({KID: PRIVATE_KEY})
    with server_thread(jwks) as server:
        yield jwks, f"{server.url}/.well-known/jwks.json"


async def test_jwks_is_fetched_once_and_the_keys_reused(
    endpoint: tuple[JwksEndpoint, str],
) -> None:
    jwks, url = endpoint
    source = JwksSource(url)
    try:
        check = verifier(keys=source)
        for _ in range(20):
            await check.verify(access_token())
    finally:
        await source.aclose()
    assert jwks.fetches == 1


async def test_an_unknown_kid_refetches_once_then_is_rate_limited(
    endpoint: tuple[JwksEndpoint, str],
) -> None:
    jwks, url = endpoint
    clock = FakeClock()
    source = JwksSource(url, min_refetch_interval=30, clock=clock)
    check = verifier(keys=source)
    try:
        await check.verify(access_token())
        assert jwks.fetches == 1

        # The identity service rolls to a new key: its first token triggers one refetch.
        nxt = ec.generate_private_key(ec.SECP256R1())
        jwks.keys["k2"] = nxt
        clock.now += 31
        rolled = sign_access_token(claims(), private_key=nxt, kid="k2")
        assert (await check.verify(rolled)).sub == "p-7f3a9c"
        assert jwks.fetches == 2

        # A flood of made-up kids, sequential and concurrent, costs no further fetch...
        flood = [es256(good_header(kid=f"rnd-{i}"), claims(), PRIVATE_KEY) for i in range(50)]
        for token in flood[:10]:
            assert await refused(token, keys=source) == "unknown key id"
        results = await asyncio.gather(
            *(check.verify(t) for t in flood[10:]), return_exceptions=True
        )
        assert all(isinstance(r, TokenError) and r.reason == "unknown key id" for r in results)
        assert jwks.fetches == 2
        # ...and known keys keep verifying meanwhile.
        assert (await check.verify(access_token())).sub == "p-7f3a9c"

        # Once the interval has passed, one more unknown kid may refetch, once.
        clock.now += 31
        for token in flood[:5]:
            assert await refused(token, keys=source) == "unknown key id"
        assert jwks.fetches == 3
    finally:
        await source.aclose()


async def test_concurrent_first_requests_share_one_fetch(
    endpoint: tuple[JwksEndpoint, str],
) -> None:
    jwks, url = endpoint
    source = JwksSource(url)
    try:
        check = verifier(keys=source)
        tokens = await asyncio.gather(*(check.verify(access_token()) for _ in range(20)))
    finally:
        await source.aclose()
    assert len(tokens) == 20
    assert jwks.fetches == 1


async def test_a_withdrawn_key_stops_verifying_after_max_age(
    endpoint: tuple[JwksEndpoint, str],
) -> None:
    jwks, url = endpoint
    clock = FakeClock()
    source = JwksSource(url, max_age=600, min_refetch_interval=30, clock=clock)
    check = verifier(keys=source)
    try:
        await check.verify(access_token())
        del jwks.keys[KID]  # compromised, withdrawn
        clock.now += 601
        assert await refused(access_token(), keys=source) == "unknown key id"
        assert jwks.fetches == 2
    finally:
        await source.aclose()


async def test_an_unreachable_jwks_is_an_outage_not_a_bad_token(
    endpoint: tuple[JwksEndpoint, str],
) -> None:
    jwks, url = endpoint
    jwks.status = 503
    clock = FakeClock()
    source = JwksSource(url, clock=clock)
    try:
        with pytest.raises(KeySourceError, match="could not be fetched"):
            await verifier(keys=source).verify(access_token())
        # While it is down we keep asking only once per interval.
        with pytest.raises(KeySourceError):
            await verifier(keys=source).verify(access_token())
        assert jwks.fetches == 1
        # Back up: the next attempt after the interval recovers.
        jwks.status = 200
        clock.now += 31
        assert (await verifier(keys=source).verify(access_token())).sub == "p-7f3a9c"
    finally:
        await source.aclose()


async def test_a_failed_refresh_keeps_the_keys_we_have(
    endpoint: tuple[JwksEndpoint, str],
) -> None:
    jwks, url = endpoint
    clock = FakeClock()
    async with httpx.AsyncClient() as client:
        source = JwksSource(url, client=client, max_age=600, clock=clock)
        check = verifier(keys=source)
        await check.verify(access_token())
        jwks.status = 500
        clock.now += 601
        assert (await check.verify(access_token())).sub == "p-7f3a9c"
        assert jwks.fetches == 2


# --- SMART scopes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("granted", "required", "allowed"),
    [
        ({"user/*.cruds"}, "user/Observation.r", True),
        ({"user/*.cruds"}, "user/*.rs", True),
        ({"user/Observation.rs"}, "user/Observation.r", True),
        ({"user/Observation.rs"}, "user/Observation.rs", True),
        ({"user/Observation.r"}, "user/Observation.rs", False),
        ({"user/Observation.rs"}, "user/Observation.c", False),
        ({"user/Observation.cruds"}, "user/Patient.r", False),
        ({"user/Observation.cruds"}, "user/*.r", False),
        ({"user/*.cruds"}, "patient/Observation.r", False),
        ({"patient/*.rs"}, "patient/Observation.s", True),
        ({"system/Claim.c"}, "system/Claim.c", True),
        ({"system/Claim.c"}, "system/Claim.r", False),
        ({"patient/Observation.rs?category=laboratory"}, "patient/Observation.r", False),
        (
            {"patient/Observation.rs?category=laboratory"},
            "patient/Observation.r?category=laboratory",
            True,
        ),
        ({"patient/Observation.rs"}, "patient/Observation.r?category=laboratory", True),
        ({"patient/Observation.read"}, "patient/Observation.rs", True),  # SMART v1 read = rs
        ({"patient/Observation.read"}, "patient/Observation.c", False),
        ({"user/*.write"}, "user/Encounter.cud", True),
        ({"user/*.*"}, "user/Encounter.cruds", True),
        ({"user/Observation.sr"}, "user/Observation.r", False),  # out of order: not a scope
        ({"benefits.read"}, "benefits.read", True),
        ({"benefits.read"}, "benefits.write", False),
        ({"user/*.cruds"}, "benefits.read", False),
        ({"card.manage audit.read"}, "audit.read", False),  # one scope per entry
        (set(), "user/Observation.r", False),
    ],
)
def test_scope_allows_understands_smart_v2(granted: set[str], required: str, allowed: bool) -> None:
    assert scope_allows(frozenset(granted), required) is allowed


# --- Remembered tokens ---------------------------------------------------------------------


async def test_a_remembered_token_is_not_verified_again_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.kit import tokens

    checked = []
    real = tokens._signed_claims

    def counting(*args: Any) -> dict[str, Any]:
        checked.append(1)
        return real(*args)

    monkeypatch.setattr(tokens, "_signed_claims", counting)
    now = [time.time()]
    remembering = verifier(remember=8, clock=lambda: now[0])
    token = access_token()
    first = await remembering.verify(token)
    assert await remembering.verify(token) == first
    assert len(checked) == 1
    # Another verifier (another audience, another service) keeps its own memory.
    await verifier(remember=8).verify(token)
    assert len(checked) == 2

    now[0] += 300 + 11  # past exp and the leeway
    with pytest.raises(TokenError, match="expired"):
        await remembering.verify(token)


async def test_a_remembered_token_dies_with_the_key_that_signed_it() -> None:
    keys = StaticKeySource(KeySet({KID: PUBLIC_KEY}))
    remembering = verifier(remember=8, keys=keys)
    token = access_token()
    await remembering.verify(token)
    keys.replace(KeySet({"k2": ec.generate_private_key(ec.SECP256R1()).public_key()}))
    with pytest.raises(TokenError, match="unknown key id"):
        await remembering.verify(token)
    # The same kid for another key (a botched rotation) is no better.
    keys.replace(KeySet({KID: ec.generate_private_key(ec.SECP256R1()).public_key()}))
    with pytest.raises(TokenError, match="signature"):
        await remembering.verify(token)


async def test_the_memory_is_bounded() -> None:
    remembering = verifier(remember=3)
    for _ in range(10):
        await remembering.verify(access_token())
    assert len(remembering._verified) <= 3
