"""find_ids, as conditional create and update use it, and the caller's restriction."""

from __future__ import annotations

import pytest

from health.search.query import find_ids, search
from services.kit.errors import Problem
from tests.health.search.conftest import Store
from tests.health.search.test_routes import observation, patient


async def test_find_ids_answers_conditional_interactions(store: Store) -> None:
    await store.put(
        patient("p1", "Doe", "J", identifier=[{"system": "urn:mrn", "value": "42"}]),
        patient("p2", "Doe", "K", identifier=[{"system": "urn:mrn", "value": "43"}]),
    )
    async with store.app.state.runtime.db.unit_of_work() as session:
        assert await find_ids(session, "Patient", [("identifier", "urn:mrn|42")], limit=2) == ["p1"]
        assert await find_ids(session, "Patient", [("family", "doe")], limit=2) == ["p1", "p2"]
        assert await find_ids(session, "Patient", [("family", "doe")], limit=1) == ["p1"]
        assert await find_ids(session, "Patient", [("identifier", "urn:mrn|44")], limit=2) == []
        with pytest.raises(Problem) as unknown:
            await find_ids(session, "Patient", [("shoe-size", "42")], limit=2)
        assert unknown.value.status == 400
        assert "shoe-size" in unknown.value.detail
        with pytest.raises(Problem) as malformed:
            await find_ids(session, "Patient", [("birthdate", "someday")], limit=2)
        assert "birthdate" in malformed.value.detail


async def test_a_restriction_applies_to_matches_chains_and_includes(store: Store) -> None:
    await store.put(
        patient("mine", "Doe", "J"),
        patient("theirs", "Doe", "K"),
        observation("o-mine", "mine", "x", "2020", 1),
        observation("o-theirs", "theirs", "x", "2020", 1),
    )
    only_mine = lambda r: r.c.patient_key == "mine"  # noqa: E731
    async with store.app.state.runtime.db.unit_of_work() as session:
        result = await search(session, ["Observation"], [("code", "x")], restrict=only_mine)
        assert [m.id for m in result.matches] == ["o-mine"]
        chained = await search(
            session, ["Observation"], [("subject:Patient.given", "k")], restrict=only_mine
        )
        assert chained.matches == []
        included = await search(
            session,
            ["Patient"],
            [("_revinclude", "Observation:subject")],
            restrict=only_mine,
        )
        assert [m.id for m in included.matches] == ["mine"]
        assert [i.id for i in included.included] == ["o-mine"]
        assert await find_ids(
            session, "Observation", [("code", "x")], limit=5, restrict=only_mine
        ) == ["o-mine"]


def test_each_condition_of_a_search_has_its_own_alias_and_searches_share_them() -> None:
    from health.search.clauses import Aliases
    from health.search.models import token_index

    one_search, next_search = Aliases(), Aliases()
    first, second = one_search.of(token_index), one_search.of(token_index)
    assert first is not second  # two conditions on the token table: two joins
    assert next_search.of(token_index) is first
