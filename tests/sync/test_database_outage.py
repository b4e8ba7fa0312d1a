"""PostgreSQL away for longer than any retry schedule, under the rating pipeline's three
daemons as real processes: `bossa rating inbox`, `bossa sync listen` and `bossa sync
pipeline`. Each gives up after BOSSA_JOURNAL_DATABASE_OUTAGE_S (compressed to two
seconds) with one error line and a non-zero exit, for its supervisor to restart it; the
test then plays the supervisor. Checked: nothing lost (every CDR file dropped, also while
the database was away, is rated; every business event is processed), nothing applied
twice (each file's records charged once, each event written once).

The fault is real: a PostgreSQL of the test's own, on a free port, crashed (immediate
stop: backends quit mid-statement) and started again; never the machine's shared one."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bossa import rating
from bossa.customers import load_sample_operator
from bossa.db import open_pool
from bossa.db.embedded import EmbeddedPostgres
from bossa.db.migrations import migrate
from bossa.journal import Journal, JournalSettings
from bossa.runtime import Runtime
from tests.rating.conftest import voice_tariff
from tests.support import own_postgres
from tests.sync.test_listener_kill import LOG
from tests.sync.test_sync import HEADER, buy, change, new_line

pytestmark = [pytest.mark.anyio, pytest.mark.fault]

ROOT = Path(__file__).resolve().parents[2]
OUTAGE_S = 2.0
#: How long the database stays away: well past the daemons' bound.
AWAY_S = 3 * OUTAGE_S
LINES = 6
PRODUCTS = ["SOIP", "WIBRO", "SOIP", "WIBRO"]  # a purchase, then three changes
NUMBERS = [f"82109000{n:04d}" for n in range(1, 9)]  # subscribed: their records rate


def daemon(url: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOSSA_")}
    env.update(
        BOSSA_DATABASE_URL=url,
        BOSSA_JOURNAL_DATABASE_OUTAGE_S=str(OUTAGE_S),
        BOSSA_JOURNAL_LEASE_MS="2000",
        BOSSA_JOURNAL_REAP_INTERVAL_S="0.2",
        BOSSA_SYNC_BATCH="5",
        BOSSA_SYNC_POLL_S="0.05",
        BOSSA_SYNC_CHECK_INTERVAL_S="0.05",
        BOSSA_SYNC_MAX_EVENTS="1",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "bossa.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def gives_up(proc: subprocess.Popen[str]) -> str:
    """The daemon, its database away, exits non-zero with one error line naming the
    bound, for its supervisor; returns its stderr."""
    try:
        _, stderr = proc.communicate(timeout=OUTAGE_S + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the daemon still runs long after its database went away")
    assert proc.returncode not in (0, None), stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert "BOSSA_JOURNAL_DATABASE_OUTAGE_S" in errors[0], errors[0]
    return stderr


def stop_all(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


@asynccontextmanager
async def prepared() -> AsyncIterator[tuple[EmbeddedPostgres, str]]:
    """A private server, migrated, with the sample operator, the SOIP and WIBRO tariffs
    and NUMBERS subscribed to SOIP on A-1001."""
    with own_postgres(durable=True) as server:
        url = server.url("bossa")
        migrate(url)
        async with open_pool(url, max_size=4) as pool:
            await load_sample_operator(pool, actor="test")
            await rating.add_tariff(pool, voice_tariff(), actor="test")
            await rating.add_tariff(pool, voice_tariff(product_code="WIBRO"), actor="test")
            for number in NUMBERS:
                await rating.put_subscription(
                    pool,
                    msisdn=number,
                    account_id="A-1001",
                    product_code="SOIP",
                    at=datetime(2026, 1, 1),
                )
        yield server, url


def cdr_file(folder: Path, name: str, first: int, count: int) -> Path:
    """`count` records r-FIRST.. of the subscribed numbers, written aside and moved in
    (a whole file appears at once)."""
    lines = [
        f"r-{k},{NUMBERS[k % len(NUMBERS)]},8210999999,2026-03-02 10:{k % 60:02d}:00,60"
        for k in range(first, first + count)
    ]
    aside = folder.parent / f"{name}.tmp"
    aside.write_text(HEADER + "".join(line + "\n" for line in lines))
    return aside.rename(folder / name)


def rated_once(url: str, keys: int) -> None:
    """Every record r-0..r-(keys-1) rated exactly once, and booked once in the ledger."""
    rows = query(url, "select record_key from rating.rated_usage order by record_key")
    assert sorted(r[0] for r in rows) == sorted(f"r-{k}" for k in range(keys))
    assert query(url, "select count(*) from rating.suspense") == [(0,)]
    ((rated,),) = query(url, "select coalesce(sum(charge), 0) from rating.rated_usage")
    ((booked,),) = query(url, "select coalesce(sum(charge), 0) from ledger.rated_usage")
    assert rated == booked == keys * 120  # a mobile minute at peak each


async def test_the_rating_inbox_rates_files_dropped_while_the_database_was_away_once(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    async with prepared() as (server, url):
        first = daemon(url, "rating", "inbox", str(inbox), "--poll", "0.1")
        try:
            cdr_file(inbox, "a.csv", 0, 20)
            wait_for(lambda: (inbox / "done" / "a.csv").exists(), "a.csv was not rated")
            server.crash()
            # Dropped while the database is away, one of them a copy of a.csv.
            cdr_file(inbox, "b.csv", 20, 20)
            (inbox / "a-again.csv").write_bytes((inbox / "done" / "a.csv").read_bytes())
            cdr_file(inbox, "c.csv", 40, 20)
            gives_up(first)
            await asyncio.sleep(max(0.0, AWAY_S - OUTAGE_S))
            assert sorted(p.name for p in inbox.glob("*.csv")) == [
                "a-again.csv",
                "b.csv",
                "c.csv",
            ]
            assert list((inbox / "failed").iterdir()) == []
            server.start()
            second = daemon(url, "rating", "inbox", str(inbox), "--poll", "0.1", "--once")
            out, err = second.communicate(timeout=120)
            assert second.returncode == 0, err[-2000:]
        finally:
            stop_all(first)
        assert sorted(p.name for p in (inbox / "done").glob("*.csv")) == [
            "a-again.csv",
            "a.csv",
            "b.csv",
            "c.csv",
        ]
        assert "a-again.csv: batch 1, 20 rated, 0 suspended, 0 malformed (rated before)" in out
        rated_once(url, 60)
        assert query(url, "select count(*) from rating.batches") == [(3,)]


@asynccontextmanager
async def runtime_of(url: str) -> AsyncIterator[Runtime]:
    async with open_pool(url, max_size=4) as pool:
        journal = Journal(pool, JournalSettings(), actor="test")
        rt = Runtime.around(url, journal, embedded=False)
        try:
            yield rt
        finally:
            await rt.deliverer.close()


async def contract_events(url: str) -> int:
    """Every contract's purchase and changes, each its own business transaction with its
    event (LINES x PRODUCTS), and the trigger logging each write to rating's
    subscriptions (test_listener_kill's: 20 ms per row, so batches are in hand when the
    database goes)."""
    async with runtime_of(url) as rt:
        for n in range(1, LINES + 1):
            await new_line(rt, n)
            await buy(rt, n, PRODUCTS[0])
        for product in PRODUCTS[1:]:
            for n in range(1, LINES + 1):
                await change(rt, n, product)
        async with rt.pool.connection() as conn:
            await conn.execute(LOG)
    return LINES * len(PRODUCTS)


def states(url: str) -> dict[str, int]:
    rows = query(
        url,
        "select state, count(*) from journal.lane_entries where lane = 'sync.pipeline.0'"
        " group by state",
    )
    return {str(state): int(n) for state, n in rows}


def applied_once(url: str, changes: int) -> None:
    """Every event processed, each contract event written once (an insert per purchase or
    change, an update ending the previous subscription per change), each number's
    history in the order of its changes."""
    assert set(states(url)) == {"done"}, states(url)
    log = query(url, "select op from public.sub_log")
    assert sum(op == "INSERT" for (op,) in log) == changes
    assert sum(op == "UPDATE" for (op,) in log) == changes - LINES
    for n in range(1, LINES + 1):
        history = query(
            url,
            "select product_code from rating.subscriptions where msisdn = %s order by valid_from",
            f"8210555{n:04d}",
        )
        assert [p for (p,) in history] == PRODUCTS


def mid_batch(url: str) -> bool:
    now = states(url)
    return now.get("done", 0) >= 5 and now.get("taken", 0) > 0


async def test_the_listener_loses_nothing_and_applies_nothing_twice() -> None:
    async with prepared() as (server, url):
        changes = await contract_events(url)
        first = daemon(url, "sync", "listen")
        try:
            wait_for(lambda: mid_batch(url), "the listener made no progress")
            server.crash()
            gives_up(first)
            await asyncio.sleep(max(0.0, AWAY_S - OUTAGE_S))
            server.start()
            second = daemon(url, "sync", "listen", "--once")
            _, err = second.communicate(timeout=120)
            assert second.returncode == 0, err[-2000:]
        finally:
            stop_all(first)
        applied_once(url, changes)


async def test_the_interleaving_pipeline_loses_nothing_and_applies_nothing_twice(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    async with prepared() as (server, url):
        changes = await contract_events(url)
        cdr_file(inbox, "a.csv", 0, 20)
        first = daemon(url, "sync", "pipeline", str(inbox), "--poll", "0.1")
        try:
            wait_for(lambda: mid_batch(url), "the pipeline applied no events")
            server.crash()
            cdr_file(inbox, "b.csv", 20, 20)
            gives_up(first)
            cdr_file(inbox, "c.csv", 40, 20)
            await asyncio.sleep(max(0.0, AWAY_S - OUTAGE_S))
            server.start()
            second = daemon(url, "sync", "pipeline", str(inbox), "--poll", "0.1", "--once")
            _, err = second.communicate(timeout=120)
            assert second.returncode == 0, err[-2000:]
        finally:
            stop_all(first)
        assert sorted(p.name for p in (inbox / "done").glob("*.csv")) == [
            "a.csv",
            "b.csv",
            "c.csv",
        ]
        applied_once(url, changes)
        rated_once(url, 60)
