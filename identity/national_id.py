"""Resident identity numbers (GB 11643-1999): parse and check them, and make valid ones for demos.

An 18-character number is six digits of administrative division code (GB/T 2260), eight of
birth date (YYYYMMDD), three of sequence code (odd for men, even for women) and one check
character (ISO 7064 MOD 11-2, where ``X`` stands for 10).

Hand-written rather than taken from python-stdnum (``stdnum.cn.ric``): the arithmetic is a few
lines of the standard, and we need what that module does not give us: one error per reason
whose message never contains the number (it ends up in problem details and logs), the
province and date-range rules, and a consistency check against what the registration states.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum

# GB 11643-1999 section 8.2: weights 2^(18-i) mod 11 for positions 1..17.
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
# ISO 7064 MOD 11-2 as tabulated in GB 11643-1999: (sum mod 11) -> check character.
_CHECK_CHARACTERS = "10X98765432"
# GB/T 2260 province-level divisions: 11-15 north, 21-23 north-east, 31-37 east,
# 41-46 south-central, 50-54 south-west, 61-65 north-west, 71 Taiwan, 81 Hong Kong, 82 Macao.
PROVINCE_CODES = frozenset(
    {
        *range(11, 16),
        *range(21, 24),
        *range(31, 38),
        *range(41, 47),
        *range(50, 55),
        *range(61, 66),
        71,
        81,
        82,
    }
)
EARLIEST_BIRTH_DATE = date(1900, 1, 1)
LENGTH = 18
# "Today" is a date in China (UTC+8, no daylight saving): a baby born just after midnight in
# Beijing must not be refused as "born in the future" by a server clock in UTC.
CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")
_SHAPE = re.compile(r"[0-9]{17}[0-9X]")
_REGION = re.compile(r"[0-9]{6}")


class Sex(StrEnum):
    """Sex as encoded by the sequence code (FHIR R4 AdministrativeGender values)."""

    MALE = "male"
    FEMALE = "female"


class NationalIdError(ValueError):
    """A national ID number that is not valid; the message says why, never what the number is."""


class NationalIdMismatch(NationalIdError):
    """The number is valid but disagrees with a birth date or sex stated alongside it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True, slots=True, repr=False)
class NationalId:
    """A checked number and what it encodes. Its repr shows only the masked form."""

    number: str
    region: str
    birth_date: date
    sex: Sex

    @property
    def province(self) -> str:
        return self.region[:2]

    @property
    def masked(self) -> str:
        return mask(self.number)

    def __repr__(self) -> str:
        return f"NationalId({self.masked!r})"

    def check_consistency(self, *, birth_date: date | None = None, sex: Sex | None = None) -> None:
        """Refuse a stated birth date or sex that differs from the one the number encodes."""
        if birth_date is not None and birth_date != self.birth_date:
            raise NationalIdMismatch(
                "birth_date",
                "birth_date does not match the birth date encoded in the national ID number",
            )
        if sex is not None and sex != self.sex:
            raise NationalIdMismatch(
                "sex",
                "sex does not match the sex encoded in the national ID number "
                "(odd sequence code: male, even: female)",
            )


def parse_national_id(value: str, *, today: date | None = None) -> NationalId:
    """Check ``value`` against GB 11643-1999 and return what it encodes.

    Surrounding whitespace is ignored and a lowercase ``x`` is read as ``X``. Raises
    :class:`NationalIdError` naming the first rule broken, in the order of the number's parts.
    """
    number = value.strip().upper()
    if len(number) != LENGTH:
        hint = (
            "; 15-digit first-generation numbers are not accepted, use the 18-character number"
            if len(number) == 15
            else ""
        )
        raise NationalIdError(
            f"national ID number must be {LENGTH} characters, got {len(number)}{hint}"
        )
    if not _SHAPE.fullmatch(number):
        raise NationalIdError(
            "national ID number must be 17 digits followed by a digit or X (GB 11643-1999)"
        )
    region = number[:6]
    if int(number[:2]) not in PROVINCE_CODES:
        raise NationalIdError(
            "national ID number does not start with a province-level administrative division "
            "code (GB/T 2260)"
        )
    birth_date = _birth_date(number[6:14], today=today or china_today())
    if number[17] != check_character(number[:17]):
        raise NationalIdError(
            "national ID number has a wrong check character (ISO 7064 MOD 11-2); "
            "a character was probably mistyped"
        )
    sex = Sex.MALE if int(number[16]) % 2 else Sex.FEMALE
    return NationalId(number=number, region=region, birth_date=birth_date, sex=sex)


def check_character(first17: str) -> str:
    """The check character of the first 17 digits (GB 11643-1999 section 8.2)."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("the check character is computed over exactly 17 digits")
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARACTERS[total % 11]


def mask(number: str) -> str:
    """Only the last four characters, as banks show a card number.

    Whoever sees the mask usually also sees the birth date; showing the first digits as well
    would leave so few unknown digits that the check character gives the rest away.
    """
    return "*" * (len(number) - 4) + number[-4:]


def china_today() -> date:
    return datetime.now(UTC).astimezone(CHINA_STANDARD_TIME).date()


def make_national_id(
    *, region: str = "110105", birth: date = date(1990, 1, 1), sequence: int = 1
) -> str:
    """A valid number for tests and demo seeding; an odd ``sequence`` makes a man."""
    if not _REGION.fullmatch(region):
        raise ValueError("region must be a six-digit administrative division code")
    if not 0 <= sequence <= 999:
        raise ValueError("sequence must be between 0 and 999")
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    number = first17 + check_character(first17)
    parse_national_id(number)  # refuses a region or date that cannot make a valid number
    return number


def _birth_date(digits: str, *, today: date) -> date:
    try:
        birth = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        raise NationalIdError(
            "national ID number encodes a birth date that does not exist (characters 7-14 "
            "are the birth date YYYYMMDD)"
        ) from None
    if birth < EARLIEST_BIRTH_DATE:
        raise NationalIdError("national ID number encodes a birth date before 1900")
    if birth > today:
        raise NationalIdError("national ID number encodes a birth date in the future")
    return birth
