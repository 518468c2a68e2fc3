"""A registration desk over the whole identity app: citizens, virtual cards, holder tokens.

Every check reads what a relying party would: the certificate's status in the PKI (what OCSP
and the CRLs answer) and the card's status in Redis (what every service refuses tokens on).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from identity.national_id import make_national_id
from identity.pki.models import IssuedCertificate
from identity.pki.service import PkiService
from identity.simulators.card import VirtualCard
from services.kit.database import Database
from services.kit.revocation import Revocations
from tests.identity.conftest import IdentityService

ALL_APPS = ["health", "library", "medical_insurance", "pension", "social_security", "transit"]
PROBLEM = "application/problem+json"


@dataclass
class Desk:
    """A registration desk with an administrator's token (card.manage), and its tools."""

    identity: IdentityService
    tmp_path: Path
    admin: dict[str, str] = field(default_factory=dict)
    _numbers: Any = field(default_factory=lambda: itertools.count(1))
    _files: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def http(self) -> httpx.AsyncClient:
        return self.identity.http

    @property
    def db(self) -> Database:
        db: Database | None = self.identity.app.state.runtime.db
        assert db is not None
        return db

    @property
    def pki(self) -> PkiService:
        pki: PkiService = self.identity.app.state.pki
        return pki

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.db.unit_of_work() as session:
            yield session

    async def citizen(self) -> str:
        """Register a new citizen; returns their pseudonymous id."""
        number = make_national_id(birth=date(1980, 5, 17), sequence=next(self._numbers))
        response = await self.http.post(
            "/identity/citizens",
            json={"name": "王芳", "national_id": number},
            headers=await self.identity.auth("citizen.manage"),
        )
        assert response.status_code == 201, response.text
        pseudonym: str = response.json()["id"]
        return pseudonym

    def blank_card(self) -> VirtualCard:
        """A new card (or phone): its key pair generated on it, no serial yet."""
        return VirtualCard.create(self.tmp_path / f"card-{next(self._files)}.json")

    async def issue(
        self, citizen: str, card: VirtualCard | None = None, apps: list[str] | None = None
    ) -> httpx.Response:
        card = card or self.blank_card()
        return await self.http.post(
            "/identity/cards",
            json={"citizen": citizen, "applications": apps or ALL_APPS, "csr": card.csr(citizen)},
            headers=self.admin,
        )

    async def issued_card(
        self, citizen: str | None = None, *, active: bool = True
    ) -> tuple[str, VirtualCard, dict[str, Any]]:
        """(citizen, the card with its certificate installed, the card as the API shows it)."""
        citizen = citizen or await self.citizen()
        card = self.blank_card()
        response = await self.issue(citizen, card)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        card.install_certificate(body["certificate"])
        if active:
            body = await self.step(body["serial"], "activate")
        return citizen, card, body

    async def step(
        self, serial: str, transition: str, *, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """A status change that must succeed; returns the card."""
        response = await self.http.post(
            f"/identity/cards/{serial}/{transition}", headers=headers or self.admin
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def ecard(
        self, serial: str, citizen: str, *, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        phone = self.blank_card()
        return await self.http.post(
            f"/identity/cards/{serial}/ecard",
            json={"csr": phone.csr(citizen)},
            headers=headers or self.holder(citizen, card=serial),
        )

    def holder_token(self, citizen: str, *, card: str | None, acr: str = "2") -> str:
        """What the mobile app holds after a tap of ``card`` (with the PIN for acr=2)."""
        issued = self.identity.app.state.token_issuer.issue(
            subject=citizen,
            client_id="mobile-app",
            scopes=["card.self"],
            audience=["http://testserver/identity"],
            acr=acr,
            amr=["sc", "pin"] if acr == "2" else ["sc"],
            card=card,
        )
        token: str = issued.token
        return token

    def holder(self, citizen: str, *, card: str | None = None, acr: str = "2") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.holder_token(citizen, card=card, acr=acr)}"}

    async def certificate(self, certificate_serial: str) -> IssuedCertificate:
        async with self.session() as session:
            return await self.pki.get_certificate(session=session, serial=certificate_serial)

    async def certificate_status(self, card: dict[str, Any]) -> tuple[str, str | None]:
        """(status, RFC 5280 reason) of the card's certificate, as OCSP and CRLs tell it."""
        row = await self.certificate(card["certificate_serial"])
        return str(row.status), row.revocation_reason

    async def cached_status(self, serial: str) -> str | None:
        """The card's status in Redis, as every service reads it (None: good)."""
        revocations = Revocations(self.identity.app.state.runtime.redis)
        return await revocations.card_status(serial)

    async def read(self, serial: str) -> dict[str, Any]:
        response = await self.http.get(f"/identity/cards/{serial}", headers=self.admin)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def rows(self, sql: str) -> list[dict[str, Any]]:
        async with self.db.engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(text(sql))]

    async def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every card and certificate row, to prove a refusal changed nothing."""
        cards = await self.rows("SELECT * FROM cards ORDER BY serial")
        certificates = await self.rows(
            "SELECT serial, status, revocation_reason FROM certificates ORDER BY serial"
        )
        return cards, certificates


@pytest.fixture
async def desk(identity_service: IdentityService, tmp_path: Path) -> Desk:
    return Desk(
        identity=identity_service,
        tmp_path=tmp_path,
        admin=await identity_service.auth("card.manage"),
    )


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The problem+json body of a refusal with ``status``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    return body
