"""bossa's bulk import: rows per second, with validation, against a raw COPY of the same
file into a plain table in the same run.

    .venv/bin/python -m bench.import.run [--quick] [--json FILE] [--no-results]

Starts a private durable PostgreSQL (fsync on) in a temporary folder, migrates a fresh
database, writes CSV files of products, customers, accounts (one per customer) and
contracts (two per customer, 1% of them bad in eight different ways), and imports them in
that order with `bossa.imports.import_file`, as `bossa import` does: hash, stage by COPY,
check set-wise (types, bounds, repeats, references, keys that exist), write the error
file, apply in chunks through the owners' import functions. The peer is `COPY ... FROM
STDIN (format csv, header)` of the same file's bytes into a plain table of text columns
with no index: the floor any import pays. Prints both figures and the ratio per kind,
and the targets (>= 0.3x raw; 1,000,000 contracts in under 60 s); appends a dated
section to bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.common import Cpu, append_section, base_parser, free_port, git_ref  # noqa: E402
from bossa.db import EmbeddedPostgres, open_pool  # noqa: E402
from bossa.db.migrations import migrate  # noqa: E402
from bossa.imports import ImportRequest, ImportSettings, import_file  # noqa: E402

TARGET_RATIO = 0.3
TARGET_CONTRACTS_S = 60.0
TARGET_CONTRACTS = 1_000_000
BAD_EVERY = 100  # 1% of contracts


def write_files(folder: Path, customers: int, contracts: int) -> dict[str, tuple[Path, int]]:
    files: dict[str, tuple[Path, int]] = {}

    def write(name: str, header: list[str], rows: Any) -> None:
        path = folder / f"{name}.csv"
        count = 0
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for row in rows:
                writer.writerow(row)
                count += 1
        files[name] = (path, count)

    write(
        "products",
        ["code", "name", "recurring_amount", "period", "one_off_amount", "currency"],
        [
            ("ADSL", "ADSL broadband 20M", 2_500_000, "monthly", "", "KRW"),
            ("WIBRO", "WiBro wireless data", 1_900_000, "monthly", 50_000, "KRW"),
            ("SOIP", "SoIP internet telephony", 2_700_000, "quarterly", "", "KRW"),
        ],
    )
    write(
        "customers",
        ["id", "name", "msisdn", "email", "status"],
        (
            (f"C-{i:08d}", f"Customer {i}", f"+8210{i:08d}", f"c{i}@example.com", "active")
            for i in range(customers)
        ),
    )
    write(
        "accounts",
        ["id", "customer_id", "currency", "bill_cycle", "credit_limit", "grace_days"],
        ((f"A-{i:08d}", f"C-{i:08d}", "KRW", "MONTHLY", 5_000_000, 14) for i in range(customers)),
    )
    products = ("ADSL", "WIBRO", "SOIP")

    def contract_rows() -> Any:
        for i in range(contracts):
            owner = i % customers
            row = [
                f"SA-{i:09d}",
                f"C-{owner:08d}",
                f"A-{owner:08d}",
                products[i % 3],
                f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}",
                "",
                "active",
            ]
            if i % BAD_EVERY == 37:
                how = (i // BAD_EVERY) % 8
                if how == 0:
                    row[4] = "2026-02-30"
                elif how == 1:
                    row[1] = "C-NOBODY"
                elif how == 2:
                    row[3] = "NOPE"
                elif how == 3:
                    row[6] = "sleeping"
                elif how == 4:
                    row[0] = ""
                elif how == 5:
                    row[5] = "2020-01-01"
                elif how == 6:
                    row[2] = f"A-{(owner + 1) % customers:08d}"
                else:
                    row[0] = "SA-000000000"
            yield row

    write(
        "contracts",
        ["sa_id", "customer_id", "account_id", "product_code", "start_date", "end_date", "status"],
        contract_rows(),
    )
    return files


#: The same writes bossa's import makes, as one insert-select from the raw table (rolled
#: back): what the destination tables cost by themselves (their indexes, foreign keys and
#: checks), with no validation. Bad contract rows are the ones the file writer spoiled
#: (every 100th from the 37th; a repeated SA_ID kept once).
SAME_WRITES = {
    "customers": "insert into customers.customers (id, name, msisdn, email, status)"
    " select id, name, msisdn, email, status from raw_customers",
    "accounts": "insert into ledger.accounts"
    " (id, customer_id, currency, bill_cycle, credit_limit, grace_days)"
    " select id, customer_id, currency, bill_cycle, credit_limit::bigint, grace_days::integer"
    " from raw_accounts",
    "contracts": "insert into customers.contracts"
    " (sa_id, customer_id, account_id, product_code, start_date, end_date, status)"
    " select distinct on (sa_id) sa_id, customer_id, account_id, product_code,"
    " start_date::date, nullif(end_date, '')::date, status from raw_contracts"
    " where sa_id <> '' and right(sa_id, 2) <> '37' order by sa_id",
}


#: The table each kind's rows land in (the same writes' target).
DESTINATION = {
    "customers": ("customers", "customers"),
    "accounts": ("ledger", "accounts"),
    "contracts": ("customers", "contracts"),
}


def raw_copy(url: str, name: str, path: Path, columns: list[str]) -> tuple[float, float | None]:
    """COPY the file's bytes into a plain table of text columns with no index; then the
    same writes as bossa's import from it, rolled back. Returns both times."""
    table = sql.Identifier(f"raw_{name}")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop table if exists {}").format(table))
        conn.execute(
            sql.SQL("create table {} ({})").format(
                table,
                sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in columns),
            )
        )
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(sql.SQL("copy {} from stdin with (format csv, header)").format(table)) as copy,
            path.open("rb") as handle,
        ):
            while block := handle.read(1 << 20):
                copy.write(block)
        seconds = time.perf_counter() - started
        same: float | None = None
        if name in SAME_WRITES:
            started = time.perf_counter()
            with conn.transaction(force_rollback=True):
                conn.execute(SAME_WRITES[name])
            same = time.perf_counter() - started
            # The rolled-back rows stay behind as dead tuples and dead index entries: bossa's
            # import would then write into indexes a million entries deep in garbage (and
            # race autovacuum cleaning it). Rewrite the (still empty) table so that bossa
            # starts from the same clean table the peer had.
            conn.execute(sql.SQL("vacuum full {}").format(sql.Identifier(*DESTINATION[name])))
        conn.execute(sql.SQL("drop table {}").format(table))
    return seconds, same


async def bossa_import(url: str, kind: str, path: Path) -> dict[str, Any]:
    phases: dict[str, float] = {}
    last = {"phase": "", "at": time.perf_counter()}

    def progress(step: Any) -> None:
        now = time.perf_counter()
        if step.phase != last["phase"]:
            if last["phase"]:
                phases[last["phase"]] = phases.get(last["phase"], 0.0) + now - last["at"]
            last["phase"], last["at"] = step.phase, now

    async with open_pool(url, min_size=1, max_size=2) as pool:
        with Cpu() as cpu:
            started = time.perf_counter()
            outcome = await import_file(
                pool,
                ImportRequest(kind, path),
                actor="bench",
                settings=ImportSettings(),
                progress=progress,
            )
            seconds = time.perf_counter() - started
    phases[last["phase"]] = phases.get(last["phase"], 0.0) + time.perf_counter() - last["at"]
    return {
        "seconds": seconds,
        "rows": outcome.job.rows,
        "applied": outcome.applied_now,
        "rejected": outcome.job.rejected,
        "phases": {k: round(v, 2) for k, v in phases.items()},
        "cpu": cpu.summary(),
    }


async def run(base: Path, port: int, customers: int, contracts: int) -> dict[str, Any]:
    pg = EmbeddedPostgres(base / "pg", port=port, database="bossa", durable=True)
    await asyncio.to_thread(pg.start)
    out: dict[str, Any] = {"kinds": {}}
    try:
        url = pg.url()
        await asyncio.to_thread(migrate, url)
        with psycopg.connect(url, autocommit=True) as c:
            out["server"] = {
                k: c.execute(sql.SQL("show {}").format(sql.Identifier(k))).fetchone()[0]  # type: ignore[index]
                for k in ("server_version", "fsync", "synchronous_commit", "shared_buffers")
            }
        print(f"  server: {out['server']}")
        folder = base / "files"
        folder.mkdir()
        started = time.perf_counter()
        files = await asyncio.to_thread(write_files, folder, customers, contracts)
        print(f"  files written in {time.perf_counter() - started:.1f} s")
        for kind in ("products", "customers", "accounts", "contracts"):
            path, rows = files[kind]
            columns = next(csv.reader(path.open()))
            raw_s, same_s = await asyncio.to_thread(raw_copy, url, kind, path, columns)
            result = await bossa_import(url, kind, path)
            result["raw_seconds"] = raw_s
            result["same_writes_seconds"] = same_s
            result["bytes"] = path.stat().st_size
            result["ratio"] = raw_s / result["seconds"] if result["seconds"] else float("nan")
            out["kinds"][kind] = result
            print(
                f"  {kind:<9} {rows:>9,} rows ({result['bytes'] / 1e6:.0f} MB): bossa"
                f" {result['seconds']:6.2f} s = {rows / result['seconds']:>9,.0f} rows/s"
                f" ({result['applied']:,} applied, {result['rejected']:,} rejected);"
                f" raw COPY {raw_s:5.2f} s = {rows / raw_s:>9,.0f} rows/s;"
                f" ratio {result['ratio']:.2f}"
            )
            if same_s is not None:
                floor = raw_s + same_s
                result["floor_ratio"] = floor / result["seconds"]
                print(
                    f"            raw COPY + the same writes (one insert-select, no checks):"
                    f" {floor:.2f} s; ratio {result['floor_ratio']:.2f}"
                )
            print(f"            phases {result['phases']}; {result['cpu']}")
    finally:
        await asyncio.to_thread(pg.destroy)
    return out


def targets(out: dict[str, Any], contracts: int) -> list[dict[str, Any]]:
    found = []
    bossa_s = sum(out["kinds"][k]["seconds"] for k in ("customers", "accounts", "contracts"))
    raw_s = sum(out["kinds"][k]["raw_seconds"] for k in ("customers", "accounts", "contracts"))
    found.append(
        {
            "target": "customers+accounts+contracts rows/s, ratio to raw COPY",
            "value": raw_s / bossa_s,
            "goal": f">= {TARGET_RATIO}",
            "met": raw_s / bossa_s >= TARGET_RATIO,
        }
    )
    for kind in ("customers", "accounts", "contracts"):
        ratio = out["kinds"][kind]["ratio"]
        found.append(
            {
                "target": f"{kind}: ratio to raw COPY",
                "value": ratio,
                "goal": f">= {TARGET_RATIO}",
                "met": ratio >= TARGET_RATIO,
            }
        )
    seconds = out["kinds"]["contracts"]["seconds"]
    if contracts >= TARGET_CONTRACTS:
        found.append(
            {
                "target": f"{contracts:,} contracts imported, seconds",
                "value": seconds,
                "goal": f"< {TARGET_CONTRACTS_S:.0f}",
                "met": seconds < TARGET_CONTRACTS_S,
            }
        )
    else:
        projected = seconds * TARGET_CONTRACTS / contracts
        found.append(
            {
                "target": f"1,000,000 contracts, seconds (projected from {contracts:,}; "
                "run the full size to measure)",
                "value": projected,
                "goal": f"< {TARGET_CONTRACTS_S:.0f}",
                "met": projected < TARGET_CONTRACTS_S,
            }
        )
    return found


def append_results(
    path: Path,
    quick: bool,
    sizes: tuple[int, int],
    out: dict[str, Any],
    found: list[dict[str, Any]],
    ref: str,
) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python -m bench.import.run", *sys.argv[1:]])
    customers, contracts = sizes
    lines = [
        f"\n## {now} — bulk import against raw COPY{' (quick)' if quick else ''}\n",
        f"- command: `{command}`",
        f"- git ref: `{ref}`",
        f"- machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release},"
        f" load average {os.getloadavg()[0]:.1f} at the end",
        f"- server: {out['server']}",
        f"- data: {customers:,} customers, {customers:,} accounts, {contracts:,} contracts"
        f" (1% bad in eight ways); default ImportSettings (chunks of 50,000)",
        "",
        "| kind | rows | MB | bossa s | bossa rows/s | applied | rejected | raw COPY s |"
        " raw rows/s | ratio | raw COPY + same writes s | ratio to that |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, r in out["kinds"].items():
        lines.append(
            f"| {kind} | {r['rows']:,} | {r['bytes'] / 1e6:.0f} | {r['seconds']:.2f} |"
            f" {r['rows'] / r['seconds']:,.0f} | {r['applied']:,} | {r['rejected']:,} |"
            f" {r['raw_seconds']:.2f} | {r['rows'] / r['raw_seconds']:,.0f} | {r['ratio']:.2f} |"
            + (
                f" {r['raw_seconds'] + r['same_writes_seconds']:.2f} | {r['floor_ratio']:.2f} |"
                if r.get("same_writes_seconds") is not None
                else " — | — |"
            )
        )
    lines += ["", "| target | value | goal | met |", "|---|---:|---:|---|"]
    lines += [
        f"| {t['target']} | {t['value']:.2f} | {t['goal']} | {'yes' if t['met'] else '**no**'} |"
        for t in found
    ]
    lines += ["", "Where bossa's time goes (seconds per phase) and CPU:", ""]
    lines += [f"- {kind}: {r['phases']}; {r['cpu']}" for kind, r in out["kinds"].items()]
    append_section(path, lines)


def main() -> None:
    parser = base_parser(
        (__doc__ or "").split("\n")[0], "100,000 contracts (about a minute) instead of 1,000,000"
    )
    args = parser.parse_args()
    customers, contracts = (50_000, 100_000) if args.quick else (500_000, 1_000_000)
    ref = git_ref()
    print("bench/import: bulk import (with validation) against raw COPY of the same file")
    print(f"  git ref {ref}; {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print(f"  {customers:,} customers and accounts, {contracts:,} contracts")
    with tempfile.TemporaryDirectory(prefix="bossa-bench-import-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # the embedded server's own user must enter it when run as root
        out = asyncio.run(run(base, free_port(), customers, contracts))
    found = targets(out, contracts)
    print("\n  targets:")
    for t in found:
        print(
            f"    {t['target']}: {t['value']:.2f} (goal {t['goal']}): "
            f"{'met' if t['met'] else 'NOT met'}"
        )
    if not args.no_results:
        append_results(
            ROOT / "bench" / "RESULTS.md", args.quick, (customers, contracts), out, found, ref
        )
        print("\nappended to bench/RESULTS.md")
    if args.json:
        args.json.write_text(
            json.dumps({"git_ref": ref, **out, "targets": found}, indent=2, default=str)
        )


if __name__ == "__main__":
    main()
