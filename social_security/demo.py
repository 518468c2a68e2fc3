"""The demo province's social security: its designated institutions, the demo citizens'
enrolments and contributions (loaded as the bureau would, through the CSV import), a pension
paid to the retired citizen, and bills to settle at the hospital's counter.

Runs after identity's seeder (``onecard up --demo``, entry points in name order) and reads
``var/demo/citizens.json`` for the citizens' pseudonymous ids. Everything is demo data.
"""

from __future__ import annotations

import csv
import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.importer.cli import open_database
from social_security.importer.formats import HEADERS, FileKind
from social_security.importer.run import import_file
from social_security.models import BenefitPaymentRow, ProviderRow
from social_security.schemes import Scheme
from social_security.settings import SocialSecuritySettings

# identity/demo.py's facilities (a terminal's act.facility is its facility's name).
HOSPITAL = "Provincial People's Hospital"
PHARMACY = "Yongkang Road Pharmacy"
EMPLOYER = "Hangzhou Westlake Electronics Co."
CHINA = timezone(timedelta(hours=8))


async def seed(*, base_url: str, var_dir: Path) -> list[str]:
    demo = var_dir / "demo"
    marker = demo / "social-security-seeded"
    if not marker.exists():
        citizens = {
            c["slug"]: c["pseudonym"] for c in json.loads((demo / "citizens.json").read_text())
        }
        today = datetime.now(CHINA).date()
        bureau = demo / "bureau"
        bureau.mkdir(parents=True, exist_ok=True)
        _write(bureau / "enrolments.csv", FileKind.ENROLMENTS, _enrolments(citizens, today))
        _write(
            bureau / "contributions.csv", FileKind.CONTRIBUTIONS, _contributions(citizens, today)
        )
        db = await open_database(SocialSecuritySettings())
        try:
            async with db.unit_of_work() as session:
                await _reference(session, citizens["wang-fang"], today)
            for name in ("enrolments.csv", "contributions.csv"):
                report = await import_file(db, bureau / name)
                if report.rows_failed:
                    raise RuntimeError(
                        f"the demo bureau file {name} has refused rows: see {report.errors_path}"
                    )
        finally:
            await db.dispose()
        bills = demo / "bills"
        bills.mkdir(exist_ok=True)
        for file_name, bill in _bills(today).items():
            (bills / file_name).write_text(json.dumps(bill, indent=2) + "\n")
        marker.write_text("the demo social security is seeded; delete var/ to start over\n")
    return [
        "Settle a hospital bill at the billing counter with Zhang Wei's card (PIN 123456):",
        "  .venv/bin/onecard terminal tap --terminal var/demo/terminals/hospital-counter.json "
        "--card var/demo/cards/zhang-wei.card --pin "
        "--settle var/demo/bills/zhang-wei-appendectomy.json",
        "Then see the split and the balances in Zhang Wei's app:",
        "  .venv/bin/onecard app benefits --card var/demo/cards/zhang-wei.card",
    ]


def _write(path: Path, kind: FileKind, rows: list[tuple[Any, ...]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADERS[kind])
        writer.writerows(rows)


def _enrolments(citizens: dict[str, str], today: date) -> list[tuple[Any, ...]]:
    zhang, li, wang = citizens["zhang-wei"], citizens["li-na"], citizens["wang-fang"]
    year_start, year_end = date(today.year, 1, 1), date(today.year, 12, 31)
    return [
        # An employee since 2005: employee medical insurance (with a personal account) and pension.
        (zhang, Scheme.EMPLOYEE_MEDICAL.value, "2005-07-01", "", "active", EMPLOYER, ""),
        (zhang, Scheme.EMPLOYEE_PENSION.value, "2005-07-01", "", "active", EMPLOYER, ""),
        # A self-employed resident: enrolled year by year.
        (
            li,
            Scheme.RESIDENT_MEDICAL.value,
            year_start.isoformat(),
            year_end.isoformat(),
            "active",
            "",
            "",
        ),
        (li, Scheme.RESIDENT_PENSION.value, "2015-01-01", "", "active", "", ""),
        # Retired, on the minimum living guarantee (dibao): medical assistance after insurance.
        (
            wang,
            Scheme.RESIDENT_MEDICAL.value,
            year_start.isoformat(),
            year_end.isoformat(),
            "active",
            "",
            "dibao",
        ),
        (wang, Scheme.RESIDENT_PENSION.value, "2009-10-01", "", "active", "", ""),
    ]


def _contributions(citizens: dict[str, str], today: date) -> list[tuple[Any, ...]]:
    zhang, li, wang = citizens["zhang-wei"], citizens["li-na"], citizens["wang-fang"]
    rows: list[tuple[Any, ...]] = []
    # Zhang Wei: the last 18 months, on a wage base of 9,500 yuan (the amounts computed from it).
    month = date(today.year, today.month, 1)
    for _ in range(18):
        month = (month - timedelta(days=1)).replace(day=1)
        period = f"{month.year:04d}-{month.month:02d}"
        paid_on = month.replace(day=15).isoformat()
        for scheme in (Scheme.EMPLOYEE_MEDICAL, Scheme.EMPLOYEE_PENSION):
            rows.append((zhang, scheme.value, period, 950_000, "", "", "", paid_on))
    # Li Na and Wang Fang: this year's resident contributions (personal share and subsidy).
    year, paid_on = str(today.year), date(today.year, 1, 10).isoformat()
    rows.append((li, Scheme.RESIDENT_MEDICAL.value, year, "", "", 40_000, 0, paid_on))
    rows.append((li, Scheme.RESIDENT_PENSION.value, year, "", "", 200_000, 6_000, paid_on))
    rows.append((wang, Scheme.RESIDENT_MEDICAL.value, year, "", "", 40_000, 0, paid_on))
    return rows


async def _reference(session: AsyncSession, retired: str, today: date) -> None:
    await session.merge(ProviderRow(facility=HOSPITAL, level=3, kind="hospital"))
    await session.merge(ProviderRow(facility=PHARMACY, level=1, kind="pharmacy"))
    # Wang Fang's resident pension, paid monthly this year.
    for month in range(1, today.month + 1):
        await session.merge(
            BenefitPaymentRow(
                citizen=retired,
                scheme=Scheme.RESIDENT_PENSION.value,
                period=f"{today.year:04d}-{month:02d}",
                amount_fen=31_500,
                paid_on=date(today.year, month, 5),
            )
        )


def _bills(today: date) -> dict[str, dict[str, Any]]:
    def bill(bill_id: str, visit: str, *lines: tuple[str, int, int]) -> dict[str, Any]:
        return {
            "bill_id": bill_id,
            "visit_type": visit,
            "service_date": today.isoformat(),
            "lines": [
                {"sequence": i, "code": code, "quantity": qty, "unit_price_fen": price}
                for i, (code, qty, price) in enumerate(lines, start=1)
            ],
        }

    stamp = today.strftime("%Y%m%d")
    return {
        # Five days in hospital for an appendectomy: Class A care, a Class B antibiotic (10%
        # first self-pay), a CT scan (Class B), and a VIP ward day (Class C, all self-paid).
        "zhang-wei-appendectomy.json": bill(
            f"ZY-{stamp}-0001",
            "inpatient",
            ("FA07", 1, 150_000),
            ("FA01", 5, 6_000),
            ("FA03", 5, 3_000),
            ("FA04", 2, 2_500),
            ("XB02", 6, 1_500),
            ("FB01", 1, 22_000),
            ("FC03", 1, 50_000),
        ),
        "li-na-outpatient.json": bill(
            f"MZ-{stamp}-0002",
            "outpatient",
            ("FA04", 1, 2_500),
            ("XA01", 2, 1_200),
            ("XC01", 1, 3_800),
        ),
    }
