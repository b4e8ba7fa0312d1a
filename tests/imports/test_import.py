"""Bulk import: good rows in, bad rows in the error file with line, field and reason,
all-or-nothing, resume by position, the same file twice, and export round-trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bossa.db import Pool
from bossa.errors import InvalidInput
from bossa.imports import ImportRequest, export_file, import_file
from tests.imports.files import (
    CONTRACT_COLUMNS,
    SETTINGS,
    contract,
    load_operator,
    read_errors,
    write_csv,
)

CUSTOMERS = 50


async def rows(pool: Pool, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (await conn.execute(query, params)).fetchall()  # type: ignore[arg-type]


def spoil(row: dict[str, str], how: int) -> tuple[dict[str, str], str, str]:
    """A bad copy of `row`, the field at fault and a word of the reason."""
    bad = dict(row)
    match how % 8:
        case 0:
            bad["start_date"] = "2026-02-30"
            return bad, "start_date", "is not a date"
        case 1:
            bad["customer_id"] = "C-NOBODY"
            return bad, "customer_id", "no customer"
        case 2:
            bad["product_code"] = "NOPE"
            return bad, "product_code", "no product"
        case 3:
            bad["status"] = "sleeping"
            return bad, "status", "is not one of"
        case 4:
            bad["sa_id"] = ""
            return bad, "sa_id", "is required"
        case 5:
            bad["end_date"] = "2025-01-01"
            return bad, "end_date", "before start_date"
        case 6:
            bad["account_id"] = "A-000001" if row["account_id"] != "A-000001" else "A-000002"
            return bad, "account_id", "belongs to another customer"
        case _:
            bad["sa_id"] = "SA-0000000"  # the first row's: a repeat inside the file
            return bad, "sa_id", "repeats line 2"


async def test_one_percent_bad_rows_land_in_the_error_file_and_the_rest_are_in(
    pool: Pool, tmp_path: Path
) -> None:
    await load_operator(pool, tmp_path, CUSTOMERS)
    total, expected = 2_000, {}
    lines = []
    for i in range(total):
        row = contract(i, CUSTOMERS)
        if i % 100 == 37:  # 1%
            row, field, words = spoil(row, i // 100)
            expected[i + 2] = (field, words)  # line 1 is the header
        lines.append(row)
    path = write_csv(tmp_path / "contracts.csv", CONTRACT_COLUMNS, lines)

    outcome = await import_file(
        pool, ImportRequest("contracts", path), actor="ops", settings=SETTINGS
    )

    assert outcome.job.status == "done"
    assert outcome.job.rows == total
    assert outcome.job.rejected == len(expected) == 20
    assert outcome.applied_now == outcome.job.applied == total - len(expected)
    errors = read_errors(tmp_path / "contracts.csv.errors.csv")
    assert {int(e["line"]): e["field"] for e in errors} == {k: v[0] for k, v in expected.items()}
    for error in errors:
        assert expected[int(error["line"])][1] in error["reason"], error
        # The raw row is the row as read: its SA_ID (or its other fields) are in it.
        assert error["raw"].split(",")[1:4] == [
            lines[int(error["line"]) - 2][c] for c in ("customer_id", "account_id", "product_code")
        ] or expected[int(error["line"])][0] in ("customer_id", "account_id", "product_code")
    stored = await rows(pool, "select count(*) as n from customers.contract_rows")
    assert stored == [{"n": total - len(expected)}]
    bad_ids = [lines[line - 2]["sa_id"] for line in expected if lines[line - 2]["sa_id"]]
    found = await rows(
        pool,
        "select sa_id from customers.contract_rows where sa_id = any(%s) and sa_id <> 'SA-0000000'",
        (bad_ids,),
    )
    assert found == []
    audit = await rows(pool, "select distinct created_by from customers.contracts")
    assert audit == [{"created_by": "ops"}]


async def test_all_or_nothing_applies_nothing_when_one_row_is_bad(
    pool: Pool, tmp_path: Path
) -> None:
    await load_operator(pool, tmp_path, CUSTOMERS)
    good = [contract(i, CUSTOMERS) for i in range(300)]
    bad = [*good[:150], {**contract(150, CUSTOMERS), "product_code": "NOPE"}, *good[151:]]
    path = write_csv(tmp_path / "c.csv", CONTRACT_COLUMNS, bad)

    outcome = await import_file(
        pool, ImportRequest("contracts", path, all_or_nothing=True), actor="ops", settings=SETTINGS
    )
    assert outcome.job.status == "rejected"
    assert (outcome.job.applied, outcome.job.rejected) == (0, 1)
    assert await rows(pool, "select count(*) as n from customers.contract_rows") == [{"n": 0}]
    assert [(e.line, e.field) for e in outcome.errors] == [(152, "product_code")]

    fixed = write_csv(tmp_path / "c2.csv", CONTRACT_COLUMNS, good)
    outcome = await import_file(
        pool,
        ImportRequest("contracts", fixed, all_or_nothing=True),
        actor="ops",
        settings=SETTINGS,
    )
    assert (outcome.job.status, outcome.job.applied, outcome.job.rejected) == ("done", 300, 0)


async def test_the_same_file_again_imports_nothing_twice(pool: Pool, tmp_path: Path) -> None:
    await load_operator(pool, tmp_path, CUSTOMERS)
    path = write_csv(
        tmp_path / "c.csv", CONTRACT_COLUMNS, [contract(i, CUSTOMERS) for i in range(250)]
    )
    first = await import_file(
        pool, ImportRequest("contracts", path), actor="ops", settings=SETTINGS
    )
    again = await import_file(
        pool, ImportRequest("contracts", path), actor="ops", settings=SETTINGS
    )
    assert (first.applied_now, again.applied_now, again.already_done) == (250, 0, True)
    assert again.job.id == first.job.id
    assert await rows(pool, "select count(*) as n from customers.contract_rows") == [{"n": 250}]


async def test_a_run_resumes_after_its_position(pool: Pool, tmp_path: Path) -> None:
    # What a kill leaves: a job whose position says lines up to 151 are applied, and
    # those rows in. (The kill itself, by SIGKILL, is tests/imports/test_kill.py.)
    await load_operator(pool, tmp_path, CUSTOMERS)
    lines = [contract(i, CUSTOMERS) for i in range(400)]
    path = write_csv(tmp_path / "c.csv", CONTRACT_COLUMNS, lines)
    half = write_csv(tmp_path / "half.csv", CONTRACT_COLUMNS, lines[:150])
    await import_file(pool, ImportRequest("contracts", half), actor="ops", settings=SETTINGS)
    first = await import_file(
        pool, ImportRequest("contracts", path), actor="ops", settings=SETTINGS
    )
    # Without a position the 150 rows in already are "exists already": rejected, not twice.
    assert (first.applied_now, first.job.rejected) == (250, 150)
    assert {e.reason.split()[-1] for e in first.errors} == {"already"}
    assert await rows(pool, "select count(*) as n from customers.contract_rows") == [{"n": 400}]


async def test_export_then_import_round_trips(pool: Pool, tmp_path: Path, db_url: str) -> None:
    await load_operator(pool, tmp_path, CUSTOMERS)
    lines = [contract(i, CUSTOMERS) for i in range(120)]
    lines[3]["status"] = "suspended"
    lines[4]["end_date"] = "2026-12-31"
    await import_file(
        pool,
        ImportRequest("contracts", write_csv(tmp_path / "c.csv", CONTRACT_COLUMNS, lines)),
        actor="ops",
        settings=SETTINGS,
    )
    for kind in ("products", "customers", "accounts", "contracts"):
        for suffix in ("csv", "jsonl"):
            target = tmp_path / f"out-{kind}.{suffix}"
            result = await export_file(pool, kind, target)
            assert result.rows > 0
    exported = read_errors(tmp_path / "out-contracts.csv")  # a CSV with a header
    assert len(exported) == 120
    assert exported[3]["status"] == "suspended"
    assert exported[4]["end_date"] == "2026-12-31"
    assert exported[0]["start_date"] == "2026-01-15"
    products = read_errors(tmp_path / "out-products.csv")
    assert {p["code"]: (p["recurring_amount"], p["one_off_amount"]) for p in products} == {
        "ADSL": ("2500000", ""),
        "WIBRO": ("1900000", "50000"),
    }


async def test_usage_mistakes_are_refused_before_anything_is_staged(
    pool: Pool, tmp_path: Path
) -> None:
    unknown = write_csv(tmp_path / "c.csv", ["sa_id", "colour"], [{"sa_id": "x", "colour": "red"}])
    with pytest.raises(InvalidInput, match="unknown column") as caught:
        await import_file(pool, ImportRequest("contracts", unknown), actor="ops", settings=SETTINGS)
    assert caught.value.field == "header"
    missing = write_csv(tmp_path / "m.csv", ["sa_id"], [{"sa_id": "x"}])
    with pytest.raises(InvalidInput, match="required column"):
        await import_file(pool, ImportRequest("contracts", missing), actor="ops", settings=SETTINGS)
    with pytest.raises(InvalidInput, match="not a kind"):
        await import_file(pool, ImportRequest("invoices", missing), actor="ops", settings=SETTINGS)
    with pytest.raises(InvalidInput, match="cannot read"):
        await import_file(
            pool, ImportRequest("contracts", tmp_path / "none.csv"), actor="ops", settings=SETTINGS
        )
    with pytest.raises(InvalidInput, match="format"):
        await import_file(
            pool, ImportRequest("contracts", tmp_path / "x.xlsx"), actor="ops", settings=SETTINGS
        )
    assert await rows(pool, "select count(*) as n from imports.jobs") == [{"n": 0}]


async def test_dates_are_checked_without_casting(pool: Pool, tmp_path: Path) -> None:
    cases = {
        "2024-02-29": None,  # a leap day
        "2026-01-31": None,
        "2000-02-29": None,  # divisible by 400: leap
        "1900-02-29": "is not a date",  # divisible by 100: not
        "2023-02-29": "is not a date",
        "2026-04-31": "is not a date",
        "2026-13-01": "is not a date",
        "26-01-01": "is not a date",
        "2026-1-1": "is not a date",
        "1899-12-31": "must be between 1900-01-01 and 9999-12-31",
    }
    rows_in = [
        {"code": f"P{i}", "name": f"Product {i}", "valid_from": value}
        for i, value in enumerate(cases)
    ]
    path = write_csv(tmp_path / "products.csv", ["code", "name", "valid_from"], rows_in)
    outcome = await import_file(
        pool, ImportRequest("products", path), actor="ops", settings=SETTINGS
    )
    found = {e.line: e.reason for e in outcome.errors}
    for i, (value, words) in enumerate(cases.items()):
        if words is None:
            assert i + 2 not in found, (value, found.get(i + 2))
        else:
            assert words in found[i + 2], (value, found.get(i + 2))
            assert found[i + 2].startswith(f"'{value}'") or words.startswith("must")
    assert outcome.applied_now == 3
