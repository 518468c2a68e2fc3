"""Synthetic bureau files (N citizens x M months) for tests, demos and the import benchmark.

Written row by row straight to disk, so a file of millions of rows costs no memory. The
content is deterministic for a given size and seed, and every row is valid:

* even-numbered citizens are employees: enrolled in ``employee_medical`` and
  ``employee_pension``; each month one row per scheme, with a wage base of their own (every
  other employee's medical row states the amounts, the rest leave them to be computed);
* odd-numbered citizens are residents: enrolled in ``resident_medical`` and
  ``resident_pension``; one yearly row per scheme in each January of the window (or in the
  window's first month).

Citizen ids look like the platform's pseudonyms (``cz_`` + 26 base32 characters) and are
derived from the seed and the citizen's number.
"""

from __future__ import annotations

import base64
import csv
import hashlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from social_security.benefits import contributions
from social_security.importer.formats import HEADERS, FileKind
from social_security.schemes import Scheme

RESIDENT_MEDICAL_PERSONAL_FEN = 40_000  # 400 yuan a year
RESIDENT_MEDICAL_SUBSIDY_FEN = 67_000  # 670 yuan a year
RESIDENT_PENSION_PERSONAL_FEN = 50_000  # one of the yearly grades a resident may choose
RESIDENT_PENSION_SUBSIDY_FEN = 6_000


def pseudonym(number: int, *, seed: int = 0) -> str:
    """A stable, pseudonym-shaped citizen id for synthetic citizen ``number``."""
    digest = hashlib.sha256(f"onecard-synthetic:{seed}:{number}".encode()).digest()
    return "cz_" + base64.b32encode(digest[:16]).decode()[:26].lower()


def wage_base_fen(number: int, *, seed: int = 0) -> int:
    """A monthly wage base between 3,000 and 30,000 yuan, fixed per citizen."""
    return 300_000 + (number * 7_919 + seed * 104_729) % 2_700_001


def months(first: str, count: int) -> Iterator[tuple[int, int]]:
    """``count`` (year, month) pairs from ``first`` (YYYY-MM)."""
    year, month = (int(part) for part in first.split("-"))
    for _ in range(count):
        yield year, month
        month += 1
        if month == 13:
            year, month = year + 1, 1


def write_enrolments(
    path: Path, *, citizens: int, start: date = date(2025, 1, 1), seed: int = 0
) -> int:
    """Two open enrolments per citizen; returns the number of data rows written."""
    rows = 0
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADERS[FileKind.ENROLMENTS])
        for number in range(citizens):
            citizen = pseudonym(number, seed=seed)
            employee = number % 2 == 0
            schemes = (
                (Scheme.EMPLOYEE_MEDICAL, Scheme.EMPLOYEE_PENSION)
                if employee
                else (Scheme.RESIDENT_MEDICAL, Scheme.RESIDENT_PENSION)
            )
            employer = f"Synthetic Employer {number % 97}" if employee else ""
            assistance = "dibao" if not employee and number % 10 == 1 else ""
            for scheme in schemes:
                writer.writerow(
                    (citizen, scheme.value, start.isoformat(), "", "active", employer, assistance)
                )
                rows += 1
    return rows


def write_contributions(
    path: Path, *, citizens: int, months_count: int, first_month: str = "2025-01", seed: int = 0
) -> int:
    """The contributions of ``citizens`` over ``months_count`` months, month by month as the
    bureau exports them; returns the number of data rows written."""
    rows = 0
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADERS[FileKind.CONTRIBUTIONS])
        for index, (year, month) in enumerate(months(first_month, months_count)):
            period = f"{year:04d}-{month:02d}"
            paid_on = date(year, month, 15).isoformat()
            for number in range(citizens):
                citizen = pseudonym(number, seed=seed)
                if number % 2 == 0:
                    base = wage_base_fen(number, seed=seed)
                    stated = contributions.employee_medical(period=period, wage_base_fen=base)
                    if number % 4 == 0:
                        amounts = (str(stated.employer_fen), str(stated.personal_fen), "0")
                    else:
                        amounts = ("", "", "")
                    writer.writerow(
                        (citizen, Scheme.EMPLOYEE_MEDICAL.value, period, base, *amounts, paid_on)
                    )
                    writer.writerow(
                        (citizen, Scheme.EMPLOYEE_PENSION.value, period, base, "", "", "", paid_on)
                    )
                    rows += 2
                elif month == 1 or index == 0:
                    for scheme, personal, subsidy in (
                        (
                            Scheme.RESIDENT_MEDICAL,
                            RESIDENT_MEDICAL_PERSONAL_FEN,
                            RESIDENT_MEDICAL_SUBSIDY_FEN,
                        ),
                        (
                            Scheme.RESIDENT_PENSION,
                            RESIDENT_PENSION_PERSONAL_FEN,
                            RESIDENT_PENSION_SUBSIDY_FEN,
                        ),
                    ):
                        writer.writerow(
                            (
                                citizen,
                                scheme.value,
                                f"{year:04d}",
                                "",
                                "",
                                personal,
                                subsidy,
                                paid_on,
                            )
                        )
                        rows += 1
    return rows
