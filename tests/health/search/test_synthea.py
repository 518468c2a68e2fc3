"""A real Synthea patient record, indexed as the store writes it, answers clinical searches."""

from __future__ import annotations

from datetime import datetime

from tests.health.search.conftest import Store, synthea_resources

PATIENT = "138eac2a-ee98-4fea-8b9c-d6428d4e98f2"  # Andrea Dach


async def test_a_synthea_patient_is_found_by_code_date_and_chains(store: Store) -> None:
    resources = synthea_resources("Andrea_Dach")
    await store.put(*resources)
    heights = [
        r
        for r in resources
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "8302-2"
    ]
    since = "1975-01-01"
    expected = sorted(
        r["id"]
        for r in heights
        if datetime.fromisoformat(r["effectiveDateTime"])
        >= datetime.fromisoformat(since + "T00:00:00+00:00")
    )
    assert expected  # the record has heights on both sides of the date
    found = await store.ids(
        f"Observation?patient={PATIENT}&code=http://loinc.org|8302-2&date=ge{since}&_count=100"
    )
    assert sorted(found) == expected

    assert await store.ids("Patient?family=dach&given=andrea") == [PATIENT]
    assert await store.ids("Patient?birthdate=1910-09-19") == [PATIENT]
    assert await store.ids("Patient?gender=male&deceased=true") == [PATIENT]
    everything_of_patient = await store.search("Observation?subject:Patient.family=Dach&_count=0")
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    assert everything_of_patient.json()["total"] == len(observations)

    # Encounters of the patient at their provider, with the organizations included.
    encounters = [r for r in resources if r["resourceType"] == "Encounter"]
    bundle = (
        await store.search(
            f"Encounter?patient=Patient/{PATIENT}&_include=Encounter:service-provider&_count=500"
        )
    ).json()
    matches = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
    included = {
        e["resource"]["resourceType"] for e in bundle["entry"] if e["search"]["mode"] == "include"
    }
    assert len(matches) == len(encounters) == bundle["total"]
    assert included == {"Organization"}

    # Patients with a diabetes-panel glucose reading above 100 mg/dL.
    glucose_high = [
        r["id"]
        for r in observations
        if r["code"]["coding"][0]["code"] == "2339-0" and r["valueQuantity"]["value"] > 100
    ]
    has = await store.ids(
        "Patient?_has:Observation:patient:code-value-quantity=http://loinc.org|2339-0$gt100"
    )
    assert has == ([PATIENT] if glucose_high else [])
    claims = [r for r in resources if r["resourceType"] == "Claim"]
    total_claims = (await store.search(f"Claim?patient={PATIENT}&_summary=count")).json()["total"]
    assert total_claims == len(claims)
