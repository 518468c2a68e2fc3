"""A medical scheme's rules for one year, as data (issue #6 item 2: rules change, code does not).

A :class:`RuleSet` is the JSON document kept in ``rule_sets.document``
(:class:`social_security.models.RuleSetRow`), one version per scheme and year, effective from
a date. It holds what China's basic medical insurance settles a bill with:

* per hospital level (1, 2, 3), the inpatient deductible (起付标准) and the pooled fund's
  reimbursement ratio (报销比例);
* outpatient pooling (门诊统筹) with its own deductible, ratio and annual cap, or none;
* the annual pooled-fund cap (统筹基金年度最高支付限额);
* the Class B first self-pay ratio (乙类先行自付比例);
* critical-illness insurance (大病保险): deductible, bands on the year's cumulative in-scope
  self-pay, annual cap; or none;
* medical assistance (医疗救助) per category of household (e.g. ``dibao``, minimum living
  guarantee): ratio and annual cap;
* whether the scheme has a personal account (个人账户, the employee scheme) and which parts of
  the patient's share it may pay.

Money is integer fen, ratios integer basis points (8500 = 85%). The model is strict: a float,
a string or a boolean where an integer belongs is refused, unknown fields are refused, and the
validators below make nonsense (a missing hospital level, bands out of order, a ratio above
100%) impossible to store.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from importlib.resources import files
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from social_security.schemes import Scheme

BASIS_POINTS = 10_000  # 100%
HOSPITAL_LEVELS = (1, 2, 3)  # 一级, 二级, 三级 hospitals (graded hospital management, 1989)

Fen = Annotated[int, Field(ge=0)]
BasisPoints = Annotated[int, Field(ge=0, le=BASIS_POINTS)]


class InvalidRules(ValueError):
    """A rules document that does not describe a workable scheme; the message says why."""


class _Rules(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class LevelRule(_Rules):
    """Inpatient terms at hospitals of one level: the lower the level, the more generous."""

    level: Annotated[int, Field(ge=1, le=3)]
    deductible_fen: Fen
    ratio_bp: BasisPoints


class OutpatientPooling(_Rules):
    """Outpatient pooling: its own deductible, ratio and annual cap."""

    deductible_fen: Fen
    ratio_bp: BasisPoints
    annual_cap_fen: Fen


class CriticalBand(_Rules):
    """A band of critical-illness insurance: ``ratio_bp`` of the year's cumulative in-scope
    self-pay up to ``up_to_fen`` (an absolute amount, not relative to the deductible; None:
    everything above the previous band)."""

    up_to_fen: Fen | None
    ratio_bp: BasisPoints


class CriticalIllness(_Rules):
    """Critical-illness insurance on the year's cumulative in-scope self-pay."""

    deductible_fen: Fen
    bands: tuple[CriticalBand, ...] = Field(min_length=1)
    annual_cap_fen: Fen

    @model_validator(mode="after")
    def _bands_cover_everything_in_order(self) -> Self:
        limits = [band.up_to_fen for band in self.bands]
        if limits[-1] is not None:
            raise ValueError("the last band must have up_to_fen null (it covers everything above)")
        bounded = [limit for limit in limits[:-1] if limit is not None]
        if len(bounded) != len(limits) - 1:
            raise ValueError("only the last band may have up_to_fen null")
        previous = self.deductible_fen
        for limit in bounded:
            if limit <= previous:
                raise ValueError(
                    f"band limits must rise above the deductible and each other: {limit} after"
                    f" {previous}"
                )
            previous = limit
        return self


class AssistanceRule(_Rules):
    """Medical assistance for one category of household: a share of the in-scope self-pay that
    basic and critical-illness insurance left, up to an annual cap."""

    category: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")]
    ratio_bp: BasisPoints
    annual_cap_fen: Fen


class Portion(StrEnum):
    """The parts of the patient's share of a bill (what the funds left)."""

    IN_SCOPE_SELF_PAY = "in_scope_self_pay"  # deductible and co-payment of in-scope amounts
    FIRST_SELF_PAY = "first_self_pay"  # Class B's first self-pay
    OVER_CAP = "over_cap"  # above the catalogue's price caps
    EXCLUDED = "excluded"  # Class C and off-catalogue


class PersonalAccountRule(_Rules):
    """The scheme has a personal account; it may pay these parts of the patient's share."""

    pays: tuple[Portion, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_repeats(self) -> Self:
        if len(set(self.pays)) != len(self.pays):
            raise ValueError("pays lists a portion twice")
        return self


class RuleSet(_Rules):
    """One version of a medical scheme's rules for one year."""

    scheme: Scheme
    year: Annotated[int, Field(ge=2000, le=2100)]
    version: Annotated[int, Field(ge=1)]
    effective_from: date
    inpatient: tuple[LevelRule, ...]
    outpatient: OutpatientPooling | None
    annual_pooled_cap_fen: Fen
    class_b_first_self_pay_bp: BasisPoints
    critical_illness: CriticalIllness | None
    assistance: tuple[AssistanceRule, ...] = ()
    personal_account: PersonalAccountRule | None

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if not self.scheme.is_medical:
            raise ValueError(f"{self.scheme} is not a medical scheme: it settles no bills")
        if self.effective_from.year != self.year:
            raise ValueError(f"effective_from {self.effective_from} is not in year {self.year}")
        levels = sorted(rule.level for rule in self.inpatient)
        if tuple(levels) != HOSPITAL_LEVELS:
            raise ValueError(f"inpatient must give levels 1, 2 and 3 once each, got {levels}")
        if self.outpatient and self.outpatient.annual_cap_fen > self.annual_pooled_cap_fen:
            raise ValueError("the outpatient annual cap exceeds the annual pooled-fund cap")
        categories = [rule.category for rule in self.assistance]
        if len(set(categories)) != len(categories):
            raise ValueError(f"an assistance category appears twice: {categories}")
        return self

    def level(self, hospital_level: int) -> LevelRule:
        """The inpatient terms at a hospital of this level (1, 2 or 3)."""
        for rule in self.inpatient:
            if rule.level == hospital_level:
                return rule
        raise ValueError(f"hospital level must be 1, 2 or 3, not {hospital_level!r}")

    def assistance_for(self, category: str) -> AssistanceRule | None:
        """The medical-assistance terms of a category, or None when the rules have none."""
        return next((rule for rule in self.assistance if rule.category == category), None)

    def to_json(self) -> str:
        """The document as stored in ``rule_sets.document`` (``parse_rule_set`` reads it)."""
        return self.model_dump_json(indent=2)


def parse_rule_set(text: str | bytes) -> RuleSet:
    """Read a rules document; raise :class:`InvalidRules` naming every field at fault."""
    try:
        return RuleSet.model_validate_json(text)
    except ValidationError as error:
        raise InvalidRules(_describe(error)) from None


def default_rule_set(scheme: Scheme, year: int = 2026) -> RuleSet:
    """The rules shipped with onecard (``social_security/data/rules/<scheme>-<year>.json``),
    the ones the demo province and a fresh database start from."""
    resource = files("social_security").joinpath("data", "rules", f"{scheme.value}-{year}.json")
    if not resource.is_file():
        raise LookupError(f"no default rules for {scheme.value} in {year}")
    return parse_rule_set(resource.read_bytes())


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "document"
        problems.append(f"{where}: {item['msg']}")
    return "invalid rules: " + "; ".join(problems)
