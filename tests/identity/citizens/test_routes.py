"""The citizen registry over HTTP: register, read, look up by number; duplicates and bad input."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pytest

from identity.app import create_app
from identity.field_crypto import BlindIndex, KeyConfigurationError
from identity.national_id import check_character, make_national_id
from identity.settings import IdentitySettings
from tests.harness import serve_asgi
from tests.identity.citizens.conftest import citizens_client, count_rows, raw_rows

NUMBER = "11010519491231002X"  # GB 11643-1999's worked example: female, 1949-12-31
PSEUDONYM = re.compile(r"cz_[a-z2-7]{26}")
PROBLEM = "application/problem+json"


def registration(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "张三", "national_id": NUMBER, "phone": "13812345678"}
    body.update(fields)
    return body


def with_check(first17: str) -> str:
    return first17 + check_character(first17)


async def test_registering_a_citizen_returns_its_pseudonymous_id_and_masked_number(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/identity/citizens",
        json=registration(birth_date="1949-12-31", sex="female", phone="+86 138-1234-5678"),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert PSEUDONYM.fullmatch(body["id"])
    assert body == {
        "id": body["id"],
        "name": "张三",
        "birth_date": "1949-12-31",
        "sex": "female",
        "national_id_masked": "**************002X",
        "phone_masked": "138****5678",
        "created_at": body["created_at"],
    }
    assert body["created_at"].endswith(("Z", "+00:00"))
    assert response.headers["location"] == f"/identity/citizens/{body['id']}"
    assert response.headers["cache-control"] == "no-store"

    read = await client.get(response.headers["location"])
    assert read.status_code == 200
    assert read.json() == body
    assert read.headers["cache-control"] == "no-store"


async def test_birth_date_and_sex_come_from_the_number_when_not_stated(
    client: httpx.AsyncClient,
) -> None:
    number = make_national_id(region="440305", birth=date(2001, 9, 9), sequence=37)
    response = await client.post("/identity/citizens", json={"name": "李四", "national_id": number})
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["birth_date"], body["sex"], body["phone_masked"]) == ("2001-09-09", "male", None)


async def test_pseudonyms_are_distinct_and_unrelated_to_the_number(
    client: httpx.AsyncClient,
) -> None:
    ids = []
    for sequence in range(1, 6):
        number = make_national_id(sequence=sequence)
        response = await client.post("/identity/citizens", json=registration(national_id=number))
        assert response.status_code == 201
        ids.append(response.json()["id"])
        assert number[:6] not in response.json()["id"]
    assert len(set(ids)) == 5


async def test_registering_the_same_number_twice_is_a_409_problem(
    client: httpx.AsyncClient, settings: IdentitySettings
) -> None:
    first = await client.post("/identity/citizens", json=registration())
    assert first.status_code == 201
    # Another name, a lowercase x: still the same person's number.
    again = await client.post(
        "/identity/citizens", json=registration(name="王五", national_id=NUMBER.lower())
    )
    assert again.status_code == 409
    assert again.headers["content-type"] == PROBLEM
    assert again.json()["detail"] == (
        "a citizen with this national ID number is already registered"
    )
    assert NUMBER not in again.text
    assert await _rows_for(settings, NUMBER) == 1


async def test_two_concurrent_registrations_of_one_number_make_one_citizen(
    client: httpx.AsyncClient, settings: IdentitySettings
) -> None:
    number = make_national_id(region="320102", birth=date(1975, 3, 3), sequence=11)
    responses = await asyncio.gather(
        client.post("/identity/citizens", json=registration(name="甲", national_id=number)),
        client.post("/identity/citizens", json=registration(name="乙", national_id=number)),
    )
    assert sorted(r.status_code for r in responses) == [201, 409]
    assert await _rows_for(settings, number) == 1
    [created] = [r for r in responses if r.status_code == 201]
    lookup = await client.post("/identity/citizens/lookup", json={"national_id": number})
    assert lookup.json()["id"] == created.json()["id"]


def _invalid_registrations() -> list[tuple[dict[str, Any], str]]:
    return [
        (registration(national_id=NUMBER[:17] + "1"), "wrong check character"),
        (registration(national_id=with_check("11010519990230001")), "does not exist"),
        (registration(national_id=with_check("11010520990101001")), "in the future"),
        (registration(national_id=with_check("11010518991231001")), "before 1900"),
        (registration(national_id=with_check("99010519491231002")), "province"),
        (registration(national_id=NUMBER[:17]), "18 characters, got 17"),
        (registration(national_id="1101051949I231002X"), "17 digits followed by a digit or X"),
        (registration(national_id=NUMBER, birth_date="1949-12-30"), "birth_date does not match"),
        (registration(national_id=NUMBER, sex="male"), "sex does not match"),
        (registration(phone="12812345678"), "mainland China mobile number"),
        (registration(phone="1381234567"), "mainland China mobile number"),
        (registration(phone="+1 415 555 0100"), "mainland China mobile number"),
        (registration(name="   "), "name"),
        (registration(name="张\x00三"), "control characters"),
        (registration(name="x" * 101), "name"),
        (registration(sex="unknown"), "sex"),
        (registration(birth_date="1949-13-01"), "birth_date"),
        (registration(national_id=18000000000000000000), "national_id"),
        (registration(id_number=NUMBER), "Extra inputs are not permitted"),
        ({"name": "张三"}, "national_id: Field required"),
    ]


async def test_invalid_registrations_are_422_problems_saying_why_and_store_nothing(
    client: httpx.AsyncClient, settings: IdentitySettings
) -> None:
    before = await count_rows(settings)
    for body, reason in _invalid_registrations():
        response = await client.post("/identity/citizens", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert reason in response.json()["detail"], (body, response.json())
        number = str(body.get("national_id", ""))
        if len(number) >= 17:
            assert number[:17] not in response.text, body
    assert await count_rows(settings) == before


async def test_a_body_that_is_not_json_is_a_400_problem(
    client: httpx.AsyncClient, settings: IdentitySettings
) -> None:
    before = await count_rows(settings)
    response = await client.post(
        "/identity/citizens",
        content=b'{"national_id": "' + NUMBER.encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert NUMBER not in response.text
    assert await count_rows(settings) == before


async def test_lookup_by_number_finds_the_citizen(client: httpx.AsyncClient) -> None:
    created = (await client.post("/identity/citizens", json=registration())).json()
    for spelled in (NUMBER, NUMBER.lower(), f"  {NUMBER} "):
        found = await client.post("/identity/citizens/lookup", json={"national_id": spelled})
        assert found.status_code == 200
        assert found.json() == created
        assert found.headers["cache-control"] == "no-store"


async def test_lookup_of_an_unregistered_number_is_a_404_problem(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/identity/citizens/lookup", json={"national_id": make_national_id(sequence=998)}
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["detail"] == "no citizen is registered with this national ID number"


async def test_lookup_of_an_invalid_number_is_a_422_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/identity/citizens/lookup", json={"national_id": NUMBER[:17] + "0"}
    )
    assert response.status_code == 422
    assert "wrong check character" in response.json()["detail"]
    assert NUMBER[:17] not in response.text


async def test_the_number_never_travels_in_a_url(client: httpx.AsyncClient) -> None:
    # No route takes the number in its path or query.
    assert (await client.get(f"/identity/citizens/lookup?national_id={NUMBER}")).status_code in {
        404,
        405,
    }
    response = await client.get(f"/identity/citizens/{NUMBER}")
    assert response.status_code == 404
    assert response.json()["detail"] == "no citizen has this id"


async def test_an_unknown_citizen_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/identity/citizens/cz_aaaaaaaaaaaaaaaaaaaaaaaaaa")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["detail"] == "no citizen has this id"


class _Records(logging.Handler):
    """Every record, raw: before the JSON formatter's redaction (the second line of defence)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.text: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.text.append(record.getMessage())
        self.text.append(repr(record.__dict__))
        if record.exc_info:
            self.text.append(logging.Formatter().formatException(record.exc_info))


@pytest.fixture
def records() -> Iterator[_Records]:
    handler = _Records()
    # The worst case an operator can switch on: every SQL statement with its parameters.
    root, engine_log = logging.getLogger(), logging.getLogger("sqlalchemy.engine")
    saved = root.handlers[:], root.level, engine_log.level
    engine_log.setLevel(logging.INFO)
    yield handler
    # The app set the root logger to DEBUG: give the next test in this process a quiet one.
    root.handlers[:], _, _ = saved
    root.setLevel(saved[1])
    engine_log.setLevel(saved[2])


async def test_the_number_is_never_in_a_response_the_database_or_a_log(
    make_identity_settings: Any, records: _Records
) -> None:
    settings: IdentitySettings = make_identity_settings(log_level="DEBUG")
    number = make_national_id(region="510104", birth=date(1988, 8, 8), sequence=88)
    async with citizens_client(settings) as client:
        # Start-up configured logging; from here on every record also comes to us, unredacted.
        logging.getLogger().addHandler(records)
        responses = [
            await client.post("/identity/citizens", json=registration(national_id=number)),
            await client.post("/identity/citizens", json=registration(national_id=number)),
            await client.post("/identity/citizens/lookup", json={"national_id": number}),
            await client.post(
                "/identity/citizens", json=registration(national_id=number, sex="male")
            ),
            await client.post("/identity/citizens/lookup", json={"national_id": number[:17] + "0"}),
        ]
        responses.append(await client.get(responses[0].headers["location"]))
    assert [r.status_code for r in responses] == [201, 409, 200, 422, 422, 200]
    secret_forms = {number, number[:17], number.lower()}

    for response in responses:
        for form in secret_forms:
            assert form not in response.text
            assert form not in str(response.headers)

    rows = [r for r in await raw_rows(settings) if r["pseudonym"] == responses[0].json()["id"]]
    assert len(rows) == 1
    for value in rows[0].values():
        raw = value if isinstance(value, bytes) else str(value).encode()
        for form in secret_forms:
            assert form.encode() not in raw
    assert rows[0]["national_id_index"] == BlindIndex.from_settings(settings).digest(
        number, purpose="citizen.national_id"
    )

    assert any("citizen registered" in line for line in records.text)
    # The database layer logged its statements and their parameters too.
    assert any("INSERT INTO citizens" in line for line in records.text)
    logged = "\n".join(records.text)
    for form in secret_forms:
        assert form not in logged


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_sm4_gcm_can_be_chosen_for_the_number_at_rest(
    make_identity_settings: Any,
) -> None:
    settings: IdentitySettings = make_identity_settings(field_cipher="sm4-gcm")
    async with citizens_client(settings) as client:
        created = await client.post("/identity/citizens", json=registration())
        assert created.status_code == 201
        found = await client.post("/identity/citizens/lookup", json={"national_id": NUMBER})
        assert found.json()["national_id_masked"] == "**************002X"
    [row] = await raw_rows(settings)
    assert bytes(row["national_id_ciphertext"])[:2] == b"\x01\x02"  # version 1, SM4-GCM


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_a_malformed_key_stops_the_service_at_start_up(make_identity_settings: Any) -> None:
    settings: IdentitySettings = make_identity_settings(data_key="too-short-to-be-a-key")
    app = create_app(settings)
    with pytest.raises(KeyConfigurationError, match="ONECARD_DATA_KEY"):
        async with serve_asgi(app):
            pass


async def _rows_for(settings: IdentitySettings, number: str) -> int:
    index = BlindIndex.from_settings(settings).digest(number, purpose="citizen.national_id")
    return sum(1 for row in await raw_rows(settings) if row["national_id_index"] == index)


async def test_the_registry_needs_a_registration_desk_token(
    client: httpx.AsyncClient,
) -> None:
    anonymous = await client.post(
        "/identity/citizens", json=registration(), headers={"Authorization": ""}
    )
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
