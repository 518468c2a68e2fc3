"""The card PKI's router in an app of its own, on each test backend, with a clock we move."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from fastapi import FastAPI
from sqlalchemy import inspect, text
from sqlmodel.ext.asyncio.session import AsyncSession

import identity
from identity.pki.authority import (
    SigningCa,
    build_issuing_certificate,
    build_root_certificate,
    generate_key,
    key_id,
)
from identity.pki.models import CaRole, IssuedCertificate
from identity.pki.routes import install_pki, router
from identity.pki.service import PkiService
from identity.settings import IdentitySettings
from services.kit.app import create_service_app
from services.kit.database import Database
from tests.harness import serve_asgi

MIGRATIONS = Path(identity.__file__).parent / "migrations"
BASE_URL = "https://id.example.test"
ALL_APPS = frozenset(
    {"health", "medical_insurance", "social_security", "pension", "transit", "library"}
)


@dataclass
class Clock:
    """The PKI's notion of now; tests move it instead of sleeping."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def pki_app(settings: IdentitySettings, pki: PkiService | None = None) -> FastAPI:
    async def start(app: FastAPI) -> None:
        await install_pki(app, pki=pki)

    return create_service_app(
        settings=settings,
        title="onecard identity (pki)",
        migrations_dir=MIGRATIONS,
        routers=[router],
        on_startup=start,
    )


async def wipe_pki(settings: IdentitySettings) -> None:
    """Empty the PKI tables. The "servers" backend shares one database per xdist worker
    between tests, and each test has a key encryption key of its own: a CA left behind by
    another test could not be opened (which is the point of encrypting it)."""
    db = Database.for_settings(settings)
    try:
        await db.ensure_exists()
        async with db.engine.begin() as conn:
            if await conn.run_sync(lambda c: inspect(c).has_table("ca_keys")):
                for table in ("crls", "certificates", "ca_keys"):
                    await conn.execute(text(f"DELETE FROM {table}"))
    finally:
        await db.dispose()


async def raw_rows(settings: IdentitySettings, sql: str) -> list[dict[str, Any]]:
    """Rows straight from the database, bypassing every model (what a database reader sees)."""
    db = Database.for_settings(settings)
    try:
        async with db.engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(text(sql))]
    finally:
        await db.dispose()


@dataclass
class Pki:
    """A running PKI app: its HTTP client, its service object and its database."""

    client: httpx.AsyncClient
    service: PkiService
    settings: IdentitySettings
    app: FastAPI
    clock: Clock

    @property
    def db(self) -> Database:
        db: Database | None = self.app.state.runtime.db
        assert db is not None
        return db

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """One unit of work, committed like a request's (rolled back on error)."""
        async with self.db.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def issue_card(
        self,
        *,
        pseudonym: str = "cz_testpseudonym0000000000aa",
        card_serial: str = "C-0001",
        applications: frozenset[str] = ALL_APPS,
        key: ec.EllipticCurvePrivateKey | None = None,
        years: int = 4,
    ) -> tuple[IssuedCertificate, ec.EllipticCurvePrivateKey]:
        key = key or ec.generate_private_key(ec.SECP256R1())
        async with self.session() as session:
            row = await self.service.issue_card_certificate(
                csr_for(key, pseudonym),
                session=session,
                pseudonym=pseudonym,
                card_serial=card_serial,
                applications=applications,
                not_after=self.clock.now + timedelta(days=365 * years),
            )
        return row, key

    async def set_status(self, serial: int | str, status: str, reason: str | None = None) -> None:
        async with self.session() as session:
            await self.service.set_status(
                session=session, serial=serial, status=status, reason=reason
            )


def csr_for(key: Any, common_name: str = "anyone") -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, common_name)])
    )
    # Ed25519 signs without a separate hash algorithm.
    csr = builder.sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(make_identity_settings: Callable[..., IdentitySettings]) -> IdentitySettings:
    return make_identity_settings()


@pytest.fixture
async def pki(settings: IdentitySettings, clock: Clock) -> AsyncIterator[Pki]:
    await wipe_pki(settings)
    service = PkiService(settings, public_base_url=BASE_URL, clock=clock)
    app = pki_app(settings, service)
    try:
        async with serve_asgi(app) as client:
            yield Pki(client=client, service=service, settings=settings, app=app, clock=clock)
    finally:
        await wipe_pki(settings)


def make_authority(now: datetime | None = None) -> tuple[SigningCa, SigningCa]:
    """A root and an issuing CA in memory only, for tests that need no database."""
    now = now or datetime.now(UTC)
    root_key = generate_key()
    root = SigningCa(
        kid=key_id(root_key.public_key()),
        role=CaRole.ROOT,
        certificate=build_root_certificate(root_key, now=now),
        key=root_key,
    )
    issuing_key = generate_key()
    issuing = SigningCa(
        kid=key_id(issuing_key.public_key()),
        role=CaRole.ISSUING,
        certificate=build_issuing_certificate(issuing_key, root=root, now=now),
        key=issuing_key,
    )
    return root, issuing
