"""Signed tokens for the whole platform: the one module that imports python-jose.

Access tokens are ES256 JWTs with header ``typ: at+jwt`` (RFC 9068); the same signer makes
other ES256 payloads (the QR e-card, RFC 7523 client assertions) under their own ``typ``.
Verification follows the JWT best current practices (RFC 8725):

- the size is capped before anything is parsed;
- exactly one algorithm is allowed (ES256, RFC 7518 section 3.4) and the *key* decides it, never
  the header: an HS256 token "signed" with our public key is refused by name (section 3.1);
- ``typ`` is required and compared as a media type (section 3.11, RFC 9068 section 2.1), so an
  ID token or a QR payload can never pass as an access token;
- ``kid`` picks a key built once from the published JWKS; headers that carry their own key or
  key URL (``jku``, ``jwk``, ``x5u``, ``x5c``) and ``crit`` are refused, as is any JWE;
- every registered claim is required and checked (issuer, audience, expiry, issue time,
  not-before) and an access token lives at most :data:`MAX_ACCESS_TOKEN_SECONDS`.

Why verification parses the compact form itself and checks the signature with the cached
``cryptography`` key instead of calling ``jose.jwt.decode``: jose re-parses the token three
times, decodes JSON with the standard library, rebuilds the ECDSA hash object per call and
lets the header pick the key class, so pinning the algorithm is the caller's job (the tests
show jose 3.5.0 accepting an HS256 token MACed with our DER public key). Measured on the
2-core machine, ``jose.jwt.decode`` reaches 0.65-0.70 of a bare ES256 verification, this
module about 0.8 (the platform's target). python-jose signs every token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import httpx
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jose import jws
from jose.backends.cryptography_backend import CryptographyECKey
from jose.exceptions import JOSEError

log = logging.getLogger(__name__)

ALGORITHM = "ES256"
TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type (RFC 9068 section 2.1), not a secret
# Our tokens are well under 2 KiB; 8 KiB leaves room for long scope lists and is the common
# request-header line limit, so anything larger is an attack or a bug.
MAX_TOKEN_BYTES = 8 * 1024
MAX_ACCESS_TOKEN_SECONDS = 300
# Clock skew tolerated on exp, nbf and iat (RFC 7519 section 4.1.4 "a small leeway").
DEFAULT_LEEWAY = 10.0
# DESIGN.md "Tokens": 1 one factor, 2 two factors (card + PIN), 3 an institution's own key.
ACR_LEVELS = frozenset({"1", "2", "3"})
# RFC 7519 section 4.1 registered claims our tokens always carry.
REGISTERED_CLAIMS: tuple[str, ...] = ("iss", "sub", "aud", "exp", "iat", "jti")
# RFC 9068 section 2.2 adds these for access tokens.
ACCESS_TOKEN_CLAIMS: tuple[str, ...] = (*REGISTERED_CLAIMS, "client_id", "scope")

# Headers that point at or carry a key: a verifier that followed them would let the token
# choose its own key (RFC 8725 section 3.10 and 4.5). ``crit`` names extensions we do not
# implement, so RFC 7515 section 4.1.11 obliges us to refuse it.
_FORBIDDEN_HEADERS = ("jku", "jwk", "x5u", "x5c", "crit")
# A P-256 ECDSA signature is r || s, 32 bytes each (RFC 7518 section 3.4): 86 base64url chars.
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{85}[AQgw]")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_SHOWABLE = re.compile(r"[A-Za-z0-9+/._:-]{1,40}")
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
# Parsed, validated headers by their encoded segment: every token of one key shares its header.
_HEADER_CACHE_SIZE = 64
# Verified access tokens a service (or the gateway) remembers (TokenVerifier ``remember``): the
# callers active within a token's few minutes of life, at about 1 KiB each.
REMEMBERED_TOKENS = 4096


class TokenError(Exception):
    """A token was refused; the message says why, for the caller, and never quotes the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeySourceError(Exception):
    """The verification keys could not be obtained: an outage, not the caller's fault."""


def show(value: object) -> str:
    """An attacker-supplied value made safe to put in an error message and a header."""
    if isinstance(value, str) and _SHOWABLE.fullmatch(value):
        return f"'{value}'"
    return f"<{type(value).__name__}>"


# --- Scopes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmartScope:
    """A SMART App Launch v2 clinical scope, ``context/Resource.permissions[?query]``."""

    context: str
    resource: str
    permissions: frozenset[str]
    query: str


# SMART App Launch 2.0 scopes-and-launch-context.html: permissions are c, r, u, d, s in that
# order; the v1 forms read (= rs), write (= cud) and * are still understood.
_SMART = re.compile(
    r"(patient|user|system)/(\*|[A-Z][A-Za-z]*)\.(c?r?u?d?s?|read|write|\*)(\?[^\s]+)?"
)
_V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}


@lru_cache(maxsize=1024)
def parse_smart_scope(scope: str) -> SmartScope | None:
    """The SMART scope ``scope`` names, or None for a platform scope (``benefits.read``)."""
    match = _SMART.fullmatch(scope)
    if match is None or not match.group(3):
        return None
    context, resource, permissions, query = match.groups()
    letters = _V1_PERMISSIONS.get(permissions, permissions)
    return SmartScope(context, resource, frozenset(letters), query or "")


def scope_allows(granted: Collection[str], required: str) -> bool:
    """Whether the ``granted`` scopes include ``required`` (SMART v2 wildcards understood).

    ``user/*.cruds`` grants ``user/Observation.r``; contexts never grant each other (a
    ``user/`` scope does not grant a ``patient/`` one); a granted scope narrowed by a query
    (``patient/Observation.rs?category=laboratory``) grants only the same narrowing. A
    platform scope (no ``/``) is granted only by itself.
    """
    if required in granted:
        return True
    need = parse_smart_scope(required)
    if need is None:
        return False
    for scope in granted:
        have = parse_smart_scope(scope)
        if (
            have is not None
            and have.context == need.context
            and have.resource in ("*", need.resource)
            and need.permissions <= have.permissions
            and have.query in ("", need.query)
        ):
            return True
    return False


# --- The verified token ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A verified RFC 9068 access token."""

    iss: str
    sub: str
    aud: tuple[str, ...]
    exp: float
    iat: float
    jti: str
    client_id: str
    scope: frozenset[str]
    acr: str
    amr: tuple[str, ...] = ()
    # RFC 8693 section 4.1: who acts for the subject (the terminal or app), or None.
    act: dict[str, Any] | None = None
    card: str | None = None
    sid: str | None = None
    nbf: float | None = None
    claims: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def has_scope(self, scope: str) -> bool:
        return scope_allows(self.scope, scope)

    def missing_scopes(self, scopes: Iterable[str]) -> list[str]:
        return [s for s in scopes if not scope_allows(self.scope, s)]

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> AccessToken:
        """Build from claims whose registered part :class:`TokenVerifier` has checked."""
        # Written for speed (it runs on every request): one lookup per claim, exact type checks.
        get = claims.get
        client_id, scope, acr = get("client_id"), get("scope"), get("acr")
        amr, act, card, sid = get("amr", ()), get("act"), get("card"), get("sid")
        if type(client_id) is not str or not client_id:
            raise _bad_claim("client_id", client_id, "a non-empty string")
        if type(scope) is not str:
            raise _bad_claim("scope", scope, "a string")  # RFC 9068 section 2.2.3
        if type(acr) is not str or acr not in ACR_LEVELS:
            raise _bad_claim("acr", acr, f"one of {', '.join(sorted(ACR_LEVELS))}")
        if type(amr) is not tuple:
            if type(amr) is not list or not all(type(m) is str for m in amr):
                raise _bad_claim("amr", amr, "a list of strings")  # RFC 8176
            amr = tuple(amr)
        if act is not None and type(act) is not dict:
            raise _bad_claim("act", act, "an object")  # RFC 8693 section 4.1
        if card is not None and (type(card) is not str or not card):
            raise _bad_claim("card", card, "a non-empty string")
        if sid is not None and (type(sid) is not str or not sid):
            raise _bad_claim("sid", sid, "a non-empty string")
        aud = claims["aud"]
        return cls(
            iss=claims["iss"],
            sub=claims["sub"],
            aud=(aud,) if type(aud) is str else tuple(aud),
            exp=claims["exp"],
            iat=claims["iat"],
            jti=claims["jti"],
            client_id=client_id,
            scope=frozenset(scope.split()),
            acr=acr,
            amr=amr,
            act=act,
            card=card,
            sid=sid,
            nbf=get("nbf"),
            claims=claims,
        )


def _bad_claim(name: str, value: object, expected: str) -> TokenError:
    if value is None:
        return TokenError(f"missing claim '{name}'")
    return TokenError(f"claim '{name}' must be {expected}")


def _string(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if type(value) is not str or not value:
        raise _bad_claim(name, value, "a non-empty string")
    return value


# --- Keys ----------------------------------------------------------------------------------


def _b64decode(segment: str) -> bytes:
    """base64url without padding (RFC 7515 section 2); lenient, so callers check the alphabet
    first or, for a payload, verify the signature over the encoded form."""
    # binascii directly: base64.urlsafe_b64decode adds two copies and a type dispatch.
    data = segment.encode("ascii").translate(_FROM_URLSAFE)
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _require_p256(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> None:
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"ES256 needs a P-256 key, not {key.curve.name}")


def public_jwk(
    key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey, kid: str
) -> dict[str, str]:
    """The public JWK of a P-256 key (RFC 7517, RFC 7518 section 6.2), never its private part."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    _require_p256(public)
    # SEC 1 uncompressed point: 0x04 || x || y, each coordinate the full 32 octets that
    # RFC 7518 section 6.2.1.2 asks for.
    point = public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64encode(point[1:33]),
        "y": _b64encode(point[33:]),
        "kid": kid,
        "use": "sig",
        "alg": ALGORITHM,
    }


def load_jwk(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    """The public key of an EC P-256 signing JWK; anything else is refused with a reason."""
    if not isinstance(jwk, Mapping):
        raise ValueError("a JWK must be a JSON object")
    if "d" in jwk:
        raise ValueError("JWK carries a private key ('d'); publish only public keys")
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        got = f"{show(jwk.get('kty'))}, {show(jwk.get('crv'))}"
        raise ValueError(f"JWK must be kty EC, crv P-256 (got {got})")
    if jwk.get("alg", ALGORITHM) != ALGORITHM:
        raise ValueError(f"JWK alg {show(jwk.get('alg'))} is not {ALGORITHM}")
    if jwk.get("use", "sig") != "sig":
        raise ValueError(f"JWK use {show(jwk.get('use'))} is not sig")
    coordinates = []
    for name in ("x", "y"):
        value = jwk.get(name)
        # RFC 7518 section 6.2.1.2: the full 32 octets, base64url without padding.
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]{43}", value):
            raise ValueError(f"JWK '{name}' must be 32 octets in base64url")
        coordinates.append(_b64decode(value))
    try:
        # Rejects points that are not on the curve (invalid-curve attacks).
        return ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b"\x04" + coordinates[0] + coordinates[1]
        )
    except ValueError as exc:
        raise ValueError("JWK is not a point on P-256") from exc


class KeySet:
    """Verification keys by ``kid``, each built once into a ``cryptography`` key object."""

    def __init__(self, keys: Mapping[str, ec.EllipticCurvePublicKey] | None = None) -> None:
        for key in (keys or {}).values():
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise TypeError("a KeySet holds public keys only")
            _require_p256(key)
        self._keys: dict[str, ec.EllipticCurvePublicKey] = dict(keys or {})

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> KeySet:
        """Keys of a JWK Set (RFC 7517 section 5); keys of other types or uses are skipped."""
        entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
        if not isinstance(entries, list):
            raise ValueError("a JWK Set must be an object with a 'keys' list")
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for entry in entries:
            if isinstance(entry, Mapping) and "d" in entry:
                raise ValueError("JWK Set carries a private key ('d')")
            kid = entry.get("kid") if isinstance(entry, Mapping) else None
            if not isinstance(kid, str) or not kid:
                continue
            try:
                keys[kid] = load_jwk(entry)
            except ValueError as exc:
                # RFC 7517 section 5: ignore keys we do not understand (say, an RSA key).
                log.info("skipping JWK", extra={"kid": kid, "reason": str(exc)})
        return cls(keys)

    def get(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        return self._keys.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWK Set, for ``/.well-known/jwks.json``."""
        return {"keys": [public_jwk(key, kid) for kid, key in self._keys.items()]}


class KeySource(Protocol):
    """Where a verifier finds keys: ``cached`` is the fast path, ``get`` may fetch."""

    def cached(self, kid: str) -> ec.EllipticCurvePublicKey | None: ...

    async def get(self, kid: str) -> ec.EllipticCurvePublicKey | None: ...


class StaticKeySource:
    """Keys a service holds itself (the identity service verifying its own tokens)."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys

    def replace(self, keys: KeySet) -> None:
        """Swap in a new set after a key rotation."""
        self.keys = keys

    def cached(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        return self.keys.get(kid)

    async def get(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        return self.keys.get(kid)


class JwksSource:
    """Keys published at a JWKS URL, fetched once and refetched when a new ``kid`` appears.

    A refetch happens at most once per ``min_refetch_interval`` seconds however many unknown
    ``kid`` values arrive, so a flood of tokens with made-up key ids cannot hammer the
    identity service; concurrent misses share one request. Keys are also refreshed after
    ``max_age`` so a withdrawn key stops verifying. A failed refresh keeps the keys we have.
    """

    # A JWKS with a current and a next key is about 400 bytes.
    MAX_JWKS_BYTES = 64 * 1024

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient | None = None,
        min_refetch_interval: float = 30.0,
        max_age: float = 3600.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._owns_client = client is None
        self.min_refetch_interval = min_refetch_interval
        self.max_age = max_age
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    def cached(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        if self._keys is None or self._clock() - self._fetched_at > self.max_age:
            return None  # the slow path fetches
        return self._keys.get(kid)

    async def get(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        key = self.cached(kid)
        if key is not None:
            return key
        async with self._lock:
            # Another task may have fetched while we waited for the lock.
            key = self.cached(kid)
            if key is None and self._may_fetch():
                await self._fetch()
        if self._keys is None:
            raise KeySourceError(f"no verification keys: {self.url} could not be fetched")
        return self._keys.get(kid)

    def _may_fetch(self) -> bool:
        # Whether for a new kid, stale keys or none at all: never more than once per interval.
        return (
            self._attempted_at is None
            or self._clock() - self._attempted_at >= self.min_refetch_interval
        )

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        try:
            response = await self._client.get(self.url, headers={"accept": "application/json"})
            response.raise_for_status()
            if len(response.content) > self.MAX_JWKS_BYTES:
                raise ValueError(f"JWKS larger than {self.MAX_JWKS_BYTES} bytes")
            keys = KeySet.from_jwks(orjson.loads(response.content))
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("JWKS fetch failed", extra={"url": self.url, "error": str(exc)})
            return
        self._keys = keys
        self._fetched_at = self._clock()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


# --- Signing -------------------------------------------------------------------------------


def sign_jwt(
    claims: Mapping[str, Any], *, private_key: ec.EllipticCurvePrivateKey, kid: str, typ: str
) -> str:
    """An ES256 compact JWS of ``claims`` with header ``{alg, typ, kid}`` (RFC 7515)."""
    _require_p256(private_key)
    try:
        return jws.sign(
            dict(claims),
            CryptographyECKey(private_key, ALGORITHM),
            headers={"typ": typ, "kid": kid},
            algorithm=ALGORITHM,
        )
    except JOSEError as exc:  # claims that are not JSON, for one
        raise ValueError(f"cannot sign: {exc}") from exc


def sign_access_token(
    claims: Mapping[str, Any], *, private_key: ec.EllipticCurvePrivateKey, kid: str
) -> str:
    """An RFC 9068 access token; refuses claims no verifier would accept."""
    missing = [name for name in (*ACCESS_TOKEN_CLAIMS, "acr") if name not in claims]
    if missing:
        raise ValueError(f"access token lacks {', '.join(missing)}")
    if claims["exp"] - claims["iat"] > MAX_ACCESS_TOKEN_SECONDS:
        raise ValueError(f"access tokens live at most {MAX_ACCESS_TOKEN_SECONDS} s")
    return sign_jwt(claims, private_key=private_key, kid=kid, typ=TOKEN_TYPE)


# --- Verification --------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _media_type(typ: str) -> str:
    # RFC 7515 section 4.1.9: "application/" may be omitted, and media types compare
    # case-insensitively (RFC 2045 section 5.1), so "application/AT+JWT" is "at+jwt".
    typ = typ.lower()
    return typ.removeprefix("application/")


@dataclass(frozen=True, slots=True)
class _Header:
    kid: str
    typ: str  # normalised by _media_type
    shown_typ: str  # as the token wrote it, for the error message


@dataclass(frozen=True, slots=True)
class _Verified:
    """An access token that passed every check, and what it was checked with."""

    token: AccessToken
    kid: str
    key: ec.EllipticCurvePublicKey


class TokenVerifier:
    """Verifies tokens of one issuer for one audience (or a few) with keys from ``keys``."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | Collection[str],
        keys: KeySource,
        leeway: float = DEFAULT_LEEWAY,
        clock: Callable[[], float] = time.time,
        remember: int = 0,
    ) -> None:
        """``remember``: how many verified access tokens to keep, so that a token presented
        again (an app's or a hospital system's every request, for minutes) is not verified
        again; 0 verifies every time."""
        self.issuer = issuer
        self.audiences = frozenset([audience] if isinstance(audience, str) else audience)
        if not self.audiences:
            raise ValueError("a verifier needs an audience")
        self.keys = keys
        self.leeway = leeway
        self._clock = clock
        self._headers: dict[str, _Header] = {}
        self._remember = remember
        self._verified: dict[bytes, _Verified] = {}

    async def verify(self, token: str, *, typ: str = TOKEN_TYPE) -> AccessToken:
        """An access token: signature, header and claims checked, or :class:`TokenError`."""
        # The steps are spelled out in both public methods rather than one awaiting the other:
        # verification is on every request's path and each coroutine level costs.
        digest = None
        if self._remember and typ == TOKEN_TYPE:
            # By digest: the verifier keeps no bearer token itself.
            digest = hashlib.sha256(token.encode()).digest()
            known = self._verified.get(digest)
            # The same bytes signed by the same key verify the same way; only the time checks
            # change, and the key must still be the one the source offers for its kid (a
            # rotated-out or replaced key ends what it verified).
            if known is not None and self.keys.cached(known.kid) is known.key:
                self._check_times(known.token.claims, MAX_ACCESS_TOKEN_SECONDS)
                return known.token
        segments, kid = self._split(token, typ)
        key = self.keys.cached(kid) or await self._key(kid)
        claims = _signed_claims(token, segments, key)
        self._check_claims(
            claims, require=ACCESS_TOKEN_CLAIMS, max_lifetime=MAX_ACCESS_TOKEN_SECONDS
        )
        verified = AccessToken.from_claims(claims)
        if digest is not None:
            if len(self._verified) >= self._remember:
                self._verified.clear()  # a bounded memory; the next requests fill it again
            self._verified[digest] = _Verified(verified, kid, key)
        return verified

    async def verify_claims(
        self,
        token: str,
        *,
        typ: str,
        max_lifetime: float | None = None,
        require: Collection[str] = REGISTERED_CLAIMS,
    ) -> dict[str, Any]:
        """The claims of any ES256 JWT of ``typ`` (QR payloads, client assertions)."""
        segments, kid = self._split(token, typ)
        key = self.keys.cached(kid) or await self._key(kid)
        claims = _signed_claims(token, segments, key)
        self._check_claims(claims, require=require, max_lifetime=max_lifetime)
        return claims

    async def _key(self, kid: str) -> ec.EllipticCurvePublicKey:
        key = await self.keys.get(kid)
        if key is None:
            raise TokenError("unknown key id")
        return key

    def _split(self, token: str, typ: str) -> tuple[tuple[str, str, str], str]:
        segments = _split(token)
        return segments, self._header(segments[0], _media_type(typ)).kid

    def _header(self, segment: str, typ: str) -> _Header:
        cached = self._headers.get(segment)
        if cached is None:
            cached = _parse_header(segment)
            if len(self._headers) >= _HEADER_CACHE_SIZE:
                self._headers.clear()  # made-up headers only cost their own parsing
            self._headers[segment] = cached
        if cached.typ != typ:
            raise TokenError(f"unexpected typ {cached.shown_typ}")
        return cached

    def _check_claims(
        self, claims: dict[str, Any], *, require: Collection[str], max_lifetime: float | None
    ) -> None:
        get = claims.get
        for name in require:
            if get(name) is None:
                raise TokenError(f"missing claim '{name}'")
        iss = get("iss")
        if iss is not None and iss != self.issuer:
            raise TokenError(f"unexpected issuer {show(iss)}")
        for name in ("sub", "jti"):
            if name in claims:
                _string(claims, name)
        aud = get("aud")
        if aud is not None:
            # RFC 7519 section 4.1.3: a string or an array of strings, one of which is us.
            audiences = [aud] if type(aud) is str else aud
            if type(audiences) is not list or not all(type(a) is str for a in audiences):
                raise TokenError("claim 'aud' must be a string or a list of strings")
            if self.audiences.isdisjoint(audiences):
                wanted = " or ".join(sorted(self.audiences))
                raise TokenError(f"token is not for this audience (expected {wanted})")
        self._check_times(claims, max_lifetime)

    def _check_times(self, claims: dict[str, Any], max_lifetime: float | None) -> None:
        # RFC 7519 sections 4.1.4 to 4.1.6, each with the same small leeway for clock skew.
        now = self._clock()
        exp, iat, nbf = _time(claims, "exp"), _time(claims, "iat"), _time(claims, "nbf")
        if exp is not None and now >= exp + self.leeway:
            raise TokenError("token expired")
        if nbf is not None and nbf > now + self.leeway:
            raise TokenError("token not yet valid (nbf is in the future)")
        if iat is not None and iat > now + self.leeway:
            raise TokenError("token not yet valid (issued in the future)")
        if max_lifetime is not None:
            if exp is None or iat is None:
                raise TokenError("token lifetime unknown (needs exp and iat)")
            if exp - iat > max_lifetime:
                raise TokenError(f"token lifetime {exp - iat:g} s exceeds {max_lifetime:g} s")


def _time(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    # RFC 7519 section 2 NumericDate; JSON true/false are not numbers even if Python says so.
    if value is None or type(value) is int or type(value) is float:
        return value
    raise TokenError(f"claim '{name}' must be a number")


def _signed_claims(
    token: str, segments: tuple[str, str, str], key: ec.EllipticCurvePublicKey
) -> dict[str, Any]:
    header, payload, signature = segments
    # Exactly one spelling of a signature passes: 86 base64url characters, the last one with
    # its 4 spare bits zero (RFC 4648 section 3.5). Lenient decoding would accept "+", "/" and
    # 15 other final characters for the same bytes.
    if not _SIGNATURE.fullmatch(signature):
        raise TokenError("invalid signature")
    raw = _b64decode(signature)
    # JWS carries r || s (RFC 7518 section 3.4); cryptography wants the DER sequence.
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    # The signing input is the encoded header and payload exactly as they came (RFC 7515 5.2).
    signing_input = token[: len(header) + 1 + len(payload)].encode("ascii")
    try:
        key.verify(der, signing_input, _ECDSA_SHA256)
    except InvalidSignature:
        raise TokenError("invalid signature") from None
    # Only now is the payload worth parsing: it comes from a key we trust.
    return _json_object(payload, "payload")


def _split(token: str) -> tuple[str, str, str]:
    if not isinstance(token, str):
        raise TokenError("token must be a string")
    # RFC 8725 section 3.1 and our own resources: nothing larger is even looked at.
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError(f"token larger than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1] or not token.isascii():
        if len(parts) == 5:
            # RFC 7516 compact JWE has five parts; we accept signed tokens only (RFC 8725 2.7).
            raise TokenError("encrypted tokens (JWE) are not accepted")
        raise TokenError("token is not a compact JWS (three base64url parts)")
    # The base64url alphabet is checked where it matters and no further: the header when it is
    # first parsed, the signature by its pattern, and the payload by the signature itself,
    # which covers it exactly as sent (a stray character anywhere fails verification).
    header, payload, signature = parts
    return header, payload, signature


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(_b64decode(segment))
    except (binascii.Error, ValueError):
        raise TokenError(f"token {what} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise TokenError(f"token {what} is not a JSON object")
    return value


def _parse_header(segment: str) -> _Header:
    if not _BASE64URL.fullmatch(segment):
        raise TokenError("token is not a compact JWS (three base64url parts)")
    header = _json_object(segment, "header")
    if "enc" in header:
        raise TokenError("encrypted tokens (JWE) are not accepted")
    alg = header.get("alg")
    if alg != ALGORITHM:
        if alg is None:
            raise TokenError("header has no alg")
        shown = alg if isinstance(alg, str) and _SHOWABLE.fullmatch(alg) else show(alg)
        raise TokenError(f"algorithm {shown} not allowed (only {ALGORITHM})")
    for name in _FORBIDDEN_HEADERS:
        if name in header:
            raise TokenError(f"header '{name}' not allowed")
    typ = header.get("typ")
    if not isinstance(typ, str):
        raise TokenError("header has no typ")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError("header has no kid")
    return _Header(kid=kid, typ=_media_type(typ), shown_typ=show(typ))


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a compact JWS WITHOUT checking anything: only to pick the verifying key.

    RFC 7523 client assertions name their client in ``iss``, and the client's registered key is
    what then verifies the assertion; nothing read here may be trusted before that.
    """
    return _json_object(_split(token)[1], "payload")
