"""bench/rating: CDRs rated per second, bossa's vectorised engine against the
row-at-a-time reference of the same rules, and end to end (file in, rated usage, suspense,
allowances and the ledger's usage committed) on a private durable PostgreSQL.

    .venv/bin/python -m bench.rating.run            # 1,000,000 CDRs, 100,000 accounts
    .venv/bin/python -m bench.rating.run --quick    # 100,000 CDRs, 10,000 accounts

The workload: 20 products each with a tariff of ~200 destination prefixes in 7 zones, three
time bands, per-second or per-minute increments, a minimum charge, a discount, and an
allowance in two included zones; one day of traffic (a Monday, so calls cross the 08:00 and
20:00 band changes), durations up to 20 minutes, 0.5% of calls from unknown numbers.
The reference rates a sample (it is ~100x slower); its rate is per record, like bossa's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import ROOT, Cpu, append_section, base_parser, fmt, free_port, git_ref

sys.path.insert(0, str(ROOT))

from tests.rating.reference import Cdr, Subscription, rate

from bossa.db import EmbeddedPostgres, open_pool
from bossa.db.migrations import migrate
from bossa.rating.engine import RatingEngine
from bossa.rating.models import Band, TariffVersion
from bossa.rating.service import Pipeline, add_tariff, rate_file
from bossa.rating.store import RATED_COLUMNS

TARGET_RATIO = 10.0
TARGET_RATE = 125_000.0
DAY = dt.datetime(2026, 3, 2)  # a Monday
PRODUCTS = [f"P{i:02d}" for i in range(20)]


def tariffs(rng: random.Random) -> list[TariffVersion]:
    out = []
    for code in PRODUCTS:
        zones = {str(d): "national" for d in range(2, 10)}
        zones.update({str(p): f"z{p % 6}" for p in rng.sample(range(10, 9999), 200)})
        rates = {(z, b): rng.randint(0, 900) for z in set(zones.values()) for b in Band}
        out.append(
            TariffVersion(
                product_code=code,
                valid_from=dt.date(2026, 1, 1),
                valid_to=None,
                increment=rng.choice((1, 60)),
                min_charge=rng.choice((0, 10, 50)),
                discount_percent=rng.choice((0, 5, 10)),
                allowance_seconds=rng.choice((0, 600, 3600)),
                zones=zones,
                rates=rates,
                included_zones=frozenset({"national", "z1"}),
            )
        )
    return out


def write_cdrs(path: Path, n: int, accounts: int, rng: random.Random, prefix: str = "c") -> None:
    with path.open("w") as f:
        f.write("record_key,msisdn,destination,start,duration\n")
        for i in range(n):
            number = rng.randrange(accounts) if rng.random() > 0.005 else accounts + i
            start = DAY + dt.timedelta(seconds=rng.randrange(86_400))
            dest = f"{rng.randrange(2, 9999)}{rng.randrange(10**6):06d}"
            when = f"{start:%Y-%m-%d %H:%M:%S}"
            f.write(f"{prefix}{i},{8200000000 + number},{dest},{when},{rng.randrange(1200)}\n")


def reference_rate(path: Path, sample: int, accounts: int, versions: list[TariffVersion]) -> float:
    cdrs = []
    with path.open() as f:
        next(f)
        for _, line in zip(range(sample), f, strict=False):
            k, m, d, s, t = line.rstrip("\n").split(",")
            cdrs.append(Cdr(k, m, d, dt.datetime.fromisoformat(s), int(t)))
    subs = [
        Subscription(str(8200000000 + i), f"A{i}", PRODUCTS[i % 20], dt.datetime(2026, 1, 1), None)
        for i in range(accounts)
    ]
    started = time.perf_counter()
    rate(cdrs, subs, versions)
    return len(cdrs) / (time.perf_counter() - started)


def subscriptions(accounts: int) -> list[tuple[str, str, str, dt.datetime, dt.datetime | None]]:
    return [
        (str(8200000000 + i), f"A{i}", PRODUCTS[i % 20], dt.datetime(2026, 1, 1), None)
        for i in range(accounts)
    ]


def engine_rate(
    path: Path, n: int, accounts: int, versions: list[TariffVersion]
) -> tuple[float, dict[str, int]]:
    """DuckDB, as bossa runs it: records per second, and each rated record's charge."""
    engine = RatingEngine()
    engine.load_tariffs(versions)
    engine.put_subscriptions(subscriptions(accounts))
    started = time.perf_counter()
    engine.stage_csv(path)
    engine.rate()
    elapsed = time.perf_counter() - started
    charges = dict(engine.rows("select record_key, charge from result where reason is null"))
    engine.close()
    return n / elapsed, charges


def polars_rate(
    path: Path, n: int, accounts: int, versions: list[TariffVersion]
) -> tuple[float, dict[str, int]]:
    """The same rules in Polars (bench/rating/polars_engine.py), for the engine choice."""
    from bench.rating import polars_engine

    frames = polars_engine.frames(versions, subscriptions(accounts))
    started = time.perf_counter()
    result = polars_engine.rate(path, frames)
    elapsed = time.perf_counter() - started
    return n / elapsed, dict(zip(result["record_key"], result["charge"], strict=True))


def setup(url: str, accounts: int) -> None:
    migrate(url)
    with psycopg.connect(url, autocommit=True) as c:
        # Setup by SQL: the bench measures rating, not opening 100,000 accounts.
        for code in PRODUCTS:
            c.execute("insert into customers.products (code, name) values (%s, %s)", (code, code))
        c.execute(
            "insert into customers.customers (id, name) "
            "select 'C' || i, 'customer ' || i from generate_series(0, %s - 1) i",
            (accounts,),
        )
        c.execute(
            "insert into ledger.accounts (id, customer_id, currency, created_by) "
            "select 'A' || i, 'C' || i, 'USD', 'bench' from generate_series(0, %s - 1) i",
            (accounts,),
        )
        c.execute(
            "insert into rating.subscriptions (msisdn, valid_from, account_id, product_code) "
            "select (8200000000 + i)::text, '2026-01-01', 'A' || i, "
            "'P' || lpad((i %% 20)::text, 2, '0') "
            "from generate_series(0, %s - 1) i",
            (accounts,),
        )
        c.execute("vacuum analyze")


async def end_to_end(
    url: str, path: Path, warm_path: Path, versions: list[TariffVersion]
) -> dict[str, Any]:
    """The file on a fresh pipeline (cold: every number's data loaded from PostgreSQL),
    then a second file on the same pipeline (warm: the inbox daemon's steady state,
    S10's memory kept across files)."""
    async with open_pool(url, max_size=2) as pool:
        for version in versions:
            await add_tariff(pool, version, actor="bench")
        pipeline = Pipeline.open()
        with Cpu() as cpu:
            started = time.perf_counter()
            report = await rate_file(pool, pipeline, path, actor="bench")
            elapsed = time.perf_counter() - started
        started = time.perf_counter()
        warm = await rate_file(pool, pipeline, warm_path, actor="bench")
        warm_elapsed = time.perf_counter() - started
        pipeline.close()
        raw_rows, raw_s = await asyncio.to_thread(raw_copy, url, path.parent)
        return {
            "elapsed_s": elapsed,
            "rate": report.records / elapsed,
            "rated": report.rated,
            "suspended": report.suspended,
            "cpu": cpu.summary(),
            "phases": report.phases,
            "warm_records": warm.records,
            "warm_rate": warm.records / warm_elapsed,
            "warm_phases": warm.phases,
            "raw_rows": raw_rows,
            "raw_s": raw_s,
        }


def raw_copy(url: str, work: Path) -> tuple[int, float]:
    """The bound on end to end from PostgreSQL alone: the cold batch's rated rows, as
    bossa wrote them, COPYed from a file in one transaction into an empty table like
    rating.rated_usage (the same columns, keys, indexes and checks), in the same run."""
    rows = work / "raw-rated.csv"
    order = "order by account_id, started_at"  # as bossa writes them
    with psycopg.connect(url) as conn:
        with (
            rows.open("wb") as f,
            conn.cursor() as cur,
            cur.copy(
                f"copy (select {RATED_COLUMNS} from rating.rated_usage "  # noqa: S608 -- constants
                f"where batch_id = (select min(id) from rating.batches) {order}) "
                "to stdout (format csv)"
            ) as copy,
        ):
            for block in copy:
                f.write(block)
        conn.execute("create table rating.raw_copy (like rating.rated_usage including all)")
        conn.commit()
        started = time.perf_counter()
        with rows.open("rb") as f, conn.cursor() as cur:
            statement = f"copy rating.raw_copy ({RATED_COLUMNS}) from stdin (format csv)"
            with cur.copy(statement) as copy:
                while block := f.read(1 << 20):
                    copy.write(block)
        conn.commit()
        elapsed = time.perf_counter() - started
        row = conn.execute("select count(*) from rating.raw_copy").fetchone()
        conn.execute("drop table rating.raw_copy")
        conn.commit()
    return (int(row[0]) if row else 0), elapsed


async def main() -> None:
    parser = base_parser(__doc__ or "", "100,000 CDRs over 10,000 accounts")
    args = parser.parse_args()
    n, accounts = (100_000, 10_000) if args.quick else (1_000_000, 100_000)
    rng = random.Random(14)
    versions = tariffs(rng)
    with tempfile.TemporaryDirectory(prefix="bossa-bench-rating-") as tmp:
        base = Path(tmp)
        cdr_file = base / "cdrs.csv"
        write_cdrs(cdr_file, n, accounts, rng)
        warm_file = base / "cdrs-warm.csv"
        write_cdrs(warm_file, n // 5, accounts, rng, prefix="w")
        print(f"bench/rating at {git_ref()}: {n:,} CDRs, {accounts:,} accounts, 20 tariffs")
        ref = reference_rate(cdr_file, min(n, 20_000), accounts, versions)
        eng, charges = engine_rate(cdr_file, n, accounts, versions)
        pol, pol_charges = polars_rate(cdr_file, n, accounts, versions)
        agree = pol_charges == charges
        print(f"  reference, row at a time ({min(n, 20_000):,} CDRs): {fmt(ref)} CDRs/s")
        print(f"  engine, DuckDB (read, check, rate; {len(charges):,} rated): {fmt(eng)} CDRs/s")
        print(f"  engine / reference: {eng / ref:.1f}x (target >= {TARGET_RATIO:.0f}x)")
        print(
            f"  the same rules in Polars: {fmt(pol)} CDRs/s, DuckDB/Polars {eng / pol:.2f}x;"
            f" same charges: {agree}"
        )
        port = free_port()
        pg = EmbeddedPostgres(base / "pg", port=port, database="bossa", durable=True)
        await asyncio.to_thread(pg.start)
        try:
            url = pg.url("bossa")
            await asyncio.to_thread(setup, url, accounts)
            e2e = await end_to_end(url, cdr_file, warm_file, versions)
        finally:
            await asyncio.to_thread(pg.stop)
        print(
            f"  end to end (file in, committed): {fmt(e2e['rate'])} CDRs/s in "
            f"{e2e['elapsed_s']:.1f} s (target >= {fmt(TARGET_RATE)}); {e2e['cpu']}"
        )
        print(f"  phases (s): {e2e['phases']}")
        raw_rate = e2e["raw_rows"] / e2e["raw_s"]
        cap = n / e2e["raw_s"]  # the file's records per second of that COPY alone
        raw_line = (
            f"raw COPY of the cold batch's {e2e['raw_rows']:,} rated rows into an empty table"
            f" like rating.rated_usage, one transaction: {e2e['raw_s']:.1f} s,"
            f" {fmt(raw_rate)} rows/s; that COPY alone caps end to end at {fmt(cap)} CDRs/s"
            f" of this file (end to end / cap: {e2e['rate'] / cap:.2f})"
        )
        print(f"  {raw_line}")
        print(
            f"  end to end, warm pipeline ({e2e['warm_records']:,} more CDRs, same "
            f"pipeline): {fmt(e2e['warm_rate'])} CDRs/s; phases (s): {e2e['warm_phases']}"
        )
    if not args.no_results:
        append_section(
            ROOT / "bench" / "RESULTS.md",
            [
                "",
                f"## bench/rating {dt.date.today()} at {git_ref()}"
                + (" (quick)" if args.quick else ""),
                "",
                f"`.venv/bin/python -m bench.rating.run{' --quick' if args.quick else ''}`: "
                f"{n:,} CDRs, {accounts:,} accounts, 20 tariffs.",
                "",
                f"- reference (row at a time): {fmt(ref)} CDRs/s; engine: {fmt(eng)} CDRs/s;"
                f" ratio {eng / ref:.1f}x (target >= {TARGET_RATIO:.0f}x)",
                f"- the same rules in Polars: {fmt(pol)} CDRs/s (DuckDB/Polars {eng / pol:.2f}x,"
                f" same charges: {agree})",
                f"- end to end: {fmt(e2e['rate'])} CDRs/s, {e2e['elapsed_s']:.1f} s"
                f" (target >= {fmt(TARGET_RATE)}); {e2e['cpu']}",
                f"- end to end, warm pipeline (a second file of {e2e['warm_records']:,} CDRs,"
                f" memory kept): {fmt(e2e['warm_rate'])} CDRs/s",
                f"- {raw_line}",
                f"- phases, cold (s): {e2e['phases']}",
                f"- phases, warm (s): {e2e['warm_phases']}",
            ],
        )


if __name__ == "__main__":
    asyncio.run(main())
