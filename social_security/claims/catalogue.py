"""The drug, item and service catalogue the adjudication engine judges bill lines by.

China's basic medical insurance sorts what a hospital may bill into the national catalogues
(the drug catalogue, 国家基本医疗保险药品目录, and the provinces' medical service and consumable
catalogues) in three classes:

* Class A (甲类): fully within the scheme;
* Class B (乙类): within the scheme once the patient has paid a first self-pay share (the
  ratio is in the scheme's :class:`~social_security.claims.rules.RuleSet`);
* Class C (丙类): not covered, the patient pays in full.

Some items carry a price cap per unit (最高支付标准, e.g. a centrally procured stent, a bed
day): the scheme considers at most the cap, the patient pays the excess.

The default catalogue ships as ``social_security/data/catalogue.json``; the database keeps its
copy in ``catalogue_items`` (:class:`social_security.models.CatalogueItemRow`, same fields).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from enum import StrEnum
from importlib.resources import files
from types import MappingProxyType
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class CatalogueKind(StrEnum):
    DRUG = "drug"
    ITEM = "item"  # medical consumables and devices
    SERVICE = "service"  # examinations, procedures, bed days, nursing


class CatalogueClass(StrEnum):
    A = "A"
    B = "B"
    C = "C"


class InvalidCatalogue(ValueError):
    """A catalogue document that cannot be used; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class CatalogueItem(_Strict):
    """One entry; ``price_cap_fen`` is per unit (per box, per day, per session), or None."""

    code: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    # The database keeps these as plain strings (CatalogueItemRow): accept "B" as well as
    # CatalogueClass.B, still refusing any value outside the enumeration.
    kind: Annotated[CatalogueKind, Field(strict=False)]
    catalogue_class: Annotated[CatalogueClass, Field(strict=False)]
    price_cap_fen: Annotated[int, Field(ge=0)] | None = None


class Catalogue(_Strict):
    """A catalogue in force from ``effective_from``; codes are unique."""

    effective_from: date
    items: tuple[CatalogueItem, ...]

    @model_validator(mode="after")
    def _unique_codes(self) -> Self:
        seen: set[str] = set()
        for item in self.items:
            if item.code in seen:
                raise ValueError(f"code {item.code} appears twice")
            seen.add(item.code)
        return self

    def by_code(self) -> Mapping[str, CatalogueItem]:
        """The items by code, read-only: what :func:`adjudicate` takes."""
        return MappingProxyType({item.code: item for item in self.items})


def parse_catalogue(text: str | bytes) -> Catalogue:
    """Read a catalogue document; raise :class:`InvalidCatalogue` naming what is wrong."""
    try:
        return Catalogue.model_validate_json(text)
    except ValidationError as error:
        problems = "; ".join(
            ".".join(str(part) for part in item["loc"]) + ": " + item["msg"]
            for item in error.errors(include_url=False)
        )
        raise InvalidCatalogue("invalid catalogue: " + problems) from None


def default_catalogue() -> Catalogue:
    """The catalogue shipped with onecard (``social_security/data/catalogue.json``)."""
    return parse_catalogue(files("social_security").joinpath("data", "catalogue.json").read_bytes())
