"""Hostile and broken files: each bad row is rejected with its line and a reason, the good
rows around it are applied, and nothing ends in a traceback (the CLI's exit codes too)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bossa.db import Pool
from bossa.errors import InvalidInput
from bossa.imports import ImportRequest, ImportSettings, export_file, import_file
from tests.imports.files import read_errors

SETTINGS = ImportSettings(chunk_rows=100, max_field_chars=1_000, max_line_bytes=4_096)
HEADER = b"id,name,msisdn\n"


def good(i: int) -> bytes:
    return f"C-{i:04d},Customer {i},+82100000{i:04d}\n".encode()


async def imported(
    pool: Pool, path: Path, settings: ImportSettings = SETTINGS
) -> tuple[dict[int, tuple[str, str]], int]:
    outcome = await import_file(
        pool, ImportRequest("customers", path), actor="ops", settings=settings
    )
    errors = read_errors(path.with_name(path.name + ".errors.csv")) if outcome.job.rejected else []
    return {int(e["line"]): (e["field"], e["reason"]) for e in errors}, outcome.applied_now


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        (b"C-9001,Caf\xe9 Latin-1,+821000009001\n", "row", "is not UTF-8"),
        (b"C-9002,Name,+821000009002,extra\n", "row", "has 4 field(s); the header names 3"),
        (b"C-9003,only two\n", "row", "has 2 field(s)"),
        (b"C-9004,N\x00UL,+821000009004\n", "row", "NUL"),
        # Well-formed, so the server's CSV parser reads it; the column's bound refuses it.
        (b"C-9005," + b"x" * 2_000 + b",+821000009005\n", "name", "longer than 200"),
        (b"C-9006," + b"y" * 5_000 + b"\n", "row", "longer than 4096 bytes"),
        (b"C-9007," + b"z" * 500 + b",+821000009007\n", "name", "longer than 200 characters"),
        (b'C-9008,=HYPERLINK("http://x"),+8210\n', "msisdn", "is not 5-19 digits"),
        (b"C 9009,Spaces in the id,\n", "id", "is not 1-64 letters"),
        (b'C-9010,"unterminated,+821000009010\n', "row", "cannot be read as CSV"),
    ],
    ids=[
        "latin1",
        "extra-field",
        "missing-field",
        "nul",
        "huge-field",
        "huge-line",
        "long-name",
        "formula-msisdn",
        "bad-id",
        "unterminated-quote",
    ],
)
async def test_a_bad_row_among_good_ones(
    pool: Pool, tmp_path: Path, bad: bytes, field: str, words: str
) -> None:
    path = tmp_path / "customers.csv"
    # The bad row on line 4, between good ones; an unterminated quote eats the rest of
    # the file, so it goes last.
    last = b"unterminated" in bad or bad.startswith(b"C-9010")
    body = good(1) + good(2) + (good(3) + good(4) + bad if last else bad + good(3) + good(4))
    path.write_bytes(HEADER + body)
    errors, applied = await imported(pool, path)
    line = 6 if last else 4
    assert list(errors) == [line], errors
    assert errors[line][0] == field
    assert words in errors[line][1]
    assert applied == 4


async def test_a_name_that_looks_like_a_formula_is_data_and_export_can_defuse_it(
    pool: Pool, tmp_path: Path
) -> None:
    path = tmp_path / "customers.csv"
    path.write_bytes(HEADER + b'C-1,"=HYPERLINK(""http://evil"",""x"")",+821000000001\n')
    errors, applied = await imported(pool, path)
    assert (errors, applied) == ({}, 1)
    plain, safe = tmp_path / "plain.csv", tmp_path / "safe.csv"
    await export_file(pool, "customers", plain)
    await export_file(pool, "customers", safe, spreadsheet_safe=True)
    assert read_errors(plain)[0]["name"] == '=HYPERLINK("http://evil","x")'
    assert read_errors(plain)[0]["msisdn"] == "+821000000001"  # round-trips as it was
    assert read_errors(safe)[0]["name"] == '\'=HYPERLINK("http://evil","x")'
    assert read_errors(safe)[0]["msisdn"] == "'+821000000001"


async def test_a_quoted_newline_keeps_line_numbers_right(pool: Pool, tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_bytes(HEADER + b'C-1,"two\nlines",+8210000001\nC-2,x,bad-msisdn\n')
    errors, applied = await imported(pool, path)
    # The quoted newline is a control character a name may not hold (line 2), and the
    # next record starts on line 4, not 3.
    assert errors == {
        2: ("name", "'two\nlines' is not free of control characters"),
        4: ("msisdn", "'bad-msisdn' is not 5-19 digits, optionally after a +"),
    }
    assert applied == 0


async def test_json_lines_with_bad_lines(pool: Pool, tmp_path: Path) -> None:
    path = tmp_path / "customers.jsonl"
    lines = [
        json.dumps({"id": "C-1", "name": "One", "msisdn": "+821000000001"}),
        "{not json",
        json.dumps(["an", "array"]),
        json.dumps({"id": "C-2", "name": "Two", "colour": "red"}),
        json.dumps({"id": "C-3", "name": {"nested": True}}),
        "",
        json.dumps({"id": "C-4", "name": "Four", "msisdn": None, "status": "closed"}),
        json.dumps({"id": 5, "name": "Number id"}),
        '{"id": "C-6", "name": "Big", "msisdn": ' + "9" * 5_000 + "}",
    ]
    path.write_text("\n".join(lines) + "\n")
    # Lines up to 8 KiB here: the big number's line must reach the JSON parser.
    errors, applied = await imported(pool, path, ImportSettings(max_line_bytes=8_192))
    assert {line: field for line, (field, _) in errors.items()} == {
        2: "row",
        3: "row",
        4: "row",
        5: "name",
        9: "row",
    }
    assert "is not JSON the reader can take" in errors[9][1]
    assert "is not JSON" in errors[2][1]
    assert "not a JSON object" in errors[3][1]
    assert "'colour'" in errors[4][1]
    assert applied == 3


async def test_files_that_are_no_file_of_that_kind_are_usage_errors(
    pool: Pool, tmp_path: Path
) -> None:
    cases = {
        "empty.csv": b"",
        "binary.csv": bytes(range(256)) * 4,
        "blank-header.csv": b"\n\nC-1,x\n",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InvalidInput) as caught:
            await import_file(
                pool, ImportRequest("customers", tmp_path / name), actor="ops", settings=SETTINGS
            )
        assert caught.value.field in ("file", "header"), name
    (tmp_path / "header-only.csv").write_bytes(HEADER)
    outcome = await import_file(
        pool,
        ImportRequest("customers", tmp_path / "header-only.csv"),
        actor="ops",
        settings=SETTINGS,
    )
    assert (outcome.job.status, outcome.job.rows, outcome.applied_now) == ("done", 0, 0)


def bossa(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOSSA_")}
    env.update(BOSSA_DATABASE_URL=db_url, BOSSA_ACCESS_CLI_ACTOR="ops-kim")
    return subprocess.run(
        [sys.executable, "-m", "bossa.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_cli_exit_codes_and_no_traceback(db_url: str, tmp_path: Path) -> None:
    clean = tmp_path / "clean.csv"
    clean.write_bytes(HEADER + good(1) + good(2))
    dirty = tmp_path / "dirty.csv"
    dirty.write_bytes(HEADER + good(3) + b"C-4,\xff\xfe,\n" + good(5))
    unknown = tmp_path / "unknown.csv"
    unknown.write_bytes(b"id,colour\nC-1,red\n")

    ok = await asyncio.to_thread(bossa, db_url, "import", "customers", str(clean))
    assert ok.returncode == 0, ok.stderr
    assert "2 applied now" in ok.stdout
    # Not a terminal: plain progress lines on stderr, one per phase at least.
    for phase in ("hashing:", "staging:", "checking:", "applying:"):
        assert phase in ok.stderr, ok.stderr
    bad = await asyncio.to_thread(bossa, db_url, "import", "customers", str(dirty))
    assert bad.returncode == 1, bad.stderr
    assert "1 rejected" in bad.stdout
    assert read_errors(tmp_path / "dirty.csv.errors.csv")[0]["line"] == "3"
    usage = await asyncio.to_thread(bossa, db_url, "import", "customers", str(unknown))
    assert usage.returncode == 2
    assert usage.stderr.startswith("error: header: unknown column(s) 'colour'")
    kind = await asyncio.to_thread(bossa, db_url, "import", "invoices", str(clean))
    assert kind.returncode == 2
    exported = await asyncio.to_thread(
        bossa, db_url, "export", "customers", str(tmp_path / "out.jsonl")
    )
    assert exported.returncode == 0, exported.stderr
    assert "4 customers written" in exported.stdout
    jobs = await asyncio.to_thread(bossa, db_url, "import", "jobs", "--json")
    assert [(j["status"], j["created_by"]) for j in json.loads(jobs.stdout)] == [
        ("done", "cli:ops-kim"),
        ("done", "cli:ops-kim"),
    ]
    for run in (ok, bad, usage, kind, exported, jobs):
        assert "Traceback" not in run.stderr + run.stdout
