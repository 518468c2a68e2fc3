"""A FHIR store of N resources, made by re-identifying the Synthea data, cached between runs.

Each copy of a Synthea patient's Bundle gets new logical ids for every resource, its
``urn:uuid`` references rewritten to those ids (``Type/id``, as the store keeps them after a
transaction: FHIR R4 bundle.html#references), and new values for each of the Patient's
identifiers, so the store holds as many distinct patients as copies. The shared
Organizations and Practitioners are stored once; the patients' conditional references to
them (``Organization?identifier=...``) point at those.

Loading goes straight into the tables with the store's own staging code
(:class:`health.store.versions.Writes`, hence :func:`health.search.index.reindex_many`): the
rows and index entries are exactly those a transaction Bundle would write, in big
transactions, without HTTP. The result is cached under a name that carries its size and the
store's schema revision, and built under a temporary name renamed at the end, so an
interrupted build is never mistaken for a complete one:
- PostgreSQL: database ``onecard_bench_fhirscale_<size>_<revision>``; a run's health database
  is created from it (``CREATE DATABASE ... TEMPLATE``, a file copy);
- SQLite: ``$XDG_CACHE_HOME/onecard-bench/fhirscale-<size>-<revision>.db``, copied into the
  run's var dir.
The cached rows name a placeholder author; a run makes its hospital client their author.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.fhir_platform import POSTGRES_URL
from health.store.versions import Writes
from services.kit.database import Database
from services.kit.migrations import alembic_config, upgrade
from services.kit.settings import to_async_url

MIGRATIONS = Path(__file__).resolve().parent.parent / "health" / "migrations"
# The author of every cached row until a run hands them to its hospital client.
PLACEHOLDER_AUTHOR = "hosp_bench_placeholder"
# Resources per flush (bounded memory) and per transaction (few commits, big ones).
FLUSH_EVERY = 2_000
COMMIT_EVERY = 20_000
_URN = re.compile(r"urn:uuid:([0-9a-fA-F-]{36})")
_SHARED = ("hospital", "practitioner")
# A conditional reference as a JSON string: "Organization?identifier=system|value".
_CONDITIONAL = re.compile(r'"([A-Za-z]+\?identifier=[^"]*)"')


@dataclass(frozen=True)
class Template:
    """One Synthea Bundle's resources, as JSON text with conditional references resolved."""

    # (resource type, the entry's urn:uuid, the resource's JSON text)
    resources: list[tuple[str, str, str]]


def _bundles(synthea: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    shared: list[dict[str, Any]] = []
    patients: list[dict[str, Any]] = []
    for path in sorted(synthea.glob("*.json")):
        bundle = orjson.loads(path.read_bytes())
        (shared if path.name.startswith(_SHARED) else patients).append(bundle)
    if not patients:
        raise ValueError(f"no Synthea patient bundles in {synthea}")
    return shared, patients


def _entry_uuid(entry: dict[str, Any]) -> str:
    full_url = str(entry.get("fullUrl", ""))
    return full_url.removeprefix("urn:uuid:")


def schema_revision() -> str:
    """The health store's migration head: a cache made under another schema is not reused."""
    config = alembic_config(service="health", migrations_dir=MIGRATIONS, database_url="sqlite://")
    head = ScriptDirectory.from_config(config).get_current_head()
    return str(head or "base")


def cache_name(size: int) -> str:
    return f"onecard_bench_fhirscale_{size}_{schema_revision()}".lower()


def sqlite_cache(size: int) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "onecard-bench"
    return root / f"{cache_name(size)}.db"


class Generator:
    """Yields (resource type, id, resource) for ``size`` resources."""

    def __init__(self, synthea: Path) -> None:
        shared, patients = _bundles(synthea)
        self.shared: list[tuple[str, str, dict[str, Any]]] = []
        # "Organization?identifier=system|value" -> "Organization/<id>" (FHIR R4
        # http.html#cond-update style conditional references, as Synthea writes them).
        conditional: dict[str, str] = {}
        for bundle in shared:
            for entry in bundle.get("entry", []):
                resource = entry["resource"]
                kind, new_id = resource["resourceType"], str(uuid.uuid4())
                self.shared.append((kind, new_id, resource))
                for identifier in resource.get("identifier", []):
                    key = f"{kind}?identifier={identifier.get('system')}|{identifier.get('value')}"
                    conditional[key] = f"{kind}/{new_id}"
        self.templates = [self._template(bundle, conditional) for bundle in patients]

    @staticmethod
    def _template(bundle: dict[str, Any], conditional: dict[str, str]) -> Template:
        resources = []
        for entry in bundle.get("entry", []):
            resource = entry["resource"]
            body = _CONDITIONAL.sub(
                lambda m: f'"{conditional.get(m.group(1), m.group(1))}"',
                orjson.dumps(resource).decode(),
            )
            resources.append((resource["resourceType"], _entry_uuid(entry), body))
        return Template(resources)

    def resources(self, size: int) -> Iterator[tuple[str, str, dict[str, Any]]]:
        produced = 0
        for kind, new_id, shared in self.shared:
            if produced >= size:
                return
            yield kind, new_id, dict(shared)
            produced += 1
        copy = 0
        while produced < size:
            template = self.templates[copy % len(self.templates)]
            copy += 1
            ids = {urn: (kind, str(uuid.uuid4())) for kind, urn, _ in template.resources}

            def relink(match: re.Match[str], ids: dict[str, tuple[str, str]] = ids) -> str:
                known = ids.get(match.group(1))
                return f"{known[0]}/{known[1]}" if known else match.group(0)

            for kind, urn, body in template.resources:
                if produced >= size:
                    return
                resource: dict[str, Any] = orjson.loads(_URN.sub(relink, body))
                if kind == "Patient":
                    # New identifiers: each copy is another person (MRN, SSN, ... re-issued).
                    for identifier in resource.get("identifier", []):
                        identifier["value"] = uuid.uuid4().hex[:16]
                yield kind, ids[urn][1], resource
                produced += 1


async def _load(url: str, synthea: Path, size: int, progress: Callable[[int], None]) -> None:
    db = Database(to_async_url(url))
    try:
        await db.ensure_exists()
        config = alembic_config(
            service="health",
            migrations_dir=MIGRATIONS,
            database_url=db.url.render_as_string(hide_password=False),
            connect_args=db.connect_args(),
        )
        await asyncio.to_thread(upgrade, config)
        stream = Generator(synthea).resources(size)
        done = 0
        while done < size:
            async with db.sessionmaker() as session, session.begin():
                writes = Writes(session, author=PLACEHOLDER_AUTHOR)
                staged = 0
                for kind, resource_id, resource in stream:
                    writes.stage(
                        resource_type=kind,
                        resource_id=resource_id,
                        version_id=1,
                        resource=resource,
                        method="POST",
                        is_new=True,
                    )
                    staged += 1
                    if staged % FLUSH_EVERY == 0:
                        await writes.flush()
                    if staged >= COMMIT_EVERY:
                        break
                await writes.flush()
            if staged == 0:
                break
            done += staged
            progress(done)
        async with db.engine.begin() as conn:
            # Statistics for the planner, as a store that grew in production would have.
            await conn.execute(text("ANALYZE"))
    finally:
        await db.dispose()


async def _pg(statements: list[str]) -> None:
    engine = create_async_engine(
        make_url(POSTGRES_URL).set(drivername="postgresql+asyncpg"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _pg_exists(name: str) -> bool:
    engine = create_async_engine(make_url(POSTGRES_URL).set(drivername="postgresql+asyncpg"))
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
    finally:
        await engine.dispose()
    return bool(found)


def ensure_cached(
    *, postgres: bool, synthea: Path, size: int, progress: Callable[[int], None]
) -> tuple[bool, float]:
    """Build the cached store of ``size`` resources unless it exists: (built now, seconds)."""
    started = time.perf_counter()
    if postgres:
        name = cache_name(size)
        if asyncio.run(_pg_exists(name)):
            return False, 0.0
        building = f"{name}_building"
        asyncio.run(_pg([f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)']))
        url = make_url(POSTGRES_URL).set(database=building).render_as_string(hide_password=False)
        asyncio.run(_load(url, synthea, size, progress))
        asyncio.run(_pg([f'ALTER DATABASE "{building}" RENAME TO "{name}"']))
        return True, time.perf_counter() - started
    path = sqlite_cache(size)
    if path.exists():
        return False, 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".staging")
    wal, shm = Path(f"{staging}-wal"), Path(f"{staging}-shm")
    for leftover in (staging, wal, shm):
        leftover.unlink(missing_ok=True)
    asyncio.run(_load(f"sqlite:///{staging}", synthea, size, progress))
    # The last connection's close (dispose, in _load) folds the WAL into the file; a WAL
    # still there would be lost by the rename below.
    if wal.exists() and wal.stat().st_size:
        raise RuntimeError(f"{wal} was not checkpointed; the cache is not complete")
    os.replace(staging, path)
    return True, time.perf_counter() - started


def install(health_url: str, size: int) -> None:
    """Put the cached store where the run's health service will find its database."""
    parsed = make_url(health_url)
    if parsed.get_backend_name() == "sqlite":
        target = Path(parsed.database or "")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sqlite_cache(size), target)
        return
    asyncio.run(_create_from_template(str(parsed.database), cache_name(size)))


async def _create_from_template(name: str, template: str) -> None:
    engine = create_async_engine(
        make_url(POSTGRES_URL).set(drivername="postgresql+asyncpg"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            version = int(await conn.scalar(text("SHOW server_version_num")) or 0)
            # PostgreSQL 15+ logs a template's every page to the WAL by default (WAL_LOG); for
            # a store of gigabytes copying the files is much faster (CREATE DATABASE, STRATEGY).
            strategy = " STRATEGY = FILE_COPY" if version >= 150000 else ""
            await conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}'))
    finally:
        await engine.dispose()
