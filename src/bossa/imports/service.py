"""Bulk import and export: one function per use case.

An import run: hash the file (its SHA-256 names the job, so the same file run again is
the same job); stage it with COPY into a temporary table of this session; check every
row set-wise in SQL (types, required values, bounds, repeats in the file, references,
keys that exist already) and keep the rejections with the job; write the error file;
then apply the good rows through the owning module's published import function, a
chunk per transaction that also moves the job's position, or everything in one
transaction with all-or-nothing. Killed at any point, the next run of the same file
starts after the last committed chunk: nothing is applied twice.

Each run holds one pooled connection for its whole life (the staging tables are that
session's), and a session advisory lock on the job so two runs of one file cannot
interleave; both go with the connection if the process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import psycopg

from bossa.db import Conn, Pool, translate
from bossa.errors import Conflict, InvalidInput, NotFound, UserError
from bossa.imports import store
from bossa.imports.adapters import files
from bossa.imports.metrics import JOBS, ROWS
from bossa.imports.models import (
    ExportResult,
    FileFormat,
    ImportJob,
    ImportOutcome,
    JobStatus,
    Kind,
    Progress,
    RowError,
    format_of,
    kind_of,
    map_header,
)
from bossa.imports.settings import ImportSettings
from bossa.logs import get_logger

__all__ = [
    "ERROR_FILE_COLUMNS",
    "ImportRequest",
    "export_file",
    "import_file",
    "job",
    "job_errors",
    "jobs",
]

log = get_logger("bossa.imports")

#: The error file's header.
ERROR_FILE_COLUMNS = ("line", "field", "reason", "raw")
#: Rows fetched at a time when writing the error file.
_ERROR_PAGE = 10_000

ProgressFn = Callable[[Progress], None]


@dataclass(frozen=True)
class ImportRequest:
    kind: str
    path: Path
    #: csv or jsonl; None: from the file's extension.
    format: str | None = None
    all_or_nothing: bool = False
    #: Where rejected rows go; None: FILE.errors.csv beside the file; no file is written
    #: when `write_error_file` is false (the API answers with the errors instead).
    errors_path: Path | None = None
    write_error_file: bool = True
    #: The name recorded with the job (the API's upload has no path of its own).
    file_name: str | None = None


def _async(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return gen()


def _readable(path: Path) -> int:
    try:
        info = path.stat()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", field="file") from None
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file", field="file")
    if not os.access(path, os.R_OK):
        raise InvalidInput(f"cannot read {path}: permission denied", field="file")
    return info.st_size


def _error_path(request: ImportRequest) -> Path:
    return request.errors_path or request.path.with_name(request.path.name + ".errors.csv")


def _columns(
    kind: Kind, fmt: FileFormat, path: Path, settings: ImportSettings
) -> tuple[tuple[str, ...], int]:
    if fmt is FileFormat.JSONL:
        return kind.names, 0
    try:
        header, offset = files.header_of(path, max_line_bytes=settings.max_line_bytes)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="file") from None
    return map_header(kind, header), offset


async def import_file(
    pool: Pool,
    request: ImportRequest,
    *,
    actor: str,
    settings: ImportSettings,
    progress: ProgressFn | None = None,
) -> ImportOutcome:
    """Import one file (see the module's docstring); the outcome says what was applied
    and rejected. Usage mistakes (unknown kind, unreadable file, a header naming unknown
    columns) are `UserError`s before anything is staged."""
    try:
        return await _import_file(pool, request, actor=actor, settings=settings, progress=progress)
    except OSError as exc:
        # The file went away or became unreadable while it was being read.
        raise InvalidInput(
            f"cannot read {request.path}: {exc.strerror or exc}", field="file"
        ) from None


async def _import_file(
    pool: Pool,
    request: ImportRequest,
    *,
    actor: str,
    settings: ImportSettings,
    progress: ProgressFn | None,
) -> ImportOutcome:
    started = time.monotonic()
    kind = kind_of(request.kind)
    fmt = format_of(request.path.name, request.format)
    size = _readable(request.path)
    columns, offset = _columns(kind, fmt, request.path, settings)
    report = progress or (lambda _: None)
    sha256 = await asyncio.to_thread(
        files.digest, request.path, lambda done: report(Progress("hashing", done, size, "bytes"))
    )
    file_name = (request.file_name or request.path.name)[:255] or "upload"
    async with pool.connection() as conn:
        job = await store.begin_job(
            conn,
            kind=kind.name.value,
            sha256=sha256,
            file_name=file_name,
            format=fmt,
            all_or_nothing=request.all_or_nothing,
            actor=actor,
        ) or await store.find_job(conn, kind.name.value, sha256)
        assert job is not None
        if not await store.lock_job(conn, job.id):
            raise Conflict(
                f"job {job.id} (this file) is being imported by another process", field="file"
            )
        try:
            if job.status is JobStatus.DONE:
                errors = await _error_file(conn, job, request)
                return ImportOutcome(
                    job=job,
                    already_done=True,
                    errors=errors,
                    seconds=time.monotonic() - started,
                )
            if request.all_or_nothing and job.position > 0:
                raise InvalidInput(
                    f"job {job.id} has applied this file up to line {job.position} in chunks "
                    "already: run it again without --all-or-nothing to finish it",
                    field="all_or_nothing",
                )
            return await _run(
                conn,
                job,
                kind,
                fmt,
                columns,
                offset,
                size,
                request,
                actor=actor,
                settings=settings,
                report=report,
                started=started,
                file_name=file_name,
            )
        finally:
            await _quietly(store.drop_stage(conn))
            await _quietly(store.unlock_job(conn, job.id))


async def _quietly(action: Awaitable[object]) -> None:
    # Cleaning up after a failure must not hide it (the connection may be the failure).
    with contextlib.suppress(psycopg.Error):
        await action


async def _run(
    conn: Conn,
    job: ImportJob,
    kind: Kind,
    fmt: FileFormat,
    columns: tuple[str, ...],
    offset: int,
    size: int,
    request: ImportRequest,
    *,
    actor: str,
    settings: ImportSettings,
    report: ProgressFn,
    started: float,
    file_name: str,
) -> ImportOutcome:
    job = await store.restart_job(
        conn, job.id, all_or_nothing=request.all_or_nothing, file_name=file_name
    )
    resumed_at = job.position
    if resumed_at:
        log.info("imports.resume", job=job.id, kind=kind.name.value, after_line=resumed_at)
    try:
        await store.create_stage(conn, kind, work_mem_mb=settings.work_mem_mb)
        await _stage(conn, kind, fmt, columns, offset, size, request.path, settings, report)
        await store.prepare_stage(conn)
        rows, last = await store.stage_span(conn)
        steps = len(store.check_statements(kind))
        report(Progress("checking", 0, steps, "checks"))
        await store.check_rows(
            conn,
            kind,
            after_line=job.position,
            step=lambda n: report(Progress("checking", n, steps, "checks")),
        )
        async with conn.transaction():
            await conn.execute(
                store.QUERIES["forget_errors_after"], {"id": job.id, "position": job.position}
            )
            await store.save_errors(conn, job.id, kind, fmt, columns)
            job = await store.checked(conn, job.id, rows)
        errors = await _error_file(conn, job, request)
        if job.rejected:
            ROWS.labels(kind.name.value, "rejected").inc(job.rejected)
            log.warning(
                "imports.rejected_rows",
                job=job.id,
                kind=kind.name.value,
                rejected=job.rejected,
                rows=rows,
                error_file=str(_error_path(request)) if request.write_error_file else None,
            )
        if request.all_or_nothing and job.rejected:
            job = await store.finish_job(conn, job.id, JobStatus.REJECTED.value, None)
            JOBS.labels(kind.name.value, job.status.value).inc()
            return ImportOutcome(job=job, errors=errors, seconds=time.monotonic() - started)
        applied = await _apply(
            conn, job, kind, last, actor, settings, report, one_transaction=request.all_or_nothing
        )
        job = await store.finish_job(conn, job.id, JobStatus.DONE.value, None)
    except UserError:
        raise
    except psycopg.Error as exc:
        reason = _why(exc)
        log.warning("imports.failed", job=job.id, kind=kind.name.value, reason=reason)
        await _quietly(store.finish_job(conn, job.id, JobStatus.FAILED.value, reason[:1000]))
        JOBS.labels(kind.name.value, JobStatus.FAILED.value).inc()
        raise UserError(
            f"job {job.id} stopped: {reason}; what was applied stays applied, and running "
            "the same file again resumes after it",
            field="import",
        ) from None
    ROWS.labels(kind.name.value, "applied").inc(applied)
    JOBS.labels(kind.name.value, job.status.value).inc()
    log.info(
        "imports.done",
        job=job.id,
        kind=kind.name.value,
        applied=applied,
        rejected=job.rejected,
        rows=job.rows,
        seconds=round(time.monotonic() - started, 3),
    )
    return ImportOutcome(
        job=job, applied_now=applied, errors=errors, seconds=time.monotonic() - started
    )


def _why(exc: psycopg.Error) -> str:
    user = translate(exc)
    if user is not None:
        return f"the database refused a chunk ({user}): it changed since the rows were checked"
    if isinstance(exc, psycopg.OperationalError):
        return "the connection to the database was lost"
    # The server's own text may quote rows; the class of error is enough to act on.
    return f"the database failed ({type(exc).__name__})"


async def _stage(
    conn: Conn,
    kind: Kind,
    fmt: FileFormat,
    columns: tuple[str, ...],
    offset: int,
    size: int,
    path: Path,
    settings: ImportSettings,
    report: ProgressFn,
) -> None:
    """The file into the stage: the fast way when it is a well-formed CSV file whose
    records are one line each, the careful way (row by row, problems kept) otherwise."""
    read = files.FileRead()

    def counted(chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            report(Progress("staging", offset + read.bytes_read, size, "bytes"))
            yield chunk

    if fmt is FileFormat.CSV:
        body = files.CsvBody(path, offset, read)
        if await _fast_stage(conn, columns, body, _async(counted(body.chunks()))):
            return
        await store.truncate_stage(conn)
        read = files.FileRead()
        chunks = files.csv_records(
            path,
            offset,
            columns,
            max_field_chars=settings.max_field_chars,
            max_line_bytes=settings.max_line_bytes,
            read=read,
        )
    else:
        chunks = files.jsonl_records(
            path, columns, max_line_bytes=settings.max_line_bytes, read=read
        )
    await store.stage_copy(conn, columns, _async(counted(chunks)), with_lines=True)


async def _fast_stage(
    conn: Conn, columns: tuple[str, ...], body: files.CsvBody, chunks: AsyncIterator[bytes]
) -> bool:
    """COPY the file's own bytes; False (and nothing staged) when the server refuses them
    or a record spans lines (a quoted newline: its row numbers are not line numbers)."""
    try:
        async with conn.transaction():
            copied = await store.stage_copy(conn, columns, chunks, with_lines=False)
            _numbered_by_line(copied, body)
    except (_Careful, psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded):
        return False
    return True


class _Careful(Exception):
    """The fast way cannot number this file's lines."""


def _numbered_by_line(copied: int, body: files.CsvBody) -> None:
    if copied != body.lines:
        raise _Careful


async def _apply(
    conn: Conn,
    job: ImportJob,
    kind: Kind,
    last: int,
    actor: str,
    settings: ImportSettings,
    report: ProgressFn,
    *,
    one_transaction: bool,
) -> int:
    total = max(job.rows - job.rejected, 0)
    applied = 0
    done_before = job.applied
    report(Progress("applying", done_before, total, "rows"))

    async def chunks() -> int:
        nonlocal job, applied
        low = job.position
        while low < last:
            high = min(low + settings.chunk_rows, last)
            async with conn.transaction():
                count = await store.apply_chunk(conn, kind, low=low, high=high, actor=actor)
                job = await store.advance(conn, job.id, position=high, applied=count)
            applied += count
            report(Progress("applying", done_before + applied, total, "rows"))
            low = high
        return applied

    if one_transaction:
        async with conn.transaction():
            return await chunks()
    return await chunks()


async def _error_file(conn: Conn, job: ImportJob, request: ImportRequest) -> list[RowError]:
    """Write the job's rejected rows to the error file (all of them, earlier runs'
    included); returns the first page of them."""
    first = await store.job_errors(conn, job.id, after_line=0, limit=_ERROR_PAGE)
    if not request.write_error_file or not first:
        return first
    target = _error_path(request)
    try:
        with target.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(ERROR_FILE_COLUMNS)
            page = first
            while page:
                writer.writerows((e.line, e.field, e.reason, e.raw) for e in page)
                if len(page) < _ERROR_PAGE:
                    break
                page = await store.job_errors(
                    conn, job.id, after_line=page[-1].line, limit=_ERROR_PAGE
                )
    except OSError as exc:
        raise InvalidInput(
            f"cannot write the error file {target}: {exc.strerror}", field="errors"
        ) from None
    return first


def _write(handle: BinaryIO, data: bytes) -> None:
    handle.write(data)


# -- jobs -------------------------------------------------------------------------------


async def job(pool: Pool, job_id: int) -> ImportJob:
    async with pool.connection() as conn:
        found = await store.job(conn, job_id)
    if found is None:
        raise NotFound(f"no import job {job_id}", field="job")
    return found


async def jobs(
    pool: Pool,
    *,
    kind: str | None = None,
    status: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[ImportJob]:
    if kind is not None:
        kind = kind_of(kind).name.value
    if status is not None:
        try:
            status = JobStatus(status).value
        except ValueError:
            known = ", ".join(s.value for s in JobStatus)
            raise InvalidInput(
                f"{status!r} is not a job status ({known})", field="status"
            ) from None
    async with pool.connection() as conn:
        return await store.jobs(conn, kind=kind, status=status, before_id=before_id, limit=limit)


async def job_errors(
    pool: Pool, job_id: int, *, after_line: int = 0, limit: int = 100
) -> list[RowError]:
    async with pool.connection() as conn:
        if await store.job(conn, job_id) is None:
            raise NotFound(f"no import job {job_id}", field="job")
        return await store.job_errors(conn, job_id, after_line=after_line, limit=limit)


# -- export -----------------------------------------------------------------------------


async def export_file(
    pool: Pool,
    kind_name: str,
    path: Path,
    *,
    format: str | None = None,
    spreadsheet_safe: bool = False,
) -> ExportResult:
    """Write every row of a kind to `path`, in the shape import reads (export, then
    import into another database, round-trips). `spreadsheet_safe` prefixes a text that
    a spreadsheet would run as a formula with a quote: for people, not for import."""
    started = time.monotonic()
    kind = kind_of(kind_name)
    fmt = format_of(path.name, format)
    try:
        handle = path.open("wb")
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror}", field="file") from None
    with handle:
        async with pool.connection() as conn:
            rows = await store.copy_out(
                conn,
                kind,
                fmt,
                lambda data: _write(handle, data),
                spreadsheet_safe=spreadsheet_safe,
            )
    return ExportResult(kind.name, rows, time.monotonic() - started)
