"""Files for the import tests: a small operator (products, customers, accounts) and
contracts files of any size with chosen bad rows, written the way an operator's would be."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from bossa.db import Pool
from bossa.imports import ImportRequest, ImportSettings, import_file

PRODUCTS = [
    {
        "code": "ADSL",
        "name": "ADSL broadband 20M",
        "recurring_amount": "2500000",
        "period": "monthly",
        "currency": "KRW",
    },
    {
        "code": "WIBRO",
        "name": "WiBro wireless data",
        "recurring_amount": "1900000",
        "period": "monthly",
        "currency": "KRW",
        "one_off_amount": "50000",
    },
]

CONTRACT_COLUMNS = [
    "sa_id",
    "customer_id",
    "account_id",
    "product_code",
    "start_date",
    "end_date",
    "status",
]

SETTINGS = ImportSettings(chunk_rows=100)


def write_csv(path: Path, columns: list[str], rows: Iterable[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: Iterable[dict[str, object]]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def customers(n: int) -> list[dict[str, str]]:
    return [
        {"id": f"C-{i:06d}", "name": f"Customer {i}", "msisdn": f"+8210{i:08d}"} for i in range(n)
    ]


def accounts(n: int) -> list[dict[str, str]]:
    return [{"id": f"A-{i:06d}", "customer_id": f"C-{i:06d}", "currency": "KRW"} for i in range(n)]


def contract(i: int, customers_n: int) -> dict[str, str]:
    owner = i % customers_n
    return {
        "sa_id": f"SA-{i:07d}",
        "customer_id": f"C-{owner:06d}",
        "account_id": f"A-{owner:06d}",
        "product_code": "ADSL" if i % 2 else "WIBRO",
        "start_date": "2026-01-15",
        "end_date": "",
        "status": "active",
    }


async def load_operator(pool: Pool, folder: Path, customers_n: int) -> None:
    """Products, customers and their accounts, through import itself."""
    for kind, columns, rows in (
        (
            "products",
            ["code", "name", "recurring_amount", "period", "one_off_amount", "currency"],
            PRODUCTS,
        ),
        ("customers", ["id", "name", "msisdn"], customers(customers_n)),
        ("accounts", ["id", "customer_id", "currency"], accounts(customers_n)),
    ):
        path = write_csv(folder / f"{kind}.csv", columns, rows)
        outcome = await import_file(
            pool, ImportRequest(kind, path), actor="test", settings=SETTINGS
        )
        assert outcome.job.rejected == 0, outcome.errors[:3]
        assert outcome.applied_now == len(rows)


def read_errors(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
