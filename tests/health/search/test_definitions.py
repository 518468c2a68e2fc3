"""The official R4 definitions are all loaded and compiled, and listed for the
CapabilityStatement."""

from __future__ import annotations

from health.search.definitions import definitions, supported_search_params
from health.search.extract_definitions import INDEXED_TYPES


def test_every_definition_of_every_indexed_type_compiles() -> None:
    defs = definitions()
    assert set(defs.by_type) == set(INDEXED_TYPES)
    assert len(defs.resource_types) > 130  # every R4 resource type with search parameters
    assert {"Patient", "Observation", "Binary", "Bundle"} <= defs.resource_types
    observation = defs.params("Observation")
    assert observation["code"].type == "token"
    assert observation["patient"].target == ("Group", "Patient")
    assert [c.type for c in observation["code-value-quantity"].components] == [
        "token",
        "quantity",
    ]
    # Common parameters apply to every type, indexed or not.
    assert {"_id", "_lastUpdated", "_tag", "_profile", "_security"} <= set(defs.params("Basic"))


def test_the_capability_statement_lists_what_search_answers() -> None:
    listed = supported_search_params()
    patient = {p["name"]: p for p in listed["Patient"]}
    assert patient["birthdate"] == {
        "name": "birthdate",
        "type": "date",
        "definition": "http://hl7.org/fhir/SearchParameter/individual-birthdate",
    }
    assert "near" not in {p["name"] for p in listed["Location"]}  # special: not supported
    assert {p["name"] for p in listed["*"]} >= {"_id", "_lastUpdated", "_tag"}
