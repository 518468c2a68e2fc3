"""Searches pinned to one patient (health/search/pinning.py): the same answers as any search,
found through the patient's own index rows."""

from __future__ import annotations

import pytest

from health.fhir.compartment import PATIENT_COMPARTMENT
from health.search.definitions import definitions
from health.search.pinning import SINGLE_PATIENT_ELEMENT, pinned_patient
from tests.health.search.conftest import Store
from tests.health.search.test_routes import observation, patient


@pytest.mark.parametrize("resource_type", sorted(SINGLE_PATIENT_ELEMENT))
def test_each_pinning_parameter_searches_the_element_that_decides_the_patient_key(
    resource_type: str,
) -> None:
    """Checked against the official R4 SearchParameter expressions and the compartment."""
    element, names = SINGLE_PATIENT_ELEMENT[resource_type]
    assert PATIENT_COMPARTMENT[resource_type][0] == element
    for name in names:
        expression = definitions().params(resource_type)[name].expression.text
        assert expression in (
            f"{resource_type}.{element}",
            f"{resource_type}.{element}.where(resolve() is Patient)",
        )


@pytest.mark.parametrize(
    ("filters", "pinned"),
    [
        ([("patient", "p1")], "p1"),
        ([("patient", "Patient/p1")], "p1"),
        ([("subject", "Patient/p1")], "p1"),
        ([("subject:Patient", "p1")], "p1"),
        ([("code", "8302-2"), ("patient", "p1")], "p1"),
        ([("subject", "p1")], None),  # may be a Group's id
        ([("subject:Group", "p1")], None),
        ([("patient", "p1,p2")], None),
        ([("patient", "http://elsewhere/fhir/Patient/p1")], None),
        ([("patient:missing", "false")], None),
        ([("patient", "p_1")], None),  # not a FHIR id: the index and compartment may differ
        ([("code", "8302-2")], None),
    ],
)
def test_what_pins_an_observation_search(filters: list[tuple[str, str]], pinned: str) -> None:
    assert pinned_patient("Observation", filters) == pinned


def test_a_type_whose_patient_element_may_repeat_is_never_pinned() -> None:
    # Appointment.participant.actor: several patients may take part.
    assert pinned_patient("Appointment", [("patient", "p1")]) is None


async def test_pinned_searches_answer_as_unpinned_ones(store: Store) -> None:
    group_p1 = observation("g1", "p1", "8302-2", "2021-01-01", 1)
    group_p1["subject"] = {"reference": "Group/p1"}  # a Group that shares the patient's id
    await store.put(
        patient("p1", "One", "A"),
        patient("p2", "Two", "B"),
        observation("o1", "p1", "8302-2", "2020-01-01", 170),
        observation("o2", "p1", "8302-2", "2022-06-01", 171),
        observation("o3", "p1", "2339-0", "2022-06-01", 90),
        observation("o4", "p2", "8302-2", "2022-06-01", 160),
        group_p1,
    )
    code = "code=http://loinc.org|8302-2"
    assert sorted(await store.ids(f"Observation?patient=p1&{code}")) == ["o1", "o2"]
    assert sorted(await store.ids(f"Observation?subject=Patient/p1&{code}")) == ["o1", "o2"]
    assert await store.ids(f"Observation?patient=p1&{code}&date=ge2021") == ["o2"]
    assert await store.ids(f"Observation?patient=p2&{code}&date=ge2021") == ["o4"]
    assert await store.ids("Observation?patient=p1&code:not=8302-2") == ["o3"]
    assert await store.ids("Observation?patient=p1&code=8302-2,2339-0&date=lt2021") == ["o1"]
    # subject=p1 may be the Group: not pinned, and the Group's Observation is found.
    assert sorted(await store.ids(f"Observation?subject=p1&{code}")) == ["g1", "o1", "o2"]
    assert await store.ids(f"Observation?patient=p3&{code}") == []
