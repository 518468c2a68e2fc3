"""The index follows every write: an update replaces a resource's rows, a delete drops them."""

from __future__ import annotations

from sqlalchemy import func, select

from health.search.index import reindex
from health.search.models import TABLES
from tests.health.search.conftest import Store
from tests.health.search.test_routes import observation, patient


async def _rows(store: Store, resource_id: str) -> int:
    total = 0
    async with store.app.state.runtime.db.unit_of_work() as session:
        connection = await session.connection()
        for table in TABLES.values():
            query = select(func.count()).where(table.c.resource_id == resource_id)
            total += (await connection.execute(query)).scalar_one()
    return total


async def test_an_update_replaces_the_old_values(store: Store) -> None:
    await store.put(patient("p1", "Before", "Anna"))
    assert await store.ids("Patient?family=before") == ["p1"]
    await store.put(patient("p1", "After", "Anna"))
    assert await store.ids("Patient?family=before") == []
    assert await store.ids("Patient?family=after") == ["p1"]


async def test_a_delete_drops_every_row(store: Store) -> None:
    await store.put(observation("o1", "p1", "x", "2020", 1))
    assert await _rows(store, "o1") > 5
    async with store.app.state.runtime.db.unit_of_work() as session:
        await reindex(
            session, resource_type="Observation", resource_id="o1", resource=None, patient_key="p1"
        )
    assert await _rows(store, "o1") == 0


async def test_a_failed_write_leaves_no_index_rows(store: Store) -> None:
    class Boom(Exception):
        pass

    try:
        async with store.app.state.runtime.db.unit_of_work() as session:
            await reindex(
                session,
                resource_type="Patient",
                resource_id="ghost",
                resource=patient("ghost", "Ghost", "G"),
                patient_key="ghost",
            )
            raise Boom
    except Boom:
        pass
    assert await _rows(store, "ghost") == 0
