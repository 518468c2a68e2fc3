"""Token verification: the kit's verifier against a bare ES256 signature check (issue 3).

Both sides verify the same tokens in interleaved rounds, in this process, timed by CPU time
(steadier than wall time on a shared 2-core machine). The kit does everything RFC 8725 asks
(header, typ, kid, every claim, lifetime) on top of the signature; the ratio says what that
costs. Target: kit >= 0.8 x raw.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import statistics
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from rich.console import Console
from rich.table import Table

from bench import BenchmarkError
from services.kit.tokens import KeySet, StaticKeySource, TokenVerifier, sign_access_token

TOKENS = 200
ROUNDS = 30
TARGET = 0.8
ISSUER = "https://onecard.bench"
AUDIENCE = ISSUER + "/fhir"


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _tokens(key: ec.EllipticCurvePrivateKey) -> list[str]:
    now = int(time.time())
    return [
        sign_access_token(
            {
                "iss": ISSUER,
                "sub": f"cz_{i:026d}",
                "aud": [AUDIENCE],
                "exp": now + 300,
                "iat": now,
                "jti": secrets.token_urlsafe(16),
                "client_id": "term_bench",
                "scope": "patient/*.rs presence.health",
                "acr": "2",
                "amr": ["sc", "pin"],
                "card": f"C{i:012d}",
            },
            private_key=key,
            kid="kbench",
        )
        for i in range(TOKENS)
    ]


def run(console: Console) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    tokens = _tokens(key)
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=StaticKeySource(KeySet({"kbench": public}))
    )
    algorithm = ec.ECDSA(hashes.SHA256())

    def raw_round() -> float:
        # The least any ES256 JWS check does: split, decode r||s into DER, verify the signature
        # over the signing input (RFC 7515 section 5.2, RFC 7518 section 3.4). No claims.
        started = time.process_time()
        for token in tokens:
            signing_input, _, signature = token.rpartition(".")
            raw = _b64(signature)
            der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
            public.verify(der, signing_input.encode(), algorithm)
        return time.process_time() - started

    async def kit_round() -> float:
        started = time.process_time()
        for token in tokens:
            await verifier.verify(token)
        return time.process_time() - started

    async def measure() -> tuple[list[float], list[float]]:
        raw_times, kit_times = [], []
        for i in range(ROUNDS + 2):
            order = (raw_round, kit_round) if i % 2 == 0 else (kit_round, raw_round)
            results = {}
            for fn in order:
                value = fn()
                results[fn] = await value if asyncio.iscoroutine(value) else value
            if i >= 2:  # the first two rounds warm caches up
                raw_times.append(results[raw_round])
                kit_times.append(results[kit_round])
        return raw_times, kit_times

    raw_times, kit_times = asyncio.run(measure())
    if not raw_times or min(raw_times) <= 0:
        raise BenchmarkError("the timer did not advance")
    raw_rate = TOKENS / statistics.median(raw_times)
    kit_rate = TOKENS / statistics.median(kit_times)
    ratio = kit_rate / raw_rate
    table = Table(title=f"ES256 token verification, {TOKENS} tokens x {ROUNDS} interleaved rounds")
    table.add_column("verifier")
    table.add_column("verifications/s (CPU)", justify="right")
    table.add_row("raw cryptography ES256 (decode + signature, no claims)", f"{raw_rate:,.0f}")
    table.add_row("kit TokenVerifier (RFC 8725 checks)", f"{kit_rate:,.0f}")
    console.print(table)
    verdict = "[green]PASS[/green]" if ratio >= TARGET else "[red]MISS[/red]"
    console.print(f"kit / raw = {ratio:.2f}  (target >= {TARGET})  {verdict}")
