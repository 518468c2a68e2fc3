"""What crosses the wire for citizens: never the full national ID number on the way out."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from pydantic import ConfigDict, field_validator
from pydantic_core import PydanticCustomError
from sqlmodel import Field, SQLModel

from identity.citizens.models import CitizenBase
from identity.national_id import NationalIdError, Sex, parse_national_id

# A mainland China mobile number: 11 digits, 1 then 3-9 (MIIT numbering plan); +86 optional.
_MOBILE = re.compile(r"(?:\+?86)?(1[3-9][0-9]{9})")
_PHONE_SEPARATORS = str.maketrans("", "", " -()")
_EXAMPLE_NUMBER = "11010519491231002X"  # the worked example of GB 11643-1999


def _national_id(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return parse_national_id(value).number
    except NationalIdError as exc:
        # PydanticCustomError keeps the message as written (no "Value error, " prefix);
        # the message never contains the number.
        raise PydanticCustomError("national_id", str(exc)) from None


class CitizenCreate(CitizenBase):
    """A registration. Birth date and sex, if given, must match the national ID number."""

    # hide_input_in_errors: a validation error must not carry the number into a log line.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # type: ignore[assignment]

    national_id: str = Field(
        description="18-character resident identity number (GB 11643-1999); x or X accepted",
        schema_extra={"examples": [_EXAMPLE_NUMBER]},
    )
    birth_date: date | None = Field(
        default=None, description="As stated by the applicant; checked against the number"
    )
    sex: Sex | None = Field(
        default=None, description="As stated by the applicant; checked against the number"
    )
    phone: str | None = Field(
        default=None,
        description="Mainland China mobile number, optionally +86; stored as E.164",
        schema_extra={"examples": ["13812345678"]},
    )

    @field_validator("national_id", mode="before")
    @classmethod
    def _check_national_id(cls, value: Any) -> Any:
        return _national_id(value)

    @field_validator("phone", mode="before")
    @classmethod
    def _check_phone(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = _MOBILE.fullmatch(value.translate(_PHONE_SEPARATORS))
        if match is None:
            raise PydanticCustomError(
                "phone",
                "phone must be a mainland China mobile number: 11 digits starting with 13-19, "
                "optionally prefixed by +86",
            )
        return f"+86{match.group(1)}"


class NationalIdLookup(SQLModel):
    """A registration desk's search; the number travels in the body, never in a URL."""

    # hide_input_in_errors: a validation error must not carry the number into a log line.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # type: ignore[assignment]

    national_id: str = Field(
        description="18-character resident identity number (GB 11643-1999)",
        schema_extra={"examples": [_EXAMPLE_NUMBER]},
    )

    @field_validator("national_id", mode="before")
    @classmethod
    def _check_national_id(cls, value: Any) -> Any:
        return _national_id(value)


class CitizenPublic(CitizenBase):
    """What a registration desk sees: enough to recognise the person, no full identifiers."""

    id: str = Field(description="Pseudonymous citizen id; the `sub` of the citizen's tokens")
    birth_date: date
    sex: Sex
    national_id_masked: str = Field(
        description="Only the last four characters of the national ID number",
        schema_extra={"examples": ["**************002X"]},
    )
    phone_masked: str | None = Field(
        default=None,
        description="Mobile number with the middle four digits hidden",
        schema_extra={"examples": ["138****5678"]},
    )
    created_at: datetime
