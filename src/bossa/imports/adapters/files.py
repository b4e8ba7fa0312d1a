"""The files bulk import reads: CSV with a header, and JSON lines. No database here: this
turns a file into the bytes `COPY ... (format csv)` takes, and says which rows could not
be read at all (wrong field count, not UTF-8, a field or line past its bound, a NUL).

Two ways through a CSV file. The fast one hands the file's own bytes to the server's CSV
parser, which is what makes import run near the speed of a raw COPY; it is right only
when every record is one line (so the server's row number is the line number) and the
file is well formed, which `CsvBody.lines` lets the caller prove after the fact. The other
reads it with Python's csv module and writes each record with its line, and any problem,
in front: slower, but a hostile file gives one error per bad row instead of one for the
whole file. The standard library's csv and json are used for both formats: they are C
code and well kept; a faster JSON parser would not change what dominates (the COPY).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CHUNK",
    "CsvBody",
    "FileRead",
    "csv_records",
    "digest",
    "header_of",
    "jsonl_records",
]

#: Bytes read and sent to COPY at a time.
CHUNK = 1 << 20
_BOM = codecs.BOM_UTF8


@dataclass
class FileRead:
    """How far a read got, for progress and for the caller's proofs."""

    bytes_read: int = 0
    #: Records read (data rows, not counting the header).
    records: int = 0
    #: Rows with a problem the reader found.
    problems: int = 0


def digest(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """The file's SHA-256, read once in chunks."""
    sha = hashlib.sha256()
    done = 0
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            sha.update(block)
            done += len(block)
            if progress is not None:
                progress(done)
    return sha.hexdigest()


def header_of(path: Path, *, max_line_bytes: int) -> tuple[list[str], int]:
    """The CSV header's names, and the offset of the first data byte."""
    with path.open("rb") as handle:
        first = handle.readline(max_line_bytes + 1)
    if len(first) > max_line_bytes:
        raise ValueError(f"the header line is longer than {max_line_bytes} bytes")
    text = first.removeprefix(_BOM)
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the header is not UTF-8 (byte {exc.start + 1})") from None
    if not decoded.strip():
        raise ValueError("the file is empty or its first line is blank (a header is needed)")
    if "\x00" in decoded:
        raise ValueError("the header contains a NUL character")
    names = next(csv.reader([decoded]))
    return names, len(first)


@dataclass
class CsvBody:
    """The file's bytes after the header, as they are (the fast way), counting lines."""

    path: Path
    offset: int
    read: FileRead = field(default_factory=FileRead)
    newlines: int = 0
    last_byte: bytes = b""

    def chunks(self) -> Iterator[bytes]:
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            while block := handle.read(CHUNK):
                self.newlines += block.count(b"\n")
                self.last_byte = block[-1:]
                self.read.bytes_read += len(block)
                yield block

    @property
    def lines(self) -> int:
        """Physical lines of the body (a last line without a newline counts)."""
        return self.newlines + (1 if self.last_byte not in (b"", b"\n") else 0)


def _bounded_lines(
    handle: io.BufferedReader, max_line_bytes: int, read: FileRead
) -> Iterator[tuple[bytes, bool]]:
    """(line, too_long) for each physical line; an over-long line is skipped to its end
    without being held, and yields b'' in its place."""
    while True:
        line = handle.readline(max_line_bytes + 1)
        if not line:
            return
        read.bytes_read += len(line)
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            while rest := handle.readline(CHUNK):
                read.bytes_read += len(rest)
                if rest.endswith(b"\n"):
                    break
            yield b"\n", True
            continue
        yield line, False


class _Writer:
    """Rows for `COPY (line, problem_field, problem, raw, columns...) ... (format csv)`."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        self.csv = csv.writer(self.buffer, lineterminator="\n")

    def row(
        self, line: int, values: list[str | None], problem: tuple[str, str] | None, raw: str
    ) -> None:
        if problem is not None:
            # The reader's own text of the row: NULs shown (PostgreSQL text cannot hold
            # them), cut at the error file's bound.
            shown = raw.replace("\x00", "\\0")[:4096]
            self.csv.writerow([line, problem[0], problem[1], shown, *([""] * len(values))])
        else:
            self.csv.writerow([line, "", "", "", *values])

    def take(self) -> bytes:
        data = self.buffer.getvalue().encode("utf-8")
        self.buffer.seek(0)
        self.buffer.truncate()
        return data


def _decoded(line: bytes, number: int) -> tuple[str, str | None]:
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return (
            line.decode("utf-8", errors="replace"),
            f"line {number} is not UTF-8 (byte {exc.start + 1}: 0x{line[exc.start]:02x})",
        )


@dataclass
class _ReadState:
    #: The last physical line read.
    line: int = 1
    #: Why the record being read cannot be used (a line not UTF-8, too long), if so.
    bad: str = ""


def csv_records(
    path: Path,
    offset: int,
    columns: tuple[str, ...],
    *,
    max_field_chars: int,
    max_line_bytes: int,
    read: FileRead,
    batch: int = 5_000,
) -> Iterator[bytes]:
    """The body read record by record (the careful way): each with its first line, and
    the problem that makes it unreadable, if any."""
    limit = csv.field_size_limit()
    # The csv module's bound is process-wide; it is put back before this returns.
    csv.field_size_limit(max_field_chars)
    writer = _Writer()
    state = _ReadState()
    pieces: list[str] = []

    try:
        with path.open("rb") as handle:
            handle.seek(offset)

            def lines() -> Iterator[str]:
                for raw_line, too_long in _bounded_lines(handle, max_line_bytes, read):
                    state.line += 1
                    if too_long:
                        state.bad = state.bad or (
                            f"line {state.line} is longer than {max_line_bytes} bytes"
                        )
                        pieces.append("")
                        yield "\n"
                        continue
                    text, problem = _decoded(raw_line, state.line)
                    if problem and not state.bad:
                        state.bad = problem
                    pieces.append(text)
                    yield text

            reader = csv.reader(lines(), strict=True)
            pending = 0
            while True:
                first = state.line + 1
                try:
                    record = next(reader)
                    error = None
                except StopIteration:
                    break
                except csv.Error as exc:
                    record, error = [], str(exc)
                raw = "".join(pieces).rstrip("\r\n")
                pieces.clear()
                read.records += 1
                problem: tuple[str, str] | None = None
                if state.bad:
                    problem = ("row", state.bad)
                elif error is not None:
                    problem = ("row", f"cannot be read as CSV: {error}")
                elif len(record) != len(columns):
                    problem = (
                        "row",
                        f"has {len(record)} field(s); the header names {len(columns)}",
                    )
                elif any("\x00" in value for value in record):
                    problem = ("row", "contains a NUL character")
                state.bad = ""
                if problem is None and not raw.strip() and record == []:
                    problem = ("row", "is blank")
                if problem is not None:
                    read.problems += 1
                    writer.row(first, [None] * len(columns), problem, raw)
                else:
                    writer.row(first, list(record), None, raw)
                pending += 1
                if pending >= batch:
                    pending = 0
                    yield writer.take()
            yield writer.take()
    finally:
        csv.field_size_limit(limit)


def _json_value(value: object) -> str | None:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def jsonl_records(
    path: Path,
    columns: tuple[str, ...],
    *,
    max_line_bytes: int,
    read: FileRead,
    batch: int = 5_000,
) -> Iterator[bytes]:
    """One JSON object per line; keys are the CSV header's names, values strings, whole
    numbers or null. Blank lines are skipped."""
    writer = _Writer()
    known = set(columns)
    pending = 0
    with path.open("rb") as handle:
        for number, (raw_line, too_long) in enumerate(
            _bounded_lines(handle, max_line_bytes, read), start=1
        ):
            if number == 1:
                raw_line = raw_line.removeprefix(_BOM)
            problem: tuple[str, str] | None = None
            values: list[str | None] = [None] * len(columns)
            text = ""
            if too_long:
                problem = ("row", f"line {number} is longer than {max_line_bytes} bytes")
            else:
                text, undecodable = _decoded(raw_line, number)
                if not text.strip():
                    continue
                if undecodable:
                    problem = ("row", undecodable)
            if problem is None:
                problem, values = _json_row(text, columns, known)
            read.records += 1
            if problem is not None:
                read.problems += 1
            writer.row(number, values, problem, text.rstrip("\r\n"))
            pending += 1
            if pending >= batch:
                pending = 0
                yield writer.take()
    yield writer.take()


def _json_row(
    text: str, columns: tuple[str, ...], known: set[str]
) -> tuple[tuple[str, str] | None, list[str | None]]:
    values: list[str | None] = [None] * len(columns)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return ("row", f"is not JSON: {exc.msg} at character {exc.pos + 1}"), values
    except RecursionError:
        return ("row", "is JSON nested too deep"), values
    except ValueError as exc:  # a number past Python's digit limit, among others
        return ("row", f"is not JSON the reader can take: {str(exc)[:80]}"), values
    if not isinstance(data, dict):
        return ("row", "is not a JSON object"), values
    unknown = [key for key in data if key not in known]
    if unknown:
        return ("row", f"unknown field(s): {', '.join(repr(k)[:40] for k in unknown[:5])}"), values
    for index, name in enumerate(columns):
        if name not in data:
            continue
        value = _json_value(data[name])
        if value is None:
            return (name, "must be a string, a whole number or null"), values
        if "\x00" in value:
            return (name, "contains a NUL character"), values
        values[index] = value
    return None, values
