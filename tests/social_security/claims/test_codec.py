"""The claim row's JSON: a bill settled before an upgrade must still be recognised as the same
bill after it (its digest is stored with the claim)."""

from __future__ import annotations

from datetime import date

from social_security.claims.bill import Bill, BillLine, VisitType
from social_security.claims.codec import bill_digest, bill_from_json, bill_to_json

BILL = Bill(
    bill_id="ZY-20261129-0001",
    facility="浙江大学医学院附属第一医院",
    citizen="cz_zhangwei0001",
    visit_type=VisitType.INPATIENT,
    service_date=date(2026, 11, 29),
    lines=(
        BillLine(sequence=1, code="FA01", quantity=3, unit_price_fen=6_000),
        BillLine(sequence=2, code="FB01", quantity=1, unit_price_fen=22_000),
    ),
)


def test_a_bills_canonical_json_and_digest_never_change() -> None:
    assert bill_to_json(BILL) == (
        '{"bill_id":"ZY-20261129-0001","citizen":"cz_zhangwei0001",'
        '"facility":"浙江大学医学院附属第一医院","lines":[{"code":"FA01","quantity":3,'
        '"sequence":1,"unit_price_fen":6000},{"code":"FB01","quantity":1,"sequence":2,'
        '"unit_price_fen":22000}],"service_date":"2026-11-29","visit_type":"inpatient"}'
    )
    # Stored with every settled claim: a change here makes every replay a conflict.
    assert bill_digest(BILL) == "5e725d3e6c95851fa3a27cddb27e988b5b784aff166ed8066af0512a47afe71e"
    assert bill_from_json(bill_to_json(BILL)) == BILL
