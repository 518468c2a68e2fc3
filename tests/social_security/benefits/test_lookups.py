"""The citizen's lookups in the mobile app (issue 6 item 5): each shows the citizen their own
rows only, audited, and the card lookup survives the identity service being down."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlmodel import delete
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.responses import JSONResponse

from services.kit.tokens import KeySet, StaticKeySource
from social_security.app import create_app
from social_security.benefits.pension import MonthBase, employee_estimate, resident_estimate
from social_security.benefits.routes import router
from social_security.claims.rules import default_rule_set
from social_security.models import (
    AccountEntryRow,
    AccountRow,
    BenefitPaymentRow,
    CatalogueItemRow,
    ClaimRow,
    ContributionRow,
    EnrolmentRow,
    RuleSetRow,
    YearTotalRow,
)
from social_security.schemes import Scheme
from social_security.settings import SocialSecuritySettings
from tests.harness import free_port, serve_asgi, server_thread
from tests.social_security.conftest import ISSUER, SS_KEY, citizen_auth, counter_auth, token

ALICE, BOB = "cz_alice", "cz_bob"


def _with_lookups(app: FastAPI) -> FastAPI:
    """The service app with the lookups mounted (once app.py includes them, as it is)."""
    if not any(getattr(r, "path", "") == "/social-security/benefits" for r in app.routes):
        app.include_router(router)
    return app


def _build(make_settings: Callable[..., Any], **overrides: Any) -> FastAPI:
    app = create_app(make_settings(SocialSecuritySettings, public_url=ISSUER, **overrides))
    app.state.token_keys = StaticKeySource(KeySet({"ks": SS_KEY.public_key()}))
    return _with_lookups(app)


@pytest.fixture
async def ss_app(make_settings: Callable[..., Any]) -> FastAPI:
    return _build(make_settings)


async def _add(session: AsyncSession, *rows: Any) -> None:
    session.add_all(rows)
    await session.commit()


def _claim(
    citizen: str, claim_id: str, *, status: str = "settled", total_fen: int = 10_000, **paid: int
) -> ClaimRow:
    """A claim whose split adds up: what ``paid`` does not name is paid in cash."""
    amounts = {"pooled_fen": 0, "critical_fen": 0, "assistance_fen": 0, "personal_account_fen": 0}
    amounts.update(paid)
    return ClaimRow(
        id=claim_id,
        facility="Provincial People's Hospital",
        bill_id="bill-" + claim_id,
        bill_digest="d" * 64,
        citizen=citizen,
        scheme="employee_medical",
        year=2026,
        service_date=date(2026, 3, 1),
        status=status,
        total_fen=total_fen,
        in_scope_fen=total_fen,
        deductible_fen=0,
        cash_fen=total_fen - sum(amounts.values()),
        adjudication="{}",
        bill="{}",
        terminal="terminal-counter",
        settled_at=datetime(2026, 3, 1, 9, tzinfo=UTC),
        reversed_at=datetime(2026, 3, 2, tzinfo=UTC) if status == "reversed" else None,
        pooled_fen=amounts["pooled_fen"],
        critical_fen=amounts["critical_fen"],
        assistance_fen=amounts["assistance_fen"],
        personal_account_fen=amounts["personal_account_fen"],
    )


def _contribution(citizen: str, scheme: str, period: str, **amounts: int) -> ContributionRow:
    values = {"employer_fen": 0, "personal_fen": 0, "government_fen": 0, "account_credit_fen": 0}
    values.update(amounts)
    wage = values.pop("wage_base_fen", None)
    return ContributionRow(
        citizen=citizen,
        scheme=scheme,
        period=period,
        wage_base_fen=wage,
        paid_on=date(int(period[:4]), 12, 1),
        **values,
    )


def _entry(citizen: str, kind: str, at: datetime, amount: int, after: int, ref: str) -> Any:
    reason = "contribution" if amount > 0 else "claim"
    return AccountEntryRow(
        citizen=citizen,
        kind=kind,
        at=at,
        amount_fen=amount,
        balance_after_fen=after,
        reason=reason,
        reference=ref,
    )


# -- enrolment -------------------------------------------------------------------------------


async def test_enrolment_status_per_scheme(ss: httpx.AsyncClient, ss_session: AsyncSession) -> None:
    await _add(
        ss_session,
        EnrolmentRow(
            citizen=ALICE,
            scheme="employee_medical",
            start_date=date(2020, 1, 1),
            status="active",
            employer="Acme",
        ),
        # An old period, then the current one: the current one counts.
        EnrolmentRow(
            citizen=ALICE,
            scheme="resident_medical",
            start_date=date(2015, 1, 1),
            end_date=date(2019, 12, 31),
            status="ended",
        ),
        # Marked active but its end date has passed.
        EnrolmentRow(
            citizen=ALICE,
            scheme="employee_pension",
            start_date=date(2020, 1, 1),
            end_date=date(2021, 6, 30),
            status="active",
        ),
        EnrolmentRow(
            citizen=BOB, scheme="resident_pension", start_date=date(2020, 1, 1), status="active"
        ),
    )
    response = await ss.get("/social-security/benefits", headers=citizen_auth(ALICE))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    by_scheme = {s["scheme"]: s for s in response.json()["schemes"]}
    assert by_scheme["employee_medical"]["status"] == "active"
    assert by_scheme["employee_medical"]["employer"] == "Acme"
    assert by_scheme["resident_medical"]["status"] == "ended"
    assert by_scheme["employee_pension"]["status"] == "ended"
    # Bob's enrolment is not Alice's.
    assert by_scheme["resident_pension"]["status"] == "not_enrolled"


# -- contributions ---------------------------------------------------------------------------


async def test_contributions_filter_and_page(
    ss: httpx.AsyncClient, ss_session: AsyncSession
) -> None:
    await _add(
        ss_session,
        _contribution(ALICE, "employee_medical", "2025-12", employer_fen=60_000, personal_fen=2),
        _contribution(ALICE, "employee_medical", "2026-01", employer_fen=60_000, personal_fen=3),
        _contribution(ALICE, "employee_medical", "2026-02", employer_fen=60_000, personal_fen=4),
        _contribution(ALICE, "employee_pension", "2026-01", employer_fen=160_000),
        _contribution(BOB, "employee_medical", "2026-01", employer_fen=1),
    )
    url = "/social-security/contributions?scheme=employee_medical&year=2026&limit=1"
    first = await ss.get(url, headers=citizen_auth(ALICE))
    assert first.status_code == 200, first.text
    page = first.json()
    assert [c["period"] for c in page["items"]] == ["2026-02"]
    assert page["items"][0]["total_fen"] == 60_004
    assert page["items"][0]["total_yuan"] == "¥600.04"
    assert page["paging"] == {"total": 2, "limit": 1, "offset": 0, "next_offset": 1}
    second = (await ss.get(url + "&offset=1", headers=citizen_auth(ALICE))).json()
    assert [c["period"] for c in second["items"]] == ["2026-01"]
    assert second["paging"]["next_offset"] is None

    everything = (
        await ss.get("/social-security/contributions", headers=citizen_auth(ALICE))
    ).json()
    assert everything["paging"]["total"] == 4
    assert all(c["total_fen"] != 1 for c in everything["items"])  # never Bob's

    bad = await ss.get("/social-security/contributions?scheme=lottery", headers=citizen_auth(ALICE))
    assert bad.status_code == 422
    assert "scheme" in bad.json()["detail"]


# -- the yearly statement --------------------------------------------------------------------


async def test_year_statement_sums_the_year_in_china_time(
    ss: httpx.AsyncClient, ss_session: AsyncSession
) -> None:
    await _add(
        ss_session,
        _contribution(
            ALICE, "employee_medical", "2026-01", employer_fen=60_000, account_credit_fen=20_000
        ),
        _contribution(
            ALICE, "employee_medical", "2026-02", employer_fen=60_000, account_credit_fen=20_000
        ),
        _contribution(ALICE, "employee_medical", "2025-12", employer_fen=99_999),
        # 16:30 UTC on 31 December is 00:30 on 1 January in Beijing: a 2026 movement.
        _entry(ALICE, "medical", datetime(2025, 12, 31, 12, tzinfo=UTC), 5_000, 5_000, "c0"),
        _entry(ALICE, "medical", datetime(2025, 12, 31, 16, 30, tzinfo=UTC), 20_000, 25_000, "c1"),
        _entry(ALICE, "medical", datetime(2026, 3, 1, 9, tzinfo=UTC), -7_000, 18_000, "claim:k1"),
        BenefitPaymentRow(
            citizen=ALICE,
            scheme="employee_pension",
            period="2026-01",
            amount_fen=350_000,
            paid_on=date(2026, 1, 15),
        ),
        _claim(ALICE, "k1", total_fen=30_000, pooled_fen=15_000, personal_account_fen=7_000),
        _claim(ALICE, "k0", status="reversed", total_fen=50_000, pooled_fen=40_000),
        _claim(BOB, "kb", total_fen=999_999),
    )
    response = await ss.get("/social-security/statement/2026", headers=citizen_auth(ALICE))
    assert response.status_code == 200, response.text
    statement = response.json()
    assert [c["period"] for c in statement["contributions"]] == ["2026-01", "2026-02"]
    (medical,) = statement["contribution_totals"]
    assert (medical["periods"], medical["employer_fen"], medical["account_credit_fen"]) == (
        2,
        120_000,
        40_000,
    )
    (account,) = statement["accounts"]
    assert [e["reference"] for e in account["entries"]] == ["c1", "claim:k1"]
    assert (account["credited_fen"], account["debited_fen"]) == (20_000, 7_000)
    assert account["closing_balance_fen"] == 18_000
    assert statement["benefits_total_fen"] == 350_000
    assert {c["id"] for c in statement["claims"]} == {"k0", "k1"}
    totals = statement["claims_total"]
    # The reversed claim is listed but not counted.
    assert totals == {
        "count": 1,
        "total_fen": 30_000,
        "funds_fen": 15_000,
        "personal_account_fen": 7_000,
        "cash_fen": 8_000,
    }

    empty = (await ss.get("/social-security/statement/2019", headers=citizen_auth(ALICE))).json()
    assert empty["contributions"] == []
    assert empty["claims_total"]["count"] == 0
    assert empty["accounts"] == []
    too_early = await ss.get("/social-security/statement/1066", headers=citizen_auth(ALICE))
    assert too_early.status_code == 422


# -- claims, the medical account, the medical year -------------------------------------------


async def test_claims_show_their_split(ss: httpx.AsyncClient, ss_session: AsyncSession) -> None:
    await _add(
        ss_session,
        _claim(ALICE, "k1", total_fen=300_000, pooled_fen=100_000, critical_fen=87_000),
        _claim(BOB, "kb"),
    )
    response = await ss.get("/social-security/claims", headers=citizen_auth(ALICE))
    assert response.status_code == 200, response.text
    (claim,) = response.json()["items"]
    assert claim["id"] == "k1"
    split = claim["split"]
    assert (split["pooled_fen"], split["critical_fen"], split["cash_fen"]) == (
        100_000,
        87_000,
        113_000,
    )
    assert split["funds_fen"] == 187_000
    assert split["total_yuan"] == "¥3,000.00"


async def test_medical_account_balance_and_ledger(
    ss: httpx.AsyncClient, ss_session: AsyncSession
) -> None:
    await _add(
        ss_session,
        AccountRow(citizen=ALICE, kind="medical", balance_fen=13_000),
        AccountRow(citizen=BOB, kind="medical", balance_fen=999),
        _entry(ALICE, "medical", datetime(2026, 1, 5, tzinfo=UTC), 20_000, 20_000, "c1"),
        _entry(ALICE, "medical", datetime(2026, 2, 5, tzinfo=UTC), -7_000, 13_000, "claim:k1"),
        _entry(BOB, "medical", datetime(2026, 2, 5, tzinfo=UTC), 999, 999, "c1"),
    )
    response = await ss.get("/social-security/medical-account?limit=1", headers=citizen_auth(ALICE))
    assert response.status_code == 200, response.text
    account = response.json()
    assert (account["balance_fen"], account["balance_yuan"]) == (13_000, "¥130.00")
    assert [e["reference"] for e in account["entries"]] == ["claim:k1"]
    assert account["entries"][0]["amount_fen"] == -7_000
    assert account["paging"]["total"] == 2

    nobody = (
        await ss.get("/social-security/medical-account", headers=citizen_auth("cz_new"))
    ).json()
    assert nobody["balance_fen"] == 0
    assert nobody["entries"] == []


async def test_medical_year_uses_the_rules_in_force_at_year_end(
    ss: httpx.AsyncClient, ss_session: AsyncSession
) -> None:
    created = datetime(2024, 12, 1, tzinfo=UTC)

    def rules(version: int, effective: date, cap: int) -> RuleSetRow:
        shipped = default_rule_set(Scheme.EMPLOYEE_MEDICAL, 2026)
        document = shipped.model_copy(
            update={
                "year": 2025,
                "version": version,
                "effective_from": effective,
                "annual_pooled_cap_fen": cap,
            }
        ).to_json()
        return RuleSetRow(
            scheme="employee_medical",
            version=version,
            year=2025,
            effective_from=effective,
            document=document,
            created_at=created,
            created_by="bureau",
        )

    await _add(
        ss_session,
        # Versions after the shipped 2026 rules (version 1, installed at start-up).
        rules(11, date(2025, 1, 1), 13_000_000),
        rules(12, date(2025, 7, 1), 15_000_000),
        EnrolmentRow(
            citizen=ALICE, scheme="employee_medical", start_date=date(2020, 1, 1), status="active"
        ),
        # A stored document that no longer parses: the cap is unknown, the page still answers.
        RuleSetRow(
            scheme="resident_medical",
            version=11,
            year=2025,
            effective_from=date(2025, 1, 1),
            document='{"annual_pooled_cap_fen": "lots"}',
            created_at=created,
            created_by="bureau",
        ),
        # Enrolled in 2025 too: listed, with nothing used.
        EnrolmentRow(
            citizen=ALICE,
            scheme="resident_medical",
            start_date=date(2018, 1, 1),
            end_date=date(2025, 3, 31),
            status="ended",
        ),
        YearTotalRow(
            citizen=ALICE,
            scheme="employee_medical",
            year=2025,
            deductible_used_fen=120_000,
            pooled_paid_fen=14_000_000,
            critical_base_fen=0,
            critical_paid_fen=0,
            assistance_paid_fen=0,
        ),
    )
    response = await ss.get("/social-security/medical-year/2025", headers=citizen_auth(ALICE))
    assert response.status_code == 200, response.text
    schemes = {s["scheme"]: s for s in response.json()["schemes"]}
    employee = schemes["employee_medical"]
    assert employee["deductible_used_fen"] == 120_000
    assert (employee["annual_pooled_cap_fen"], employee["rule_version"]) == (15_000_000, 12)
    assert employee["cap_remaining_fen"] == 1_000_000
    assert employee["cap_remaining_yuan"] == "¥10,000.00"
    resident = schemes["resident_medical"]
    assert resident["pooled_paid_fen"] == 0
    assert resident["cap_remaining_fen"] is None

    # Bob sees none of it, and a year Alice was not enrolled in is empty.
    bob = (await ss.get("/social-security/medical-year/2025", headers=citizen_auth(BOB))).json()
    assert bob["schemes"] == []
    old = (await ss.get("/social-security/medical-year/2010", headers=citizen_auth(ALICE))).json()
    assert old["schemes"] == []


# -- pension and payments --------------------------------------------------------------------


def test_employee_pension_formula_by_hand() -> None:
    # 15 years at exactly the average wage (index 100%): basic = W x (1 + 1) / 2 x 15 x 1%.
    # 2024's average is 124,110 yuan a year, 10,342.50 a month: 1,551.375 -> 1,551.38 yuan.
    months = [MonthBase(2025, 1_034_250) for _ in range(180)]
    estimate = employee_estimate(
        account_balance_fen=139_000_00, months=months, retirement_age=60, this_year=2025
    )
    assert estimate.contribution_index_bp == 10_000
    assert estimate.basic_pension_fen == 155_138
    assert estimate.account_pension_fen == 100_000  # 139,000 yuan / 139 months
    assert estimate.eligible
    # Retiring at 55 divides the account over 170 months; at 50, over 195.
    at_55 = employee_estimate(
        account_balance_fen=170_000_00, months=months, retirement_age=55, this_year=2025
    )
    assert (at_55.months_divisor, at_55.account_pension_fen) == (170, 100_000)
    at_50 = employee_estimate(
        account_balance_fen=195_000_00, months=months[:179], retirement_age=50, this_year=2025
    )
    assert (at_50.months_divisor, at_50.account_pension_fen, at_50.eligible) == (
        195,
        100_000,
        False,
    )
    # Twice the average wage (200%) doubles the own-wage half: basic = W x 1.5 x 15%.
    rich = employee_estimate(
        account_balance_fen=0,
        months=[MonthBase(2025, 2_068_500)] * 180,
        retirement_age=60,
        this_year=2025,
    )
    assert (rich.contribution_index_bp, rich.basic_pension_fen) == (20_000, 232_706)


def test_resident_pension_is_the_basic_amount_plus_the_account_over_139() -> None:
    estimate = resident_estimate(
        account_balance_fen=27_800_00, contribution_years=15, retirement_age=60, this_year=2025
    )
    assert (estimate.basic_pension_fen, estimate.account_pension_fen) == (14_300, 20_000)
    assert estimate.eligible
    assert estimate.months_divisor == 139


async def test_pension_account_and_estimate(
    ss: httpx.AsyncClient, ss_session: AsyncSession
) -> None:
    await _add(
        ss_session,
        EnrolmentRow(
            citizen=ALICE, scheme="employee_pension", start_date=date(2020, 1, 1), status="active"
        ),
        AccountRow(citizen=ALICE, kind="pension", balance_fen=1_390_000),
        *[
            _contribution(ALICE, "employee_pension", f"2026-{m:02d}", wage_base_fen=1_000_000)
            for m in range(1, 13)
        ],
        EnrolmentRow(
            citizen=BOB, scheme="resident_pension", start_date=date(2020, 1, 1), status="active"
        ),
        AccountRow(citizen=BOB, kind="pension", balance_fen=278_000),
    )
    alice = await ss.get("/social-security/pension", headers=citizen_auth(ALICE))
    assert alice.status_code == 200, alice.text
    body = alice.json()
    assert (body["account_balance_fen"], body["account_balance_yuan"]) == (1_390_000, "¥13,900.00")
    estimate = body["estimate"]
    assert estimate["scheme"] == "employee_pension"
    assert (estimate["contribution_months"], estimate["eligible"]) == (12, False)
    assert (estimate["months_divisor"], estimate["account_pension_fen"]) == (139, 10_000)
    assert estimate["basic_pension_fen"] > 0
    total = estimate["basic_pension_fen"] + estimate["account_pension_fen"]
    assert estimate["monthly_total_fen"] == total
    at_55 = await ss.get("/social-security/pension?retirement_age=55", headers=citizen_auth(ALICE))
    assert at_55.json()["estimate"]["months_divisor"] == 170
    assert (
        await ss.get("/social-security/pension?retirement_age=30", headers=citizen_auth(ALICE))
    ).status_code == 422

    bob = (await ss.get("/social-security/pension", headers=citizen_auth(BOB))).json()
    assert bob["estimate"]["scheme"] == "resident_pension"
    assert bob["estimate"]["account_pension_fen"] == 2_000  # 2,780 yuan / 139
    nobody = (await ss.get("/social-security/pension", headers=citizen_auth("cz_new"))).json()
    assert nobody == {"account_balance_fen": 0, "account_balance_yuan": "¥0.00", "estimate": None}


async def test_benefit_payments(ss: httpx.AsyncClient, ss_session: AsyncSession) -> None:
    await _add(
        ss_session,
        *[
            BenefitPaymentRow(
                citizen=ALICE,
                scheme="employee_pension",
                period=f"2026-{m:02d}",
                amount_fen=350_000,
                paid_on=date(2026, m, 15),
            )
            for m in (1, 2, 3)
        ],
        BenefitPaymentRow(
            citizen=BOB,
            scheme="resident_pension",
            period="2026-01",
            amount_fen=14_300,
            paid_on=date(2026, 1, 15),
        ),
    )
    response = await ss.get("/social-security/payments?limit=2", headers=citizen_auth(ALICE))
    assert response.status_code == 200, response.text
    page = response.json()
    assert [p["period"] for p in page["items"]] == ["2026-03", "2026-02"]
    assert page["items"][0]["amount_yuan"] == "¥3,500.00"
    assert page["paging"]["total"] == 3
    assert page["paging"]["next_offset"] == 2


# -- who may ask -----------------------------------------------------------------------------

CITIZEN_PATHS = (
    "/social-security/benefits",
    "/social-security/contributions",
    "/social-security/statement/2026",
    "/social-security/pension",
    "/social-security/payments",
    "/social-security/medical-account",
    "/social-security/claims",
    "/social-security/medical-year/2026",
    "/social-security/card",
)


async def test_a_counter_token_without_benefits_read_is_refused(ss: httpx.AsyncClient) -> None:
    for path in CITIZEN_PATHS:
        response = await ss.get(path, headers=counter_auth(ALICE))
        assert response.status_code == 403, path
        assert response.headers["content-type"] == "application/problem+json"
        assert "benefits.read" in response.json()["detail"]
        assert (await ss.get(path)).status_code == 401, path


async def test_every_personal_read_is_audited_with_the_citizen(
    ss: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="services.kit.audit"):
        for path in CITIZEN_PATHS[:-1]:  # /card needs identity: see below
            assert (await ss.get(path, headers=citizen_auth(ALICE))).status_code == 200, path
    records = [r.record for r in caplog.records if r.getMessage() == "audit.local"]  # type: ignore[attr-defined]
    assert len(records) == len(CITIZEN_PATHS) - 1
    assert {r["citizen"] for r in records} == {ALICE}
    assert {r["level"] for r in records} == {3}
    assert {r["purpose"] for r in records} == {"PATRQT"}
    assert len({r["entity_type"] for r in records}) == len(records)


# -- the card, from the identity service -----------------------------------------------------


def _identity_card(serial: str, status: str) -> dict[str, Any]:
    """A card as identity's CardPublic lists it."""
    return {
        "serial": serial,
        "kind": "physical",
        "citizen": ALICE,
        "parent": None,
        "status": status,
        "held_by_parent": False,
        "applications": ["health", "medical_insurance"],
        "certificate_serial": "7f3a9c",
        "not_after": "2031-01-01T00:00:00Z",
        "created_at": "2026-01-01T00:00:00Z",
        "activated_at": "2026-01-02T00:00:00Z",
        "status_changed_at": "2026-01-02T00:00:00Z",
        "replaced_by": None,
    }


class FakeIdentity:
    """The identity service's ``/identity/cards/mine``, answering what a test sets, on a
    real port, and remembering the Authorization header it was sent."""

    def __init__(self) -> None:
        self.status = 200
        self.body: Any = [_identity_card("C0001234567897", "active")]
        self.seen: list[str | None] = []
        self.app = FastAPI()

        @self.app.get("/identity/cards/mine")
        async def mine(request: Request) -> JSONResponse:
            self.seen.append(request.headers.get("authorization"))
            return JSONResponse(self.body, status_code=self.status)


@pytest.fixture
def identity() -> Iterator[tuple[FakeIdentity, str]]:
    fake = FakeIdentity()
    with server_thread(fake.app) as server:
        yield fake, server.url


@pytest.fixture
async def with_identity(
    make_settings: Callable[..., Any], identity: tuple[FakeIdentity, str]
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeIdentity]]:
    fake, url = identity
    async with serve_asgi(_build(make_settings, upstreams={"identity": url})) as http:
        yield http, fake


async def test_card_status_forwards_the_citizens_token_and_shows_little(
    with_identity: tuple[httpx.AsyncClient, FakeIdentity],
) -> None:
    ss, fake = with_identity
    fake.body = [
        _identity_card("C0001234567897", "active"),
        _identity_card("E0001234567891", "suspended"),
    ]
    headers = citizen_auth(ALICE, "benefits.read card.self")
    response = await ss.get("/social-security/card", headers=headers)
    assert response.status_code == 200, response.text
    assert fake.seen == [headers["Authorization"]]
    assert response.json() == {
        "cards": [
            {
                "serial_tail": "7897",
                "status": "active",
                "applications": ["health", "medical_insurance"],
                "valid_until": "2031-01-01T00:00:00Z",
            },
            {
                "serial_tail": "7891",
                "status": "suspended",
                "applications": ["health", "medical_insurance"],
                "valid_until": "2031-01-01T00:00:00Z",
            },
        ]
    }
    assert "C0001234567897" not in response.text
    assert "7f3a9c" not in response.text


async def test_card_status_refused_by_identity_says_so(
    with_identity: tuple[httpx.AsyncClient, FakeIdentity],
) -> None:
    ss, fake = with_identity
    fake.status, fake.body = 403, {"detail": "token lacks scope card.self"}
    response = await ss.get("/social-security/card", headers=citizen_auth(ALICE))
    assert response.status_code == 403
    assert "identity" in response.json()["detail"]
    assert "card.self" in response.json()["detail"]
    fake.status, fake.body = 200, {"not": "a list"}
    assert (await ss.get("/social-security/card", headers=citizen_auth(ALICE))).status_code == 502
    fake.status, fake.body = 500, {"detail": "boom"}
    assert (await ss.get("/social-security/card", headers=citizen_auth(ALICE))).status_code == 503


async def test_card_status_with_identity_down_is_503_not_500(
    make_settings: Callable[..., Any],
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    async with serve_asgi(_build(make_settings, upstreams={"identity": closed})) as ss:
        response = await ss.get("/social-security/card", headers=citizen_auth(ALICE))
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert "identity service" in response.json()["detail"]
        assert response.headers["retry-after"]
        # The rest of the app still answers.
        enrolments = await ss.get("/social-security/benefits", headers=citizen_auth(ALICE))
        assert enrolments.status_code == 200


# -- the catalogue ---------------------------------------------------------------------------


async def test_catalogue_lookup_and_search(ss: httpx.AsyncClient, ss_session: AsyncSession) -> None:
    def item(code: str, name: str, cls: str, since: date, cap: int | None = None) -> Any:
        return CatalogueItemRow(
            code=code,
            effective_from=since,
            name=name,
            kind="drug",
            catalogue_class=cls,
            price_cap_fen=cap,
        )

    # This test's own catalogue, instead of the one shipped and installed at start-up.
    await ss_session.exec(delete(CatalogueItemRow))
    await _add(
        ss_session,
        item("XA01", "Amoxicillin capsules", "B", date(2020, 1, 1), 150),
        item("XA01", "Amoxicillin capsules", "A", date(2024, 1, 1), 120),  # now class A
        item("XA01", "Amoxicillin capsules", "C", date(2099, 1, 1)),  # not yet in force
        item("XA02", "Amoxicillin granules", "B", date(2020, 1, 1)),
        item("XA03", "Amlodipine tablets", "A", date(2020, 1, 1), 2_345),
        item("XA04", "50% glucose injection", "A", date(2020, 1, 1)),
        item("XA05", "500 mg vitamin C", "C", date(2020, 1, 1)),
    )
    anyone = {"Authorization": "Bearer " + token("hospital-system", "system/Claim.c", acr="3")}
    one = await ss.get("/insurance/catalogue/XA01", headers=anyone)
    assert one.status_code == 200, one.text
    assert one.json() == {
        "code": "XA01",
        "name": "Amoxicillin capsules",
        "kind": "drug",
        "catalogue_class": "A",
        "price_cap_fen": 120,
        "effective_from": "2024-01-01",
        "price_cap_yuan": "¥1.20",
    }
    missing = await ss.get("/insurance/catalogue/NOPE", headers=anyone)
    assert missing.status_code == 404
    assert "NOPE" in missing.json()["detail"]

    found = await ss.get("/insurance/catalogue?q=Amox", headers=citizen_auth(ALICE))
    assert found.status_code == 200, found.text
    assert [(i["code"], i["catalogue_class"]) for i in found.json()["items"]] == [
        ("XA01", "A"),
        ("XA02", "B"),
    ]
    limited = (await ss.get("/insurance/catalogue?q=Am&limit=2", headers=anyone)).json()
    assert len(limited["items"]) == 2
    assert limited["truncated"] is True
    # "%" is a character of the name, not a wildcard.
    percent = (await ss.get("/insurance/catalogue?q=50%25", headers=anyone)).json()
    assert [i["code"] for i in percent["items"]] == ["XA04"]
    assert (await ss.get("/insurance/catalogue?q=", headers=anyone)).status_code == 422
    assert (await ss.get("/insurance/catalogue?q=Amox")).status_code == 401
