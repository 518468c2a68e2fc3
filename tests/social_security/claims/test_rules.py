"""Rules as data (social_security/claims/rules.py) and the catalogue (catalogue.py): the shipped
documents parse, and a document that would make the engine pay nonsense is refused, saying why."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from social_security.claims.catalogue import (
    CatalogueClass,
    CatalogueItem,
    CatalogueKind,
    InvalidCatalogue,
    default_catalogue,
    parse_catalogue,
)
from social_security.claims.rules import (
    InvalidRules,
    Portion,
    RuleSet,
    default_rule_set,
    parse_rule_set,
)
from social_security.models import CatalogueItemRow
from social_security.schemes import Scheme

Doc = dict[str, Any]


def resident_document() -> Doc:
    document: Doc = json.loads(default_rule_set(Scheme.RESIDENT_MEDICAL).to_json())
    return document


def test_the_shipped_rules_parse_with_the_issue_values() -> None:
    resident = default_rule_set(Scheme.RESIDENT_MEDICAL)
    assert [(r.level, r.deductible_fen, r.ratio_bp) for r in resident.inpatient] == [
        (1, 30_000, 8_500),
        (2, 60_000, 7_500),
        (3, 120_000, 6_500),
    ]
    assert resident.annual_pooled_cap_fen == 13_000_000
    assert resident.class_b_first_self_pay_bp == 1_000
    assert resident.personal_account is None
    assert resident.critical_illness is not None
    assert resident.critical_illness.deductible_fen == 1_000_000
    assert [(b.up_to_fen, b.ratio_bp) for b in resident.critical_illness.bands] == [
        (10_000_000, 5_000),
        (None, 6_000),
    ]
    assert resident.critical_illness.annual_cap_fen == 20_000_000

    employee = default_rule_set(Scheme.EMPLOYEE_MEDICAL)
    assert employee.personal_account is not None
    assert Portion.IN_SCOPE_SELF_PAY in employee.personal_account.pays
    for level in (1, 2, 3):  # the employee scheme is the more generous one
        assert employee.level(level).ratio_bp > resident.level(level).ratio_bp
    assert employee.annual_pooled_cap_fen > resident.annual_pooled_cap_fen


def test_rules_round_trip_through_their_json() -> None:
    for scheme in (Scheme.RESIDENT_MEDICAL, Scheme.EMPLOYEE_MEDICAL):
        rules = default_rule_set(scheme)
        assert parse_rule_set(rules.to_json()) == rules


def test_no_default_rules_for_a_year_not_shipped() -> None:
    with pytest.raises(LookupError, match="1999"):
        default_rule_set(Scheme.RESIDENT_MEDICAL, 1999)


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def change(document: Doc) -> None:
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _drop_level_two(document: Doc) -> None:
    document["inpatient"] = [r for r in document["inpatient"] if r["level"] != 2]


def _repeat_level_one(document: Doc) -> None:
    document["inpatient"][1]["level"] = 1


def _descending_bands(document: Doc) -> None:
    document["critical_illness"]["bands"] = [
        {"up_to_fen": 10_000_000, "ratio_bp": 5_000},
        {"up_to_fen": 5_000_000, "ratio_bp": 6_000},
        {"up_to_fen": None, "ratio_bp": 7_000},
    ]


def _twice_dibao(document: Doc) -> None:
    document["assistance"].append(dict(document["assistance"][1]))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_drop_level_two, "levels 1, 2 and 3"),
        (_repeat_level_one, "levels 1, 2 and 3"),
        (_set("inpatient.0.ratio_bp", 10_001), "inpatient.0.ratio_bp: Input should be less than"),
        (_set("inpatient.0.ratio_bp", 85.0), "inpatient.0.ratio_bp: Input should be a valid int"),
        (_set("inpatient.0.deductible_fen", "30000"), "inpatient.0.deductible_fen"),
        (_set("annual_pooled_cap_fen", True), "annual_pooled_cap_fen"),
        (_set("annual_pooled_cap_fen", -1), "annual_pooled_cap_fen: Input should be greater"),
        (_set("class_b_first_self_pay_bp", 0.1), "class_b_first_self_pay_bp"),
        (_descending_bands, "band limits must rise"),
        (_set("critical_illness.bands.1.up_to_fen", 50_000_000), "last band must have"),
        (_set("critical_illness.bands.0.up_to_fen", 500_000), "band limits must rise"),
        (_set("critical_illness.bands", []), "critical_illness.bands"),
        (_set("critical_illness.annual_cap_fen", -5), "critical_illness.annual_cap_fen"),
        (_set("scheme", "resident_pension"), "not a medical scheme"),
        (_set("scheme", "private_plan"), "scheme"),
        (_set("effective_from", "2025-12-31"), "not in year 2026"),
        (_set("outpatient.annual_cap_fen", 14_000_000), "outpatient annual cap exceeds"),
        (_twice_dibao, "appears twice"),
        (_set("personal_account", {"pays": ["everything"]}), "personal_account.pays.0"),
        (_set("personal_account", {"pays": []}), "personal_account.pays"),
        (_set("surprise", 1), "surprise: Extra inputs are not permitted"),
        (_set("assistance.0.category", "Di Bao!"), "assistance.0.category"),
    ],
)
def test_nonsense_rules_are_refused_saying_why(change: Callable[[Doc], None], says: str) -> None:
    document = resident_document()
    change(document)
    with pytest.raises(InvalidRules) as refused:
        parse_rule_set(json.dumps(document))
    assert says in str(refused.value)
    assert str(refused.value).startswith("invalid rules: ")


def test_a_document_that_is_not_json_is_refused() -> None:
    with pytest.raises(InvalidRules, match="invalid rules: document: Invalid JSON"):
        parse_rule_set("{ not json")


def test_rules_cannot_be_changed_in_memory() -> None:
    rules = default_rule_set(Scheme.RESIDENT_MEDICAL)
    with pytest.raises(ValidationError, match="frozen"):
        rules.annual_pooled_cap_fen = 1  # type: ignore[misc]


def test_only_levels_one_to_three_exist() -> None:
    rules: RuleSet = default_rule_set(Scheme.RESIDENT_MEDICAL)
    assert rules.level(2).deductible_fen == 60_000
    with pytest.raises(ValueError, match="1, 2 or 3"):
        rules.level(0)


# --- the catalogue ----------------------------------------------------------------------


def test_the_shipped_catalogue_parses() -> None:
    catalogue = default_catalogue()
    items = catalogue.by_code()
    assert len(items) >= 40
    assert {item.catalogue_class for item in items.values()} == set(CatalogueClass)
    assert {item.kind for item in items.values()} == set(CatalogueKind)
    assert items["HB01"].price_cap_fen == 80_000  # a centrally procured stent
    assert items["XC02"].catalogue_class is CatalogueClass.C
    assert any(item.price_cap_fen is None for item in items.values())


def catalogue_document() -> Doc:
    return {
        "effective_from": "2026-01-01",
        "items": [
            {"code": "XA01", "name": "Amoxicillin", "kind": "drug", "catalogue_class": "A"},
            {
                "code": "FB01",
                "name": "CT",
                "kind": "service",
                "catalogue_class": "B",
                "price_cap_fen": 22_000,
            },
        ],
    }


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        ("items.1.code", "XA01", "code XA01 appears twice"),
        ("items.0.catalogue_class", "D", "items.0.catalogue_class"),
        ("items.0.kind", "potion", "items.0.kind"),
        ("items.1.price_cap_fen", -1, "items.1.price_cap_fen"),
        ("items.1.price_cap_fen", 220.5, "items.1.price_cap_fen"),
        ("items.0.code", "", "items.0.code"),
    ],
)
def test_a_broken_catalogue_is_refused(path: str, value: Any, says: str) -> None:
    document = catalogue_document()
    _set(path, value)(document)
    assert parse_catalogue(json.dumps(catalogue_document())).by_code()["XA01"].price_cap_fen is None
    with pytest.raises(InvalidCatalogue) as refused:
        parse_catalogue(json.dumps(document))
    assert says in str(refused.value)


def test_an_item_can_be_read_from_a_database_row() -> None:
    row = CatalogueItemRow(
        code="XB01",
        effective_from=date(2026, 1, 1),
        name="Atorvastatin",
        kind="drug",
        catalogue_class="B",
        price_cap_fen=800,
    )
    item = CatalogueItem.model_validate(row, from_attributes=True)
    assert (item.catalogue_class, item.kind, item.price_cap_fen) == (
        CatalogueClass.B,
        CatalogueKind.DRUG,
        800,
    )
    row.catalogue_class = "D"
    with pytest.raises(ValidationError, match="catalogue_class"):
        CatalogueItem.model_validate(row, from_attributes=True)
