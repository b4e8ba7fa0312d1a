"""bench/sync/delay: the delay from a product purchase to the rating pipeline rating with
it, while the pipeline rates a steady stream of CDR files (issue 14: p99 <= 1 s), on a
private durable PostgreSQL.

    .venv/bin/python -m bench.sync.delay            # 300 purchases
    .venv/bin/python -m bench.sync.delay --quick    # 60 purchases

The pipeline is `bossa sync pipeline INBOX` as its own process (S13, the interleaving
pipeline: BOSSA_SYNC_MAX_EVENTS=1, so one READY event is applied before the next file;
the inbox looked at every 0.1 s). A loader keeps CDR files of 5,000 records of 2,000
subscribed numbers coming, one waiting at a time, so that the pipeline is rating whenever
a purchase lands. Each purchase is a product change of one of 20 lines (SOIP <-> WIBRO:
the purchase of the other product, in its business transaction with its event); right
after its commit a probe file with one CDR of that number, starting 1 s after the
purchase, is dropped in the inbox. Measured per purchase, from the commit:

- applied: until the pipeline marked its event PROCESSED (its account data current);
- rated: until the probe's record is in rating.rated_usage, rated with the new product
  (file stability in the inbox, two looks, included).

A probe rated with the old product would be a failure, and is counted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, Cpu, append_section, base_parser, fmt, free_port, git_ref, pct

sys.path.insert(0, str(ROOT))

from tests.rating.conftest import voice_tariff

from bossa import ledger, rating
from bossa.customers import load_sample_operator
from bossa.customers import service as customers
from bossa.customers.models import ContractRequest, CustomerRequest, ProductChange
from bossa.db import EmbeddedPostgres, Pool, open_pool
from bossa.db.migrations import migrate
from bossa.journal import Journal, JournalSettings
from bossa.runtime import Runtime

LINES = 20
LOAD_NUMBERS = 2_000
LOAD_FILE = 5_000
HEADER = "record_key,msisdn,destination,start,duration\n"
TARGET_P99_S = 1.0


def line_number(n: int) -> str:
    return f"8210777{n:04d}"


async def prepare(url: str, pool: Pool) -> Runtime:
    """The sample operator, SOIP and WIBRO tariffs, LINES lines on SOIP (their own
    customers, accounts, contracts), and LOAD_NUMBERS numbers subscribed for the load."""
    journal = Journal(pool, JournalSettings(), actor="bench")
    rt = Runtime.around(url, journal, embedded=False)
    await load_sample_operator(pool, actor="bench")
    await rating.add_tariff(pool, voice_tariff(), actor="bench")
    await rating.add_tariff(pool, voice_tariff(product_code="WIBRO"), actor="bench")
    for n in range(LINES):
        customer, account = f"C-8{n:03d}", f"A-8{n:03d}"
        await customers.create_customer(
            pool,
            CustomerRequest(id=customer, name=f"line {n}", msisdn=f"+{line_number(n)}"),
            actor="bench",
        )
        await customers.open_account(
            pool,
            ledger.AccountRequest(account=account, customer=customer, currency="KRW"),
            actor="bench",
        )
        await customers.create_contract(
            journal,
            rt.deliverer,
            ContractRequest(
                sa_id=f"SA-8{n:03d}", customer=customer, account=account, product="SOIP"
            ),
            actor="bench",
        )
    async with pool.connection() as conn, conn.transaction():
        for k in range(LOAD_NUMBERS):
            await rating.subscribe(
                conn,
                msisdn=f"8230{k:06d}",
                account_id=f"A-100{1 + k % 4}",
                product_code="SOIP",
                at=dt.datetime(2026, 1, 1),
            )
    return rt


def waiting(inbox: Path) -> bool:
    return any(inbox.glob("load-*.csv"))


def drop(inbox: Path, name: str, lines: list[str]) -> None:
    """Written aside and moved in: the file appears whole."""
    aside = inbox.parent / f"{name}.part"
    aside.write_text(HEADER + "".join(line + "\n" for line in lines))
    aside.rename(inbox / name)


async def loader(inbox: Path, stop: asyncio.Event) -> int:
    """Keeps one load file waiting in the inbox; returns the records dropped."""
    dropped = 0
    k = 0
    while not stop.is_set():
        if not await asyncio.to_thread(waiting, inbox):
            lines = [
                f"L{k}-{i},8230{(k * LOAD_FILE + i) % LOAD_NUMBERS:06d},8221234567,"
                f"2026-03-02 {8 + i % 12:02d}:{i % 60:02d}:00,{30 + i % 300}"
                for i in range(LOAD_FILE)
            ]
            await asyncio.to_thread(drop, inbox, f"load-{k:05d}.csv", lines)
            dropped += LOAD_FILE
            k += 1
        await asyncio.sleep(0.02)
    return dropped


async def one_purchase(
    rt: Runtime, inbox: Path, i: int, product: str
) -> tuple[float, float | None, bool]:
    """A product change and its probe; (applied s, rated s, rated with the new product)."""
    n = i % LINES
    await customers.change_product(
        rt.journal, rt.deliverer, f"SA-8{n:03d}", ProductChange(product=product), actor="bench"
    )
    committed = time.perf_counter()
    start = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=1)
    drop(
        inbox,
        f"probe-{i:05d}.csv",
        [f"P{i},{line_number(n)},8221234567,{start:%Y-%m-%d %H:%M:%S},60"],
    )
    applied: float | None = None
    deadline = committed + 60
    async with rt.pool.connection() as conn:
        while time.perf_counter() < deadline:
            if applied is None:
                row = await (
                    await conn.execute(
                        "select count(*) as n from journal.lane_entries"
                        " where lane = 'sync.pipeline.0' and key = %s and state <> 'done'",
                        (f"C-8{n:03d}",),
                    )
                ).fetchone()
                if row is not None and row["n"] == 0:
                    applied = time.perf_counter() - committed
            row = await (
                await conn.execute(
                    "select product_code from rating.rated_usage where record_key = %s", (f"P{i}",)
                )
            ).fetchone()
            if row is not None:
                rated = time.perf_counter() - committed
                return (
                    applied if applied is not None else rated,
                    rated,
                    row["product_code"] == product,
                )
            await asyncio.sleep(0.005)
    raise RuntimeError(f"probe P{i} not rated within 60 s")


def pipeline_process(url: str, inbox: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOSSA_")}
    env.update(
        BOSSA_DATABASE_URL=url,
        BOSSA_SYNC_MAX_EVENTS="1",
        BOSSA_SYNC_CHECK_INTERVAL_S="0.02",
        BOSSA_SYNC_POLL_S="0.02",
        BOSSA_LOG_LEVEL="warning",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "bossa.cli", "sync", "pipeline", str(inbox), "--poll", "0.1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def main() -> None:
    args = base_parser(__doc__ or "", "60 purchases instead of 300").parse_args()
    purchases = 60 if args.quick else 300
    print(f"bench/sync/delay: {purchases} purchases while rating files of {LOAD_FILE:,} CDRs")
    with tempfile.TemporaryDirectory() as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", port=free_port(), database="bossa", durable=True)
        await asyncio.to_thread(pg.start)
        inbox = Path(tmp) / "inbox"
        inbox.mkdir()
        proc: subprocess.Popen[str] | None = None
        try:
            url = pg.url("bossa")
            await asyncio.to_thread(migrate, url)
            async with open_pool(url, min_size=2, max_size=6) as pool:
                rt = await prepare(url, pool)
                proc = pipeline_process(url, inbox)
                stop = asyncio.Event()
                loading = asyncio.create_task(loader(inbox, stop))
                await asyncio.sleep(3)  # the pipeline started, applied the set-up, rates
                applied: list[float] = []
                rated: list[float] = []
                stale = 0
                async with pool.connection() as conn:
                    before = await (
                        await conn.execute("select count(*) as n from rating.rated_usage")
                    ).fetchone()
                with Cpu() as cpu:
                    for i in range(purchases):
                        product = "WIBRO" if (i // LINES) % 2 == 0 else "SOIP"
                        a, r, fresh = await one_purchase(rt, inbox, i, product)
                        applied.append(a)
                        rated.append(r or 0.0)
                        stale += not fresh
                        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                        await asyncio.sleep(0.1)
                stop.set()
                await loading
                async with pool.connection() as conn:
                    after = await (
                        await conn.execute("select count(*) as n from rating.rated_usage")
                    ).fetchone()
                await rt.deliverer.close()
                assert before is not None
                assert after is not None
                cdr_rate = (after["n"] - before["n"]) / cpu.wall
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
            await asyncio.to_thread(pg.stop)
    p99 = pct(rated, 0.99)
    lines = [
        f"- purchase to its event applied by the pipeline: p50 {fmt(pct(applied, 0.5))} s,"
        f" p99 {fmt(pct(applied, 0.99))} s, max {fmt(max(applied))} s",
        f"- purchase to a CDR after it rated with the new product (inbox pickup included):"
        f" p50 {fmt(pct(rated, 0.5))} s, p99 {fmt(p99)} s, max {fmt(max(rated))} s;"
        f" target p99 <= {TARGET_P99_S:g} s: {'met' if p99 <= TARGET_P99_S else 'NOT met'};"
        f" {stale} of {purchases} probes rated with the old product",
        f"- meanwhile the pipeline rated {fmt(cdr_rate)} CDRs/s (files of {LOAD_FILE:,});"
        f" {cpu.summary()}",
    ]
    print("\n".join(lines))
    if not args.no_results:
        command = f".venv/bin/python -m bench.sync.delay{' --quick' if args.quick else ''}"
        append_section(
            ROOT / "bench" / "RESULTS.md",
            [
                "",
                f"## bench/sync/delay {dt.date.today()} at {git_ref()}"
                + (" (quick)" if args.quick else ""),
                "",
                f"`{command}`: {purchases} purchases, one at a time, while `bossa sync"
                f" pipeline` rates a stream of CDR files (BOSSA_SYNC_MAX_EVENTS=1, inbox"
                " poll 0.1 s).",
                "",
                *lines,
            ],
        )


if __name__ == "__main__":
    asyncio.run(main())
