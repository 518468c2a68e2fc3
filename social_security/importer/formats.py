"""The bureau's CSV export formats, and strict parsing of one row into a typed record.

A file is UTF-8 (a byte-order mark is allowed) CSV as RFC 4180 describes it, comma separated,
and its first line names its format by its exact header:

``enrolments``::

    citizen,scheme,start_date,end_date,status,employer,assistance

``contributions``::

    citizen,scheme,period,wage_base,employer,personal,government,paid_on

Fields:

* ``citizen``: the platform's pseudonymous citizen id (the token's ``sub``, e.g.
  ``cz_...``), 1 to 64 characters of letters, digits and ``_ - . :``. Never a national ID
  number: a value shaped like one (GB 11643-1999: 17 digits and a digit or X; or the 15 digits
  of the first generation) is refused and never repeated in the error report.
* ``scheme``: ``employee_medical``, ``resident_medical``, ``employee_pension`` or
  ``resident_pension`` (:class:`social_security.schemes.Scheme`).
* Dates are ISO 8601 ``YYYY-MM-DD``. ``end_date`` may be blank (open enrolment) and is not
  before ``start_date``; ``status`` is ``active``, ``suspended`` or ``ended`` (an ended
  enrolment has an end date). ``employer`` (up to 200 characters) and ``assistance`` (the
  medical-assistance category, e.g. ``dibao``, up to 32) may be blank.
* ``period``: ``YYYY-MM`` for the monthly employee schemes, ``YYYY`` for the yearly resident
  schemes.
* Amounts (``wage_base``, ``employer``, ``personal``, ``government``) are whole fen written as
  digits only: no sign, no decimal point, no thousands separator. For an employee scheme,
  leave ``employer`` and ``personal`` blank to have them computed from ``wage_base`` at the
  default rates (:mod:`social_security.benefits.contributions`), or give both (the bureau's
  figures then win). ``government`` blank means 0. A resident scheme has no wage base and no
  employer share: ``personal`` is required, ``wage_base`` and ``employer`` stay blank (or 0).
* ``paid_on``: the date the contribution was paid.

A row with something wrong is not loaded; each wrong field gives one reason, reported with the
row's line number and the column's name. Reasons never repeat a value that could be personal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from social_security.benefits import contributions
from social_security.benefits.contributions import Contribution
from social_security.models import ContributionRow, EnrolmentRow
from social_security.schemes import Scheme


class FileKind(StrEnum):
    ENROLMENTS = "enrolments"
    CONTRIBUTIONS = "contributions"


HEADERS: dict[FileKind, tuple[str, ...]] = {
    FileKind.ENROLMENTS: (
        "citizen",
        "scheme",
        "start_date",
        "end_date",
        "status",
        "employer",
        "assistance",
    ),
    FileKind.CONTRIBUTIONS: (
        "citizen",
        "scheme",
        "period",
        "wage_base",
        "employer",
        "personal",
        "government",
        "paid_on",
    ),
}

ENROLMENT_STATUSES = ("active", "suspended", "ended")

_CITIZEN = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
# GB 11643-1999 citizen identity number: 17 digits then a check character (digit or X); and
# the 15-digit first-generation number. Only the shape: identity owns the check-digit logic and
# services never import each other.
_NATIONAL_ID = re.compile(r"[0-9]{17}[0-9Xx]|[0-9]{15}")
_ANY_ID_DIGITS = re.compile(r"[0-9]{15}")
_DIGITS = re.compile(r"[0-9]{1,15}")  # up to 10^15 fen: far beyond any real amount, fits BIGINT
_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")
_YEAR = re.compile(r"[0-9]{4}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class FormatError(ValueError):
    """The file is not one of the formats (its header is wrong): nothing can be loaded."""


def kind_of_header(header: list[str]) -> FileKind:
    """The format a header line names (names trimmed; order and spelling exact)."""
    names = tuple(name.strip() for name in header)
    for kind, expected in HEADERS.items():
        if names == expected:
            return kind
    expected_lines = "; ".join(f"{k}: {','.join(h)}" for k, h in HEADERS.items())
    raise FormatError(f"the first line is not a known header (expected {expected_lines})")


@dataclass(frozen=True)
class FieldError:
    """Why one field of one row was refused (``column`` empty: the row as a whole)."""

    column: str
    reason: str


class BadRow(ValueError):
    """A row refused, with one reason per wrong field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.column or 'row'}: {e.reason}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class EnrolmentRecord:
    citizen: str
    scheme: Scheme
    start_date: date
    end_date: date | None
    status: str
    employer: str | None
    assistance: str | None

    @property
    def key(self) -> tuple[str, str, date]:
        return (self.citizen, self.scheme.value, self.start_date)

    def row(self) -> EnrolmentRow:
        return EnrolmentRow(
            citizen=self.citizen,
            scheme=self.scheme.value,
            start_date=self.start_date,
            end_date=self.end_date,
            status=self.status,
            employer=self.employer,
            assistance=self.assistance,
        )


@dataclass(frozen=True)
class ContributionRecord:
    citizen: str
    contribution: Contribution
    paid_on: date

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.citizen, self.contribution.scheme.value, self.contribution.period)

    def row(self) -> ContributionRow:
        return self.contribution.row(citizen=self.citizen, paid_on=self.paid_on)

    def values(self) -> dict[str, Any]:
        return self.contribution.values(citizen=self.citizen, paid_on=self.paid_on)


Record = EnrolmentRecord | ContributionRecord


def parse_row(kind: FileKind, fields: list[str]) -> Record:
    """One data row as a typed record, or :class:`BadRow` naming every wrong field."""
    expected = HEADERS[kind]
    if len(fields) != len(expected):
        raise BadRow([FieldError("", f"expected {len(expected)} fields, found {len(fields)}")])
    values = dict(zip(expected, (f.strip() for f in fields), strict=True))
    if kind is FileKind.ENROLMENTS:
        return _enrolment(values)
    return _contribution(values)


class _Fields:
    """Collects the reasons while each field is read, so one pass reports them all."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.errors: list[FieldError] = []

    def fail(self, column: str, reason: str) -> None:
        self.errors.append(FieldError(column, reason))

    def citizen(self) -> str:
        value = self.values["citizen"]
        if not value:
            self.fail("citizen", "is blank")
        elif _NATIONAL_ID.fullmatch(value):
            self.fail(
                "citizen",
                "looks like a national ID number; give the platform's pseudonymous citizen id",
            )
        elif not _CITIZEN.fullmatch(value):
            self.fail("citizen", "is not a pseudonymous citizen id (1-64 of A-Z a-z 0-9 _ - . :)")
        return value

    def scheme(self) -> Scheme | None:
        value = self.values["scheme"]
        try:
            return Scheme(value)
        except ValueError:
            known = ", ".join(s.value for s in Scheme)
            self.fail("scheme", f"{_shown(value)} is not one of {known}")
            return None

    def date(self, column: str, *, required: bool = True) -> date | None:
        value = self.values[column]
        if not value:
            if required:
                self.fail(column, "is blank")
            return None
        if _ISO_DATE.fullmatch(value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        self.fail(column, f"{_shown(value)} is not a date YYYY-MM-DD")
        return None

    def fen(self, column: str) -> int | None:
        """Whole fen, digits only; None when blank."""
        value = self.values[column]
        if not value:
            return None
        if _DIGITS.fullmatch(value):
            return int(value)
        if value.startswith("-"):
            self.fail(column, "is negative; amounts are whole fen, 0 or more")
        else:
            self.fail(column, f"{_shown(value)} is not a whole number of fen (digits only)")
        return None

    def text(self, column: str, limit: int) -> str | None:
        value = self.values[column]
        if len(value) > limit:
            self.fail(column, f"is longer than {limit} characters")
        return value or None


def _shown(value: str) -> str:
    """A value safe to repeat in a reason: short, and nothing shaped like an ID number."""
    if len(value) > 32 or _ANY_ID_DIGITS.search(value):
        return "the value"
    return repr(value)


def _enrolment(values: dict[str, str]) -> EnrolmentRecord:
    f = _Fields(values)
    citizen = f.citizen()
    scheme = f.scheme()
    start = f.date("start_date")
    end = f.date("end_date", required=False)
    status = values["status"]
    if status not in ENROLMENT_STATUSES:
        f.fail("status", f"{_shown(status)} is not one of {', '.join(ENROLMENT_STATUSES)}")
    elif status == "ended" and end is None and not values["end_date"]:
        f.fail("end_date", "is blank, but an ended enrolment has an end date")
    if start is not None and end is not None and end < start:
        f.fail("end_date", "is before start_date")
    employer = f.text("employer", 200)
    assistance = f.text("assistance", 32)
    if f.errors:
        raise BadRow(f.errors)
    # Every failure was recorded above.
    assert scheme is not None
    assert start is not None
    return EnrolmentRecord(citizen, scheme, start, end, status, employer, assistance)


def _contribution(values: dict[str, str]) -> ContributionRecord:
    f = _Fields(values)
    citizen = f.citizen()
    scheme = f.scheme()
    paid_on = f.date("paid_on")
    wage_base, employer, personal, government = (
        f.fen(c) for c in ("wage_base", "employer", "personal", "government")
    )
    period = values["period"]
    contribution: Contribution | None = None
    if scheme is not None:
        if scheme.monthly:
            if not _MONTH.fullmatch(period):
                f.fail("period", "is not a month YYYY-MM (employee schemes are monthly)")
            contribution = _employee(f, scheme, period, wage_base, employer, personal, government)
        else:
            if not _YEAR.fullmatch(period):
                f.fail("period", "is not a year YYYY (resident schemes are yearly)")
            contribution = _resident(f, scheme, period, wage_base, employer, personal, government)
    if f.errors:
        raise BadRow(f.errors)
    # Every failure was recorded above.
    assert contribution is not None
    assert paid_on is not None
    return ContributionRecord(citizen, contribution, paid_on)


def _employee(
    f: _Fields,
    scheme: Scheme,
    period: str,
    wage_base: int | None,
    employer: int | None,
    personal: int | None,
    government: int | None,
) -> Contribution | None:
    stated = f.values["employer"] or f.values["personal"]
    if not stated:
        if wage_base is None:
            if not f.values["wage_base"]:
                f.fail("wage_base", "is blank, and so are employer and personal: give one or both")
            return None
        return contributions.from_wage_base(scheme, period=period, wage_base_fen=wage_base)
    for column in ("employer", "personal"):
        if not f.values[column]:
            f.fail(column, "is blank: give employer and personal both, or neither")
    if employer is None or personal is None:
        return None
    return contributions.from_amounts(
        scheme,
        period=period,
        wage_base_fen=wage_base,
        employer_fen=employer,
        personal_fen=personal,
        government_fen=government or 0,
    )


def _resident(
    f: _Fields,
    scheme: Scheme,
    period: str,
    wage_base: int | None,
    employer: int | None,
    personal: int | None,
    government: int | None,
) -> Contribution | None:
    if wage_base:
        f.fail("wage_base", "must be blank: resident schemes have no wage base")
    if employer:
        f.fail("employer", "must be blank: resident schemes have no employer share")
    if not f.values["personal"]:
        f.fail("personal", "is blank (the resident's yearly amount)")
    if personal is None or not _YEAR.fullmatch(period):
        return None
    return contributions.resident(
        scheme, year=int(period), personal_fen=personal, government_fen=government or 0
    )
