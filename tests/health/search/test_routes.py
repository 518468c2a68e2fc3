"""Searching over HTTP: parameter types, modifiers, paging, includes, totals, errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.health.search.conftest import Store, auth


def patient(pid: str, family: str, given: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": family, "given": [given]}],
        **extra,
    }


def observation(
    oid: str, pid: str, code: str, when: str, value: float, **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": code, "display": f"code {code}"}]
        },
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": "mg/dL",
            "system": "http://unitsofmeasure.org",
            "code": "mg/dL",
        },
        **extra,
    }


async def test_string_search_starts_with_ignores_case_and_accents(store: Store) -> None:
    await store.put(
        patient("p1", "Müller", "Anna"),
        patient("p2", "Mueller", "Ben"),
        patient("p3", "Smith", "Cara"),
    )
    assert await store.ids("Patient?family=mul") == ["p1"]
    assert sorted(await store.ids("Patient?name=m")) == ["p1", "p2"]
    assert await store.ids("Patient?family:exact=Müller") == ["p1"]
    assert await store.ids("Patient?family:exact=müller") == []
    assert await store.ids("Patient?family:contains=uell") == ["p2"]
    assert sorted(await store.ids("Patient?given=anna,cara")) == ["p1", "p3"]


async def test_token_forms_and_modifiers(store: Store) -> None:
    await store.put(
        observation("o1", "p1", "2339-0", "2020-01-01", 80),
        observation("o2", "p1", "8302-2", "2020-01-02", 170),
        {
            "resourceType": "Observation",
            "id": "o3",
            "status": "preliminary",
            "code": {"coding": [{"code": "2339-0"}], "text": "Glucose free text"},
        },
    )
    assert sorted(await store.ids("Observation?code=2339-0")) == ["o1", "o3"]
    assert await store.ids("Observation?code=http://loinc.org|2339-0") == ["o1"]
    assert await store.ids("Observation?code=|2339-0") == ["o3"]
    assert sorted(await store.ids("Observation?code=http://loinc.org|")) == ["o1", "o2"]
    assert sorted(await store.ids("Observation?code:not=2339-0")) == ["o2"]
    assert await store.ids("Observation?code:text=glucose") == ["o3"]
    assert await store.ids("Observation?code:text=code 830") == ["o2"]
    assert await store.ids("Observation?status=preliminary") == ["o3"]
    assert await store.ids("Observation?subject:missing=true") == ["o3"]
    assert sorted(await store.ids("Observation?subject:missing=false")) == ["o1", "o2"]
    # Repeated parameters are ANDed, commas ORed.
    assert await store.ids("Observation?code=2339-0,8302-2&status=final&code=8302-2") == ["o2"]


async def test_dates_are_compared_as_ranges_at_their_precision(store: Store) -> None:
    await store.put(
        observation("jan", "p1", "x", "2020-01-15T10:00:00Z", 1),
        observation("feb", "p1", "x", "2020-02-01", 1),
        observation("y21", "p1", "x", "2021", 1),
    )
    assert await store.ids("Observation?date=2020-01") == ["jan"]
    assert sorted(await store.ids("Observation?date=2020")) == ["feb", "jan"]
    assert await store.ids("Observation?date=ge2020-02-01") == ["feb", "y21"]
    assert await store.ids("Observation?date=gt2020-02-01") == ["y21"]
    assert await store.ids("Observation?date=lt2020-02") == ["jan"]
    assert sorted(await store.ids("Observation?date=le2020-02")) == ["feb", "jan"]
    assert await store.ids("Observation?date=ne2020") == ["y21"]
    assert await store.ids("Observation?date=sa2020-12-31") == ["y21"]
    assert await store.ids("Observation?date=eb2020-02-01") == ["jan"]
    assert await store.ids("Observation?date=2020-01-15T10:00:00%2B00:00") == ["jan"]
    assert await store.ids("Observation?date=ge2020-01-01&date=lt2020-02-01") == ["jan"]
    assert "jan" in await store.ids("Observation?date=ap2020-01-14")
    bad = await store.search("Observation?date=ge2020-13-45")
    assert bad.status_code == 400
    assert bad.json()["resourceType"] == "OperationOutcome"
    assert "'date'" in bad.json()["issue"][0]["diagnostics"]


async def test_references_by_type_and_id_id_alone_and_absolute_url(store: Store) -> None:
    await store.put(
        patient("p1", "Alpha", "A"),
        patient("p2", "Beta", "B"),
        observation("o1", "p1", "x", "2020", 1),
        observation("o2", "p2", "x", "2020", 1),
        {
            "resourceType": "Observation",
            "id": "o3",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "https://elsewhere.example/fhir/Patient/p1"},
        },
    )
    assert await store.ids("Observation?subject=Patient/p1") == ["o1"]
    assert await store.ids("Observation?patient=p1") == ["o1"]
    assert await store.ids("Observation?subject:Patient=p2") == ["o2"]
    assert await store.ids("Observation?subject=http://testserver/fhir/Patient/p2") == ["o2"]
    assert await store.ids("Observation?subject=https://elsewhere.example/fhir/Patient/p1") == [
        "o3"
    ]
    # Chained: the subject's name.
    assert await store.ids("Observation?subject:Patient.name=beta") == ["o2"]
    assert await store.ids("Observation?patient.family=alp") == ["o1"]
    # Reverse chained: patients with an Observation of this code.
    assert sorted(await store.ids("Patient?_has:Observation:patient:code=x")) == ["p1", "p2"]
    assert await store.ids("Patient?_has:Observation:patient:_id=o2") == ["p2"]


async def test_quantity_number_and_composite(store: Store) -> None:
    await store.put(
        observation("low", "p1", "2339-0", "2020", 70),
        observation("high", "p1", "2339-0", "2020", 140.25),
        observation("other", "p1", "8302-2", "2020", 150),
    )
    assert await store.ids("Observation?value-quantity=70") == ["low"]
    assert await store.ids("Observation?value-quantity=140.25|http://unitsofmeasure.org|mg/dL") == [
        "high"
    ]
    assert sorted(await store.ids("Observation?value-quantity=gt100")) == ["high", "other"]
    assert await store.ids("Observation?value-quantity=le70||mg/dL") == ["low"]
    assert await store.ids("Observation?value-quantity=70||g") == []
    assert await store.ids("Observation?code-value-quantity=http://loinc.org|2339-0$gt100") == [
        "high"
    ]
    assert await store.ids("Observation?code-value-quantity=8302-2$lt100") == []


async def test_common_parameters_id_last_updated_tag_profile(store: Store) -> None:
    await store.put(
        patient(
            "old",
            "A",
            "A",
            meta={
                "lastUpdated": "2019-05-01T00:00:00+00:00",
                "tag": [{"system": "urn:t", "code": "demo"}],
                "profile": ["http://example.org/StructureDefinition/p"],
            },
        ),
        patient("new", "B", "B", meta={"lastUpdated": "2024-05-01T00:00:00+00:00"}),
    )
    assert await store.ids("Patient?_id=old") == ["old"]
    assert sorted(await store.ids("Patient?_id=old,new")) == ["new", "old"]
    assert await store.ids("Patient?_lastUpdated=lt2020") == ["old"]
    assert await store.ids("Patient?_lastUpdated=ge2024-05") == ["new"]
    assert await store.ids("Patient?_tag=urn:t|demo") == ["old"]
    assert await store.ids("Patient?_profile=http://example.org/StructureDefinition/p") == ["old"]


async def test_deleted_resources_are_not_found(store: Store) -> None:
    await store.put(patient("p1", "Gone", "G"), patient("p2", "Gone", "H"))
    await store.put(patient("p1", "Gone", "G"), deleted=["Patient/p1"])
    assert await store.ids("Patient?family=gone") == ["p2"]


async def test_sort_on_several_keys_and_stable_paging_with_next_links(store: Store) -> None:
    await store.put(
        *[observation(f"o{i:02}", "p1", "x", f"2020-01-{1 + i % 5:02}", i) for i in range(12)]
    )
    first = await store.search(
        "Observation?code=x&_sort=-date,_id&_count=5",
        headers={"X-Forwarded-Host": "fhir.example", "X-Forwarded-Proto": "https"},
    )
    bundle = first.json()
    assert bundle["type"] == "searchset"
    assert "total" not in bundle  # not asked for and not known without counting
    got = [e["resource"]["id"] for e in bundle["entry"]]
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert links["self"].startswith("https://fhir.example/fhir/Observation?")
    assert links["next"].startswith("https://fhir.example/fhir/Observation?")
    seen = list(got)
    url = links["next"]
    while url:
        query = urlsplit(url).query
        page = (await store.search(f"Observation?{query}")).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        url = next((x["url"] for x in page["link"] if x["relation"] == "next"), "")
        assert any(x["relation"] == "previous" for x in page["link"])
    assert len(seen) == 12
    assert len(set(seen)) == 12
    dates = [(4 - (int(i[1:]) % 5), i) for i in seen]
    assert dates == sorted(dates)  # date descending, then id ascending
    assert page["total"] == 12  # the last page knows the total


async def test_totals_count_zero_and_summary_count(store: Store) -> None:
    await store.put(*[patient(f"p{i}", "Same", "S") for i in range(7)])
    zero = (await store.search("Patient?family=same&_count=0")).json()
    assert zero["total"] == 7
    assert "entry" not in zero
    assert (await store.search("Patient?family=same&_summary=count")).json()["total"] == 7
    accurate = (await store.search("Patient?family=same&_count=2&_total=accurate")).json()
    assert accurate["total"] == 7
    assert len(accurate["entry"]) == 2
    assert (await store.search("Patient?family=same&_count=2&_total=estimate")).json()["total"] == 7
    assert "total" not in (await store.search("Patient?family=same&_count=2&_total=none")).json()
    huge = await store.search("Patient?_count=1000000")
    assert huge.status_code == 200
    self_link = next(x["url"] for x in huge.json()["link"] if x["relation"] == "self")
    assert parse_qs(urlsplit(self_link).query)["_count"] == ["1000"]


async def test_summary_and_elements_return_marked_subsets(store: Store) -> None:
    await store.put(
        patient(
            "p1",
            "Doe",
            "Jane",
            text={"status": "generated", "div": "<div>Jane</div>"},
            maritalStatus={"text": "married"},
            gender="female",
        )
    )
    summary = (await store.search("Patient?_summary=true")).json()["entry"][0]["resource"]
    assert summary["gender"] == "female"
    assert "maritalStatus" not in summary
    assert "text" not in summary
    assert any(t["code"] == "SUBSETTED" for t in summary["meta"]["tag"])
    elements = (await store.search("Patient?_elements=gender")).json()["entry"][0]["resource"]
    assert set(elements) == {"resourceType", "id", "meta", "gender"}
    data = (await store.search("Patient?_summary=data")).json()["entry"][0]["resource"]
    assert "text" not in data
    assert data["maritalStatus"] == {"text": "married"}


async def test_include_revinclude_and_iterate(store: Store) -> None:
    await store.put(
        {"resourceType": "Organization", "id": "org", "name": "General"},
        patient("p1", "Doe", "J", managingOrganization={"reference": "Organization/org"}),
        observation("o1", "p1", "x", "2020", 1),
        observation("o2", "p1", "x", "2020", 2),
    )
    included = (await store.search("Observation?_include=Observation:subject")).json()
    modes = {(e["resource"]["id"], e["search"]["mode"]) for e in included["entry"]}
    assert modes == {("o1", "match"), ("o2", "match"), ("p1", "include")}
    iterate = (
        await store.search(
            "Observation?_id=o1&_include=Observation:patient&_include:iterate=Patient:organization"
        )
    ).json()
    assert {e["resource"]["id"] for e in iterate["entry"]} == {"o1", "p1", "org"}
    reverse = (await store.search("Patient?_revinclude=Observation:subject")).json()
    assert {(e["resource"]["id"], e["search"]["mode"]) for e in reverse["entry"]} == {
        ("p1", "match"),
        ("o1", "include"),
        ("o2", "include"),
    }
    full = (await store.search("Patient?_revinclude=Observation:subject")).json()
    assert full["entry"][0]["fullUrl"] == "http://testserver/fhir/Patient/p1"


async def test_include_loops_are_bounded(store: Store) -> None:
    # Two Patients linking each other: :iterate must stop, and each appears once.
    await store.put(
        patient("a", "A", "A", link=[{"other": {"reference": "Patient/b"}, "type": "seealso"}]),
        patient("b", "B", "B", link=[{"other": {"reference": "Patient/a"}, "type": "seealso"}]),
    )
    found = (await store.search("Patient?_id=a&_include:iterate=Patient:link")).json()
    assert sorted(e["resource"]["id"] for e in found["entry"]) == ["a", "b"]


async def test_unknown_parameters_are_refused_or_ignored_when_lenient(store: Store) -> None:
    await store.put(patient("p1", "Doe", "J"))
    strict = await store.search("Patient?colour=blue")
    assert strict.status_code == 400
    assert strict.headers["content-type"].startswith("application/fhir+json")
    assert "colour" in strict.json()["issue"][0]["diagnostics"]
    lenient = await store.search("Patient?colour=blue", headers={"Prefer": "handling=lenient"})
    assert lenient.status_code == 200
    entries = lenient.json()["entry"]
    assert [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"] == ["p1"]
    outcome = next(e for e in entries if e["search"]["mode"] == "outcome")["resource"]
    assert "colour" in outcome["issue"][0]["diagnostics"]
    for query, named in [
        ("Patient?gender:below=x", "gender"),
        ("Patient?birthdate=yesterday", "birthdate"),
        ("Observation?value-quantity=abc", "value-quantity"),
        ("Patient?_count=-1", "_count"),
        ("Patient?_sort=colour", "_sort"),
        ("Patient?_include=Patient:name", "_include"),
        ("Observation?subject.subject.subject.subject.name=x", "subject"),
    ]:
        response = await store.search(query)
        assert response.status_code == 400, query
        assert named in response.json()["issue"][0]["diagnostics"], query


async def test_search_needs_a_token_with_the_search_scope(store: Store) -> None:
    assert (await store.http.get("/fhir/Patient")).status_code == 401
    refused = await store.search("Patient", scope="system/Observation.rs")
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert (await store.search("Patient", scope="patient/Patient.s")).status_code == 200
    assert (await store.search("Nonsense")).status_code == 404


async def test_post_search_and_system_level_type_search(store: Store) -> None:
    await store.put(patient("p1", "Doe", "J"), observation("o1", "p1", "x", "2020", 1))
    posted = await store.http.post(
        "/fhir/Patient/_search",
        content="family=doe",
        headers={**auth(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert [e["resource"]["id"] for e in posted.json()["entry"]] == ["p1"]
    wrong = await store.http.post("/fhir/Patient/_search", json={"family": "doe"}, headers=auth())
    assert wrong.status_code == 415
    system = (await store.search("?_type=Patient,Observation&_sort=_id")).json()
    assert [e["fullUrl"].rsplit("/", 2)[-2:] for e in system["entry"]] == [
        ["Observation", "o1"],
        ["Patient", "p1"],
    ]
    links = {x["relation"]: x["url"] for x in system["link"]}
    assert parse_qs(urlsplit(links["self"]).query)["_type"] == ["Patient,Observation"]
    assert (await store.search("?_type=Patient&family=doe")).json()["total"] == 1
    assert (await store.search("?family=doe")).status_code == 400


async def test_escaped_commas_and_bars_are_part_of_the_value(store: Store) -> None:
    await store.put(
        patient("p1", "Smith,Jones", "A", identifier=[{"system": "urn:x", "value": "a|b"}]),
        patient("p2", "Smith", "B"),
    )
    assert await store.ids(r"Patient?family=Smith\,Jones") == ["p1"]
    assert sorted(await store.ids("Patient?family=Smith,Jones")) == ["p1", "p2"]
    assert await store.ids(r"Patient?identifier=urn:x|a\|b") == ["p1"]


async def test_format_other_than_json_is_refused(store: Store) -> None:
    assert (await store.search("Patient?_format=xml")).status_code == 406
    assert (await store.search("Patient?_format=json")).status_code == 200


async def test_includes_need_read_permission_on_their_type(store: Store) -> None:
    await store.put(patient("p1", "Doe", "J"), observation("o1", "p1", "x", "2020", 1))
    response = await store.search(
        "Observation?_include=Observation:subject", scope="system/Observation.rs"
    )
    entries = response.json()["entry"]
    assert [e["resource"]["id"] for e in entries if e["search"]["mode"] != "outcome"] == ["o1"]
    outcome = next(e for e in entries if e["search"]["mode"] == "outcome")["resource"]
    assert "Patient" in outcome["issue"][0]["diagnostics"]
    allowed = await store.search(
        "Observation?_include=Observation:subject", scope="system/Observation.rs system/Patient.r"
    )
    assert {e["resource"]["id"] for e in allowed.json()["entry"]} == {"o1", "p1"}


async def test_pages_neither_repeat_nor_skip_when_resources_arrive_between_them(
    store: Store,
) -> None:
    await store.put(*[patient(f"p{i}", "Page", "P", birthDate=f"19{50 + i}") for i in range(6)])
    first = (await store.search("Patient?family=page&_sort=birthdate&_count=3")).json()
    assert [e["resource"]["id"] for e in first["entry"]] == ["p0", "p1", "p2"]
    # A new patient sorting before the cursor arrives: an offset would show p2 again.
    await store.put(patient("early", "Page", "E", birthDate="1900"))
    url = next(x["url"] for x in first["link"] if x["relation"] == "next")
    second = (await store.search(f"Patient?{urlsplit(url).query}")).json()
    assert [e["resource"]["id"] for e in second["entry"]] == ["p3", "p4", "p5"]
    assert "next" not in {x["relation"] for x in second["link"]}
    forged = await store.search("Patient?family=page&_cursor=bm90IGEgY3Vyc29y")
    assert forged.status_code == 400
    assert "_cursor" in forged.json()["issue"][0]["diagnostics"]


async def test_chains_and_has_need_search_permission_on_the_other_type(store: Store) -> None:
    await store.put(patient("p1", "Doe", "J"), observation("o1", "p1", "x", "2020", 1))
    chained = await store.search(
        "Observation?subject:Patient.name=doe", scope="system/Observation.rs"
    )
    assert chained.status_code == 403
    assert "Patient" in chained.json()["issue"][0]["diagnostics"]
    reverse = await store.search(
        "Patient?_has:Observation:patient:code=x", scope="system/Patient.rs"
    )
    assert reverse.status_code == 403
    both = "system/Observation.rs system/Patient.rs"
    assert (
        await store.search("Observation?subject:Patient.name=doe", scope=both)
    ).status_code == 200


async def test_a_cursor_from_another_sort_is_refused(store: Store) -> None:
    await store.put(*[patient(f"p{i}", "Page", "P", birthDate=f"19{50 + i}") for i in range(3)])
    first = (await store.search("Patient?_sort=birthdate&_count=1")).json()
    url = next(x["url"] for x in first["link"] if x["relation"] == "next")
    cursor = parse_qs(urlsplit(url).query)["_cursor"][0]
    reused = await store.search(f"Patient?_sort=family&_count=1&_cursor={cursor}")
    assert reused.status_code == 400
    assert "_cursor" in reused.json()["issue"][0]["diagnostics"]
