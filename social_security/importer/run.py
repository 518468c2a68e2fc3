"""Streaming, resumable, idempotent import of one bureau CSV file (formats in ``formats``).

How a run goes:

1. The file is identified by the SHA-256 of its bytes: its :class:`ImportRunRow` says how many
   data rows earlier runs of the same file committed (``rows_done``: loaded or refused) and
   whether a run finished. A finished file is not read again.
2. The rows are read with the ``csv`` module, ``chunk_rows`` at a time; memory holds one
   chunk, whatever the size of the file.
3. Each chunk is one transaction: its records are upserted, the individual accounts credited,
   and the run's progress advanced, together. A run killed at any point leaves whole chunks
   committed, and the next run skips exactly those rows. The progress is advanced by
   compare-and-set (``WHERE rows_done = <what this run read>``), so two runs of one file at
   once cannot both load a chunk: the second stops with :class:`ImportConflict`.
4. Idempotent whatever the file: enrolments are upserted by primary key (the later row wins);
   a contribution already recorded with the same amounts is left as it is, and its account
   credit has the reference ``contribution:<scheme>:<period>`` (posted once,
   :mod:`social_security.benefits.ledger`). A contribution already recorded with *other*
   amounts is refused as a row error: its credit is already in the account, and corrections
   are the bureau's adjustment process, not a re-import.
5. Refused rows go to ``FILE.errors.csv`` beside the file (``line,column,reason``; the line
   where the row starts, 1 being the header). A chunk's errors are written and synced before
   its transaction commits; a resumed run first drops the errors of rows it will read again,
   so the report lists each refused row once. The report is removed when no row was refused.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, insert, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.kit.database import Database
from services.kit.sqltypes import utcnow
from social_security.benefits import ledger
from social_security.benefits.contributions import contribution_reference
from social_security.importer.formats import (
    BadRow,
    ContributionRecord,
    EnrolmentRecord,
    FieldError,
    FileKind,
    FormatError,
    Record,
    kind_of_header,
    parse_row,
)
from social_security.models import ContributionRow, EnrolmentRow, ImportRunRow

DEFAULT_CHUNK_ROWS = 2_000
ERROR_HEADER = ("line", "column", "reason")
_KEYS_PER_QUERY = 1_000  # 3 bound parameters per key: far below the drivers' limits
_READ_BLOCK = 1 << 20

Stage = Literal["staged", "committed"]
# Called with the chunk's number (1, 2, ...) when its rows are written but not yet committed
# ("staged") and once committed: what the CLI shows, and where a test can stop a run.
ChunkHook = Callable[[int, Stage], None]
# Called with (bytes read, file size) as the file is read.
Progress = Callable[[int, int], None]


class ImportConflict(RuntimeError):
    """Another run of the same file moved its progress meanwhile: this run stops."""


@dataclass
class ImportReport:
    file: Path
    kind: FileKind
    rows_done: int  # data rows dealt with, loaded or refused, over every run of this file
    rows_failed: int  # of which refused (over every run)
    resumed_after: int  # rows an earlier run had committed when this one started
    rows_loaded: int  # this run: rows inserted or upserted
    rows_unchanged: int  # this run: contributions already recorded with the same amounts
    credited_fen: int  # this run: total credited to individual accounts
    already_finished: bool
    errors_path: Path | None


@dataclass(frozen=True)
class _Line:
    number: int
    fields: list[str]


def errors_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".errors.csv")


def _identify(path: Path) -> tuple[str, int]:
    """The SHA-256 of the file's bytes (its identity across runs) and its size."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(_READ_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


async def import_file(
    db: Database,
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    encoding: str = "utf-8-sig",
    progress: Progress | None = None,
    on_chunk: ChunkHook | None = None,
) -> ImportReport:
    """Import ``path`` into the social-security database (see the module docstring)."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows is at least 1")
    digest, size = await asyncio.to_thread(_identify, path)
    errors_path = errors_path_for(path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise FormatError(f"{encoding!r} is not a known text encoding") from None
    with path.open("rb", buffering=0) as raw, io.BufferedReader(raw) as binary:
        reader = csv.reader(_decoded_lines(binary, encoding), strict=True)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise FormatError(f"line 1 cannot be read as CSV: {exc}") from None
        if header is None:
            raise FormatError("the file is empty: the first line names its format")
        kind = kind_of_header(header)
        run = await _start(db, digest=digest, file_name=path.name, kind=kind)
        report = ImportReport(
            file=path,
            kind=kind,
            rows_done=run.rows_done,
            rows_failed=run.rows_failed,
            resumed_after=run.rows_done,
            rows_loaded=0,
            rows_unchanged=0,
            credited_fen=0,
            already_finished=run.finished_at is not None,
            errors_path=errors_path if errors_path.exists() else None,
        )
        if report.already_finished:
            return report
        lines = _data_lines(reader)
        for _ in range(run.rows_done):
            next(lines)  # the same bytes (same digest): the same rows as the earlier run
        _restart_error_report(errors_path, keep_through_line=reader.line_num)
        number = 0
        while chunk := _take(lines, chunk_rows):
            number += 1
            await _load_chunk(
                db,
                digest=digest,
                kind=kind,
                chunk=chunk,
                report=report,
                errors_path=errors_path,
                number=number,
                on_chunk=on_chunk,
            )
            if progress is not None:
                progress(raw.tell(), size)
    async with db.sessionmaker() as session, session.begin():
        await session.exec(
            update(ImportRunRow)
            .where(col(ImportRunRow.digest) == digest)
            .values(finished_at=utcnow())
        )
    if report.rows_failed == 0:
        errors_path.unlink(missing_ok=True)
        report.errors_path = None
    else:
        report.errors_path = errors_path
    return report


def _decoded_lines(binary: Iterable[bytes], encoding: str) -> Iterator[str]:
    """The file's lines as text, decoded line by line so that a bad byte is placed exactly.

    Splitting the bytes at each newline byte is safe in UTF-8 and GBK/GB 18030 (both
    ASCII-compatible: a newline byte is never part of a multibyte character); the incremental
    decoder drops a UTF-8 byte-order mark once, at the start."""
    decoder = codecs.getincrementaldecoder(encoding)()
    for number, line in enumerate(binary, start=1):
        try:
            yield decoder.decode(line)
        except UnicodeDecodeError:
            raise FormatError(
                f"line {number} is not valid {encoding} text (give --encoding, e.g. gbk)"
            ) from None


async def _start(db: Database, *, digest: str, file_name: str, kind: FileKind) -> ImportRunRow:
    """The file's run row, created on its first run."""
    async with db.sessionmaker() as session, session.begin():
        values = {
            "digest": digest,
            "file_name": file_name[:255],
            "kind": kind.value,
            "rows_done": 0,
            "rows_failed": 0,
            "started_at": utcnow(),
        }
        await session.exec(
            _dialect_insert(session, ImportRunRow)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["digest"])
        )
        result = await session.exec(select(ImportRunRow).where(col(ImportRunRow.digest) == digest))
        return result.one()


def _dialect_insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql if dialect == "postgresql" else sqlite).insert(table)


def _data_lines(reader: Any) -> Iterator[_Line]:
    """The non-blank rows after the header, each with the line it starts on."""
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader cannot find the next row reliably: stop here; the committed chunks
            # stay, and a corrected file is a new file.
            raise FormatError(f"line {start} cannot be read as CSV: {exc}") from None
        if fields and any(field.strip() for field in fields):
            yield _Line(start, fields)


def _take(lines: Iterator[_Line], n: int) -> list[_Line]:
    chunk: list[_Line] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == n:
            break
    return chunk


def _restart_error_report(path: Path, *, keep_through_line: int) -> None:
    """Keep the errors of rows already committed; drop those of rows about to be re-read."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(ERROR_HEADER)
        if keep_through_line > 1 and path.exists():
            with path.open(newline="", encoding="utf-8") as previous:
                rows = csv.reader(previous)
                next(rows, None)
                for row in rows:
                    if row and row[0].isdigit() and int(row[0]) <= keep_through_line:
                        writer.writerow(row)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _append_errors(path: Path, errors: list[tuple[int, FieldError]]) -> None:
    if not errors:
        return
    with path.open("a", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerows((line, e.column, e.reason) for line, e in errors)
        out.flush()
        os.fsync(out.fileno())


async def _load_chunk(
    db: Database,
    *,
    digest: str,
    kind: FileKind,
    chunk: list[_Line],
    report: ImportReport,
    errors_path: Path,
    number: int,
    on_chunk: ChunkHook | None,
) -> None:
    errors: list[tuple[int, FieldError]] = []
    records: list[tuple[int, Record]] = []
    for line in chunk:
        try:
            records.append((line.number, parse_row(kind, line.fields)))
        except BadRow as bad:
            errors.extend((line.number, e) for e in bad.errors)
    async with db.sessionmaker() as session, session.begin():
        # Progress first: it takes the run's row lock (and SQLite's write lock), and only one
        # run can move it from where this one read it.
        moved = cast(
            CursorResult[Any],
            await session.exec(
                update(ImportRunRow)
                .where(
                    col(ImportRunRow.digest) == digest,
                    col(ImportRunRow.rows_done) == report.rows_done,
                )
                .values(rows_done=report.rows_done + len(chunk))
            ),
        )
        if moved.rowcount != 1:
            raise ImportConflict(
                "another import of this file is running (its progress moved); this one stops"
            )
        if kind is FileKind.ENROLMENTS:
            loaded, unchanged, credited = await _upsert_enrolments(
                session, [(n, r) for n, r in records if isinstance(r, EnrolmentRecord)]
            )
        else:
            loaded, unchanged, credited = await _insert_contributions(
                session, [(n, r) for n, r in records if isinstance(r, ContributionRecord)], errors
            )
        failed = len({line for line, _ in errors})
        if failed:
            await session.exec(
                update(ImportRunRow)
                .where(col(ImportRunRow.digest) == digest)
                .values(rows_failed=report.rows_failed + failed)
            )
        errors.sort(key=lambda item: item[0])
        _append_errors(errors_path, errors)
        if on_chunk is not None:
            on_chunk(number, "staged")
    report.rows_done += len(chunk)
    report.rows_failed += failed
    report.rows_loaded += loaded
    report.rows_unchanged += unchanged
    report.credited_fen += credited
    if on_chunk is not None:
        on_chunk(number, "committed")


async def _upsert_enrolments(
    session: AsyncSession, records: list[tuple[int, EnrolmentRecord]]
) -> tuple[int, int, int]:
    """Upsert the enrolments by primary key; returns (loaded, unchanged, credited fen)."""
    latest: dict[tuple[str, str, date], EnrolmentRecord] = {}
    for _, record in records:
        latest[record.key] = record  # the file is in time order: the later row wins
    rows = [record.row().model_dump() for record in latest.values()]
    if rows:
        statement = _dialect_insert(session, EnrolmentRow)
        changed = ("end_date", "status", "employer", "assistance")
        await session.exec(
            statement.on_conflict_do_update(
                index_elements=["citizen", "scheme", "start_date"],
                set_={name: getattr(statement.excluded, name) for name in changed},
            ),
            params=rows,
        )
    return len(records), 0, 0


_COMPARED = ("wage_base_fen", "employer_fen", "personal_fen", "government_fen", "paid_on")


def _fingerprint(values: dict[str, Any]) -> tuple[Any, ...]:
    """What must match for a row already recorded to count as this one."""
    return tuple(values[name] for name in _COMPARED)


async def _insert_contributions(
    session: AsyncSession,
    records: list[tuple[int, ContributionRecord]],
    errors: list[tuple[int, FieldError]],
) -> tuple[int, int, int]:
    """Insert the new contributions and credit their accounts; refuse changed ones.

    Returns (loaded, unchanged, credited fen); refusals are appended to ``errors``. Rows are
    handled as plain dicts and one executemany: an ORM object per row would cost more than
    the database does."""
    seen = await _existing_contributions(session, [r.key for _, r in records])
    first_line: dict[tuple[str, str, str], int] = {}
    new: dict[tuple[str, str, str], tuple[ContributionRecord, dict[str, Any]]] = {}
    unchanged = 0
    for line, record in records:
        key, values = record.key, record.values()
        earlier = seen.get(key)
        if earlier is None:
            seen[key] = _fingerprint(values)
            first_line[key] = line
            new[key] = (record, values)
        elif earlier == _fingerprint(values):
            unchanged += 1
        else:
            where = f"line {first_line[key]}" if key in first_line else "the database"
            reason = (
                "a contribution with other amounts for this citizen, scheme and period is "
                f"already in {where}; corrections are not imported"
            )
            errors.append((line, FieldError("", reason)))
    if new:
        await session.exec(insert(ContributionRow), params=[values for _, values in new.values()])
    movements = [
        ledger.Movement(
            citizen=record.citizen,
            kind=kind,
            amount_fen=record.contribution.account_credit_fen,
            reason="contribution",
            reference=contribution_reference(
                record.contribution.scheme, record.contribution.period
            ),
        )
        for record, _ in new.values()
        if (kind := record.contribution.account_kind) is not None
        and record.contribution.account_credit_fen > 0
    ]
    posted = await ledger.post(session, movements, at=utcnow())
    credited = sum(p.movement.amount_fen for p in posted if p.new)
    return len(new), unchanged, credited


async def _existing_contributions(
    session: AsyncSession, keys: list[tuple[str, str, str]]
) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    """The fingerprints of the contributions already recorded under these keys."""
    unique = sorted(set(keys))
    found: dict[tuple[str, str, str], tuple[Any, ...]] = {}
    for start in range(0, len(unique), _KEYS_PER_QUERY):
        condition: Any = tuple_(
            col(ContributionRow.citizen), col(ContributionRow.scheme), col(ContributionRow.period)
        ).in_(unique[start : start + _KEYS_PER_QUERY])
        result = await session.exec(select(ContributionRow).where(condition))
        found.update(
            {
                (r.citizen, r.scheme, r.period): _fingerprint(
                    {name: getattr(r, name) for name in _COMPARED}
                )
                for r in result.all()
            }
        )
    return found
