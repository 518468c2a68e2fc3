"""The ``citizens`` table (created by migration 0002).

The national ID number is never stored in clear: ``national_id_ciphertext`` holds it sealed by
:class:`identity.field_crypto.FieldCipher` (bound to this row's pseudonym) and
``national_id_index`` its keyed blind index, whose UNIQUE constraint is what makes duplicate
registration impossible, even for two requests racing each other.
"""

from __future__ import annotations

import unicodedata
from datetime import date, datetime
from typing import Any

from pydantic import field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import (
    CheckConstraint,
    Column,
    Enum,
    LargeBinary,
    PrimaryKeyConstraint,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from identity.national_id import Sex
from services.kit.sqltypes import UtcDateTime

NAME_MAX_LENGTH = 100
PSEUDONYM_LENGTH = 29  # "cz_" + 26 base32 characters (128 bits)


class CitizenBase(SQLModel):
    name: str = Field(min_length=1, max_length=NAME_MAX_LENGTH)

    @field_validator("name", mode="before")
    @classmethod
    def _normalise_name(cls, value: Any) -> Any:
        # NFC, so that one name typed on two keyboards is one name; no control characters,
        # which would corrupt logs, certificates and printed cards.
        if not isinstance(value, str):
            return value
        name = unicodedata.normalize("NFC", value).strip()
        if any(unicodedata.category(c).startswith("C") for c in name):
            raise PydanticCustomError("name_characters", "name must not contain control characters")
        return name


class Citizen(CitizenBase, table=True):
    __tablename__ = "citizens"
    __table_args__ = (
        PrimaryKeyConstraint("id", name="pk_citizens"),
        UniqueConstraint("pseudonym", name="uq_citizens_pseudonym"),
        UniqueConstraint("national_id_index", name="uq_citizens_national_id_index"),
        CheckConstraint("sex IN ('male', 'female')", name="ck_citizens_sex"),
    )

    # Internal key, for foreign keys within this database only; never leaves the service.
    id: int | None = Field(default=None, primary_key=True)
    # The citizen's id everywhere else, token ``sub`` included (DESIGN.md "Tokens").
    pseudonym: str = Field(max_length=PSEUDONYM_LENGTH)
    national_id_ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    national_id_index: str = Field(max_length=64)
    birth_date: date
    sex: Sex = Field(
        sa_column=Column(
            Enum(
                Sex,
                native_enum=False,
                length=6,
                values_callable=lambda sexes: [s.value for s in sexes],
            ),
            nullable=False,
        )
    )
    # E.164 (+86 followed by the 11-digit mobile number).
    phone: str | None = Field(default=None, max_length=16)
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
