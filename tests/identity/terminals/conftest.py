"""Cards, terminals and a clock we move, around the whole identity service (both backends).

Cards are made as the card lifecycle makes them, minus its table: a virtual card generates its
key, the PKI certifies it from the card's CSR, the card stores the certificate. Status changes
write what the lifecycle keeps in step: the PKI row (the truth) and the Redis card status
(what every service sees).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from identity.citizens.service import new_pseudonym
from identity.pki.certificates import APPLICATIONS
from identity.pki.service import PkiService
from identity.simulators.card import VirtualCard
from identity.simulators.terminal import VirtualTerminal, card_answer, register
from identity.terminals.service import CardAuthenticator
from services.kit.revocation import Revocations
from services.kit.tokens import KeySet, StaticKeySource, TokenVerifier
from tests.identity.conftest import IdentityService

PIN = "482915"
PUK = "73019264"
ALL_APPS = frozenset(APPLICATIONS)
ISSUER = "http://testserver"


@dataclass
class Clock:
    """Real time plus an offset we move: the authenticator's rules follow it."""

    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Taps:
    """Helpers to make cards and terminals and to drive taps, on one identity service."""

    identity: IdentityService
    folder: Path
    clock: Clock = field(default_factory=Clock)

    @property
    def http(self) -> Any:
        return self.identity.http

    @property
    def authenticator(self) -> CardAuthenticator:
        authenticator: CardAuthenticator = self.identity.app.state.card_authenticator
        return authenticator

    @property
    def pki(self) -> PkiService:
        pki: PkiService = self.identity.app.state.pki
        return pki

    @property
    def revocations(self) -> Revocations:
        return self.authenticator.revocations

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.identity.app.state.runtime.db.unit_of_work() as session:
            yield session

    async def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """Rows straight from the database, bypassing every model."""
        async with self.identity.app.state.runtime.db.engine.connect() as conn:
            result = await conn.execute(text(sql), params)
            return [dict(row) for row in result.mappings()]

    async def card(
        self,
        *,
        applications: frozenset[str] = ALL_APPS,
        pseudonym: str | None = None,
        serial: str | None = None,
    ) -> VirtualCard:
        """An activated virtual card (PIN ``PIN``) with a certificate from our PKI."""
        serial = serial or f"T{secrets.token_hex(6).upper()}"
        card = VirtualCard.create(self.folder / f"{serial}.card.json", serial)
        card.activate(PIN, PUK)
        pseudonym = pseudonym or new_pseudonym()
        async with self.session() as session:
            row = await self.pki.issue_card_certificate(
                card.csr(pseudonym),
                session=session,
                pseudonym=pseudonym,
                card_serial=serial,
                applications=applications,
                not_after=datetime.now(UTC) + timedelta(days=4 * 365),
            )
        card.install_certificate(row.pem)
        return card

    async def terminal(
        self, purpose: str = "registration_desk", facility: str = "Provincial People's Hospital"
    ) -> VirtualTerminal:
        """A terminal registered through the API, with its own credentials."""
        registered = await register(
            self.http,
            admin_token=await self.identity.token("terminal.manage"),
            facility=facility,
            purpose=purpose,
            base_url=ISSUER,
        )
        return VirtualTerminal(registered.credentials)

    async def set_status(
        self, card: VirtualCard, status: str, *, in_pki: bool = True, in_redis: bool = True
    ) -> None:
        """Change a card's status as the card lifecycle does (PKI row, then Redis)."""
        certificate = card.certificate
        assert certificate is not None
        if in_pki:
            async with self.session() as session:
                await self.pki.set_status(
                    session=session, serial=certificate.serial_number, status=status
                )
        if in_redis:
            await self.revocations.set_card_status(
                card.serial, None if status == "good" else status
            )

    async def answer(
        self, terminal: VirtualTerminal, card: VirtualCard, *, pin: str | None = None
    ) -> dict[str, Any]:
        """A fresh challenge at ``terminal``, answered by ``card`` (not yet posted)."""
        challenge = await terminal.challenge(self.http)
        return card_answer(card, challenge, pin=pin)

    async def post_answer(self, terminal: VirtualTerminal, answer: dict[str, Any]) -> Any:
        """Post a card's answer as ``terminal``; the raw response."""
        token = await terminal.access_token(self.http)
        return await self.http.post(
            "/identity/terminal/authentications",
            json=answer,
            headers={"Authorization": f"Bearer {token}"},
        )

    async def verifier(self, prefix: str) -> TokenVerifier:
        """A resource server's verifier for ``prefix``, from the published JWKS only."""
        jwks = (await self.http.get("/.well-known/jwks.json")).json()
        return TokenVerifier(
            issuer=ISSUER, audience=ISSUER + prefix, keys=StaticKeySource(KeySet.from_jwks(jwks))
        )


@pytest.fixture
async def taps(identity_service: IdentityService, tmp_path: Path) -> Taps:
    kit = Taps(identity=identity_service, folder=tmp_path / "cards")
    kit.authenticator.clock = kit.clock
    return kit
