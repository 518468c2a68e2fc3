"""The consent index by actor (health/consent_index.py): which Consents a hospital's search
reads, kept in step with the store, and built for the Consents stored before it existed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from alembic import command
from fastapi import FastAPI
from sqlalchemy import select

import health
from health.consent_index import CLIENT_SYSTEM, EVERYONE, actors_of, consent_actor
from services.kit.database import Database
from services.kit.migrations import alembic_config, upgrade
from tests.health.test_who_may_read import _record, consent, person

MIGRATIONS = Path(health.__file__).parent / "migrations"


def _actor(client_id: str) -> dict[str, Any]:
    return {"reference": {"identifier": {"system": CLIENT_SYSTEM, "value": client_id}}}


def test_a_consent_is_indexed_under_every_hospital_its_provisions_name() -> None:
    nested = {
        "provision": {
            "type": "permit",
            "actor": [_actor("hosp_b")],
            "provision": [{"type": "deny", "actor": [_actor("hosp_c"), _actor("hosp_b")]}],
        }
    }
    assert actors_of(nested) == {"hosp_b", "hosp_c"}


def test_a_provision_naming_no_one_indexes_the_consent_for_everyone() -> None:
    assert actors_of({"provision": {"type": "permit"}}) == {EVERYONE}
    assert actors_of({"provision": {"type": "deny", "provision": [{"type": "permit"}]}}) == {
        EVERYONE
    }
    # Actors named otherwise than by client id (an Organization) are not index keys.
    organization = {"reference": {"reference": "Organization/o1"}}
    assert actors_of({"provision": {"type": "permit", "actor": [organization]}}) == set()
    assert actors_of({}) == set()  # no provision: it permits no one (health.consent)


def _db(app: FastAPI) -> Database:
    db: Database = app.state.runtime.db
    return db


async def _rows(app: FastAPI) -> set[tuple[str, str]]:
    async with _db(app).engine.connect() as connection:
        result = await connection.execute(select(consent_actor.c.actor, consent_actor.c.consent_id))
        return {(actor, consent_id) for actor, consent_id in result}


async def test_the_index_follows_writes_and_is_rebuilt_by_its_migration(
    fhir: httpx.AsyncClient, fhir_app: FastAPI
) -> None:
    urls = await _record(fhir)
    app = person(purpose="mobile_app", scope="patient/*.cruds patient/Consent.cruds")
    given = await fhir.post("/fhir/Consent", json=consent(urls["patient"], "hosp_b"), headers=app)
    consent_id = given.json()["id"]
    assert await _rows(fhir_app) == {("hosp_b", consent_id)}

    changed = given.json() | {"provision": {"type": "permit"}}
    assert (await fhir.put(f"/fhir/Consent/{consent_id}", json=changed, headers=app)).is_success
    assert await _rows(fhir_app) == {(EVERYONE, consent_id)}

    # A store migrated before the index existed: down to 0006 and up again indexes it anew.
    db = _db(fhir_app)
    config = alembic_config(
        service="health",
        migrations_dir=MIGRATIONS,
        database_url=db.url.render_as_string(hide_password=False),
        connect_args=db.connect_args(),
    )
    await asyncio.to_thread(command.downgrade, config, "0006")
    await asyncio.to_thread(upgrade, config)
    assert await _rows(fhir_app) == {(EVERYONE, consent_id)}

    assert (await fhir.delete(f"/fhir/Consent/{consent_id}", headers=app)).is_success
    assert await _rows(fhir_app) == set()
