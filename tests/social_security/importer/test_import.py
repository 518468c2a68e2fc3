"""The bureau's bulk import: what lands in the database, what is refused and reported, and
that reruns and interrupted runs end where one clean run would."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from typer.testing import CliRunner

from services.kit.database import Database
from social_security.benefits import ledger
from social_security.importer import generate
from social_security.importer.cli import app as cli_app
from social_security.importer.cli import open_database
from social_security.importer.formats import FormatError
from social_security.importer.run import Stage, import_file
from social_security.models import AccountEntryRow, AccountRow, ContributionRow, EnrolmentRow
from social_security.schemes import AccountKind
from social_security.settings import SocialSecuritySettings

ENROLMENT_HEADER = "citizen,scheme,start_date,end_date,status,employer,assistance\n"
CONTRIBUTION_HEADER = "citizen,scheme,period,wage_base,employer,personal,government,paid_on\n"
NATIONAL_ID = "11010519491231002X"  # the GB 11643-1999 standard's own example number


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _db(app: FastAPI) -> Database:
    db: Database = app.state.runtime.db
    return db


async def _balance(session: AsyncSession, citizen: str, kind: AccountKind) -> int:
    session.expire_all()
    return await ledger.balance(session, citizen=citizen, kind=kind)


def _errors(path: Path) -> list[list[str]]:
    with path.with_name(path.name + ".errors.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _fields(row: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, repr(value)) for name, value in row.items()))


async def _state(db: Database) -> dict[str, Any]:
    """Everything an import writes, comparable between two databases."""
    async with db.sessionmaker() as session:
        enrolments = (await session.exec(select(EnrolmentRow))).all()
        contributions = (await session.exec(select(ContributionRow))).all()
        accounts = (await session.exec(select(AccountRow))).all()
        entries = (await session.exec(select(AccountEntryRow))).all()
    return {
        "enrolments": sorted(_fields(r.model_dump()) for r in enrolments),
        "contributions": sorted(_fields(r.model_dump()) for r in contributions),
        "accounts": sorted((a.citizen, a.kind, a.balance_fen) for a in accounts),
        "entries": sorted(
            (e.citizen, e.kind, e.reference, e.amount_fen, e.balance_after_fen) for e in entries
        ),
    }


async def test_a_small_file_of_each_format_loads(
    ss_app: FastAPI, ss_session: AsyncSession, tmp_path: Path
) -> None:
    enrolments = _write(
        tmp_path / "enrolments.csv",
        ENROLMENT_HEADER
        + "cz_a,employee_medical,2025-01-01,,active,Acme Ltd,\n"
        + "cz_b,resident_medical,2024-01-01,2025-12-31,ended,,dibao\n",
    )
    report = await import_file(_db(ss_app), enrolments)
    assert (report.kind, report.rows_done, report.rows_failed) == ("enrolments", 2, 0)
    assert report.errors_path is None
    rows = (await ss_session.exec(select(EnrolmentRow).order_by(col(EnrolmentRow.citizen)))).all()
    assert [(r.citizen, r.status, r.employer, r.assistance) for r in rows] == [
        ("cz_a", "active", "Acme Ltd", None),
        ("cz_b", "ended", None, "dibao"),
    ]

    paid = _write(
        tmp_path / "contributions.csv",
        CONTRIBUTION_HEADER
        # 10,000 yuan: employer 600, employee 200, medical account 380 yuan.
        + "cz_a,employee_medical,2026-01,1000000,,,,2026-01-15\n"
        + "cz_a,employee_pension,2026-01,1000000,,,,2026-01-15\n"
        + "cz_b,resident_medical,2026,,,40000,67000,2026-01-10\n"
        + "cz_b,resident_pension,2026,,,50000,6000,2026-01-10\n",
    )
    report = await import_file(_db(ss_app), paid)
    assert (report.rows_done, report.rows_loaded, report.rows_failed) == (4, 4, 0)
    assert report.credited_fen == 38_000 + 80_000 + 56_000
    medical = await ss_session.get(ContributionRow, ("cz_a", "employee_medical", "2026-01"))
    assert medical is not None
    assert (medical.employer_fen, medical.personal_fen, medical.account_credit_fen) == (
        60_000,
        20_000,
        38_000,
    )
    assert await _balance(ss_session, "cz_a", AccountKind.MEDICAL) == 38_000
    assert await _balance(ss_session, "cz_a", AccountKind.PENSION) == 80_000
    assert await _balance(ss_session, "cz_b", AccountKind.PENSION) == 56_000
    assert await _balance(ss_session, "cz_b", AccountKind.MEDICAL) == 0  # residents have none
    entry = (
        await ss_session.exec(
            select(AccountEntryRow).where(
                col(AccountEntryRow.citizen) == "cz_a", col(AccountEntryRow.kind) == "medical"
            )
        )
    ).one()
    assert (entry.reference, entry.reason) == (
        "contribution:employee_medical:2026-01",
        "contribution",
    )


async def test_bad_rows_are_reported_by_line_and_reason_and_good_rows_still_load(
    ss_app: FastAPI, ss_session: AsyncSession, tmp_path: Path
) -> None:
    path = _write(
        tmp_path / "paid.csv",
        CONTRIBUTION_HEADER
        + "cz_ok1,employee_medical,2026-02,500000,,,,2026-02-15\n"  # line 2
        + "cz_bad,employee_medical,2026-02,-500000,,,,2026-02-15\n"  # 3: negative
        + "cz_bad,employee_medical,2026-13,500000,12.50,,,2026-02-30\n"  # 4: three faults
        + "cz_bad,employee_medicl,2026-02,500000,,,,2026-02-15\n"  # 5: unknown scheme
        + "cz_bad,resident_medical,2026,100,,400,,2026-02-15\n"  # 6: a resident's wage base
        + "\n"  # 7: blank lines are not rows
        + "cz_bad,employee_pension,2026-02\n"  # 8: too few fields
        + "cz_ok2,resident_pension,2026,,,30000,3000,2026-03-01\n",  # 9
    )
    report = await import_file(_db(ss_app), path, chunk_rows=3)
    assert (report.rows_done, report.rows_failed, report.rows_loaded) == (7, 5, 2)
    rows = _errors(path)
    assert rows[0] == ["line", "column", "reason"]
    by_line: dict[str, list[tuple[str, str]]] = {}
    for line, column, reason in rows[1:]:
        by_line.setdefault(line, []).append((column, reason))
    assert sorted(by_line, key=int) == ["3", "4", "5", "6", "8"]
    assert by_line["3"] == [("wage_base", "is negative; amounts are whole fen, 0 or more")]
    assert {column for column, _ in by_line["4"]} == {"period", "employer", "paid_on", "personal"}
    assert "'12.50' is not a whole number of fen" in dict(by_line["4"])["employer"]
    assert "'employee_medicl' is not one of" in by_line["5"][0][1]
    assert by_line["6"][0][0] == "wage_base"
    assert by_line["8"] == [("", "expected 8 fields, found 3")]
    assert (
        await _balance(ss_session, "cz_ok1", AccountKind.MEDICAL) == 19_000  # 2 % + 30 % of 6 %
    )
    assert await _balance(ss_session, "cz_ok2", AccountKind.PENSION) == 33_000
    stored = (await ss_session.exec(select(ContributionRow))).all()
    assert sorted(r.citizen for r in stored) == ["cz_ok1", "cz_ok2"]


async def test_a_rerun_imports_nothing_twice(
    ss_app: FastAPI, ss_session: AsyncSession, tmp_path: Path
) -> None:
    rows = "cz_r,employee_medical,2026-03,1000000,,,,2026-03-15\n"
    first = _write(tmp_path / "march.csv", CONTRIBUTION_HEADER + rows)
    await import_file(_db(ss_app), first)
    assert await _balance(ss_session, "cz_r", AccountKind.MEDICAL) == 38_000

    again = await import_file(_db(ss_app), first)
    assert again.already_finished
    assert await _balance(ss_session, "cz_r", AccountKind.MEDICAL) == 38_000

    # Another export repeating March beside April: only April is new.
    april = "cz_r,employee_medical,2026-04,1000000,,,,2026-04-15\n"
    both = _write(tmp_path / "march-april.csv", CONTRIBUTION_HEADER + rows + april)
    report = await import_file(_db(ss_app), both)
    assert (report.rows_loaded, report.rows_unchanged, report.credited_fen) == (1, 1, 38_000)
    assert await _balance(ss_session, "cz_r", AccountKind.MEDICAL) == 76_000
    entries = (await ss_session.exec(select(AccountEntryRow))).all()
    assert len(entries) == 2

    # The same period with other amounts is refused, not credited a second time.
    changed = _write(
        tmp_path / "march-corrected.csv",
        CONTRIBUTION_HEADER + "cz_r,employee_medical,2026-03,1200000,,,,2026-03-15\n",
    )
    report = await import_file(_db(ss_app), changed)
    assert (report.rows_failed, report.credited_fen) == (1, 0)
    assert "already in the database" in _errors(changed)[1][2]
    assert await _balance(ss_session, "cz_r", AccountKind.MEDICAL) == 76_000


class Killed(Exception):
    pass


def _bureau_file(directory: Path) -> Path:
    """A generated month-by-month export with two bad rows among the good ones."""
    directory.mkdir()
    path = directory / "bureau.csv"
    generate.write_contributions(path, citizens=6, months_count=3, first_month="2025-12")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(4, "cz_x,employee_medical,2026-01,-1,,,,2026-01-15\n")
    lines.insert(12, f"{NATIONAL_ID},employee_medical,2026-01,100000,,,,2026-01-15\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("stage", ["staged", "committed"])
async def test_an_interrupted_run_resumes_and_ends_like_an_uninterrupted_one(
    stage: Stage,
    ss_app: FastAPI,
    ss_session: AsyncSession,
    make_settings: Callable[..., Any],
    tmp_path: Path,
) -> None:
    interrupted = _bureau_file(tmp_path / "interrupted")

    def stop_at_chunk_3(number: int, when: Stage) -> None:
        if number == 3 and when == stage:
            raise Killed  # as a killed process would stop, before or after the commit

    with pytest.raises(Killed):
        await import_file(_db(ss_app), interrupted, chunk_rows=4, on_chunk=stop_at_chunk_3)
    resumed = await import_file(_db(ss_app), interrupted, chunk_rows=4)
    # "staged": chunk 3 was rolled back, so rows 9-12 are read again; "committed": they are not.
    assert resumed.resumed_after == (8 if stage == "staged" else 12)
    assert resumed.rows_failed == 2

    clean = _bureau_file(tmp_path / "clean")
    other = make_settings(SocialSecuritySettings, var_dir=tmp_path / "other-var")
    reference_db = await open_database(other)
    try:
        complete = await import_file(reference_db, clean, chunk_rows=4)
        assert await _state(_db(ss_app)) == await _state(reference_db)
    finally:
        await reference_db.dispose()
    assert (resumed.rows_done, resumed.rows_failed) == (complete.rows_done, complete.rows_failed)
    assert _errors(interrupted) == _errors(clean)  # each refused row reported once
    assert len(_errors(clean)) == 3


async def test_a_national_id_number_is_refused_and_never_repeated(
    ss_app: FastAPI, ss_session: AsyncSession, tmp_path: Path
) -> None:
    path = _write(
        tmp_path / "ids.csv",
        ENROLMENT_HEADER
        + f"{NATIONAL_ID},employee_medical,2025-01-01,,active,,\n"
        + f"{NATIONAL_ID.lower()},employee_medical,2025-01-01,,active,,\n"
        + "110105491231002,employee_medical,2025-01-01,,active,,\n"  # first generation, 15
        + "cz_fine,employee_medical,2025-01-01,,active,,\n"
        + f"cz_other,{NATIONAL_ID},2025-01-01,,active,,\n",  # in the wrong column
    )
    report = await import_file(_db(ss_app), path)
    assert (report.rows_loaded, report.rows_failed) == (1, 4)
    text = path.with_name("ids.csv.errors.csv").read_text(encoding="utf-8")
    assert "national ID" in text
    assert NATIONAL_ID[:15] not in text
    assert NATIONAL_ID.lower()[:15] not in text
    assert "110105491231002" not in text
    citizens = (await ss_session.exec(select(col(EnrolmentRow.citizen)))).all()
    assert list(citizens) == ["cz_fine"]


async def test_a_file_without_a_known_header_loads_nothing(
    ss_app: FastAPI, ss_session: AsyncSession, tmp_path: Path
) -> None:
    path = _write(tmp_path / "x.csv", "citizen,scheme,when\ncz_a,employee_medical,2026\n")
    with pytest.raises(FormatError, match="not a known header"):
        await import_file(_db(ss_app), path)
    with pytest.raises(FormatError, match="empty"):
        await import_file(_db(ss_app), _write(tmp_path / "empty.csv", ""))
    latin = tmp_path / "gbk.csv"
    latin.write_bytes(
        CONTRIBUTION_HEADER.encode()
        + "cz_a,employee_medical,2026-01,1,,,,2026-01-01,单位\n".encode("gbk")
    )
    with pytest.raises(FormatError, match="line 2 is not valid utf-8-sig text"):
        await import_file(_db(ss_app), latin)


def test_the_command_imports_into_the_services_own_database(
    make_settings: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(SocialSecuritySettings)
    monkeypatch.setenv("ONECARD_ENVIRONMENT", "test")
    monkeypatch.setenv("ONECARD_VAR_DIR", str(settings.var_dir))
    monkeypatch.delenv("ONECARD_DATABASE_URL_SOCIAL_SECURITY", raising=False)
    if settings.database_url:
        monkeypatch.setenv("ONECARD_DATABASE_URL", settings.database_url)
        monkeypatch.setenv("ONECARD_DATABASE_SCHEMA", settings.database_schema)
    else:
        monkeypatch.delenv("ONECARD_DATABASE_URL", raising=False)
    enrolments = tmp_path / "enrolments.csv"
    paid = tmp_path / "paid.csv"
    runner = CliRunner()
    made = runner.invoke(
        cli_app, ["generate", str(enrolments), "--kind", "enrolments", "--citizens", "4"]
    )
    assert made.exit_code == 0, made.output
    made = runner.invoke(cli_app, ["generate", str(paid), "--citizens", "4", "--months", "2"])
    assert made.exit_code == 0, made.output

    result = runner.invoke(cli_app, ["import", str(enrolments)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli_app, ["import", str(paid)])
    assert result.exit_code == 0, result.output
    assert "this run loaded 12" in result.output  # 2 employees x 2 schemes x 2 months + 4
    again = runner.invoke(cli_app, ["import", str(paid)])
    assert "already imported" in again.output.replace("\n", " ")

    bad = _write(tmp_path / "bad.csv", CONTRIBUTION_HEADER + "cz_a,employee_medical,x,,,,,\n")
    refused = runner.invoke(cli_app, ["import", str(bad)])
    assert refused.exit_code == 1
    # The console wraps long paths (a worker's tmp_path is long): compare without line breaks.
    assert "bad.csv.errors.csv" in refused.output.replace("\n", "")

    async def count() -> int:
        db = Database.for_settings(settings)
        try:
            async with db.sessionmaker() as session:
                return len((await session.exec(select(ContributionRow))).all())
        finally:
            await db.dispose()

    assert asyncio.run(count()) == 12
