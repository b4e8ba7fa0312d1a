"""A worker that loses its database exits non-zero, with one error line, for its
supervisor to restart it; it never hangs retrying a pool that cannot come back.

The fault is real: a `bossa journal work` process against a PostgreSQL of the test's own,
stopped for longer than BOSSA_JOURNAL_DATABASE_OUTAGE_S (compressed to two seconds).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from bossa.db import open_pool
from bossa.db.migrations import migrate
from bossa.journal import DatabaseLost, Journal, JournalSettings, NewEntry, Worker
from bossa.journal.models import Entry
from tests.support import own_postgres

pytestmark = pytest.mark.fault

ROOT = Path(__file__).resolve().parents[2]
OUTAGE_S = 2.0


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_worker_whose_database_stays_away_exits_non_zero() -> None:
    with own_postgres() as server:
        url = server.url("bossa")
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("select journal.declare_lane('outage', 'journal')")
            conn.execute(
                "insert into journal.entries (lane, kind, payload, state, created_by)"
                " values ('outage', 'noop', '{}', 'ready', 'test')"
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOSSA_")}
        env.update(
            BOSSA_DATABASE_URL=url,
            BOSSA_JOURNAL_DATABASE_OUTAGE_S=str(OUTAGE_S),
            BOSSA_JOURNAL_REAP_INTERVAL_S="0.1",
            BOSSA_JOURNAL_POLL_INTERVAL_S="0.5",
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "bossa.cli", "journal", "work", "--lane", "outage"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:

            def delivered() -> bool:
                assert proc.poll() is None, "the worker exited before the fault"
                with psycopg.connect(url) as conn:
                    row = conn.execute(
                        "select count(*) from journal.entries where state = 'done'"
                    ).fetchone()
                return bool(row and row[0] == 1)

            _wait_for(delivered, 60, "the worker delivered nothing")
            server.stop()  # the test's own server: never the machine's
            stopped_at = time.monotonic()
            try:
                _, stderr = proc.communicate(timeout=OUTAGE_S + 30)
            except subprocess.TimeoutExpired:
                pytest.fail("the worker still runs long after its database went away")
            took = time.monotonic() - stopped_at
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 2, stderr[-2000:]
    # Not before the bound (an outage shorter than it is ridden out), and soon after it
    # (the pool's close and the interpreter's exit take a few seconds at most).
    assert OUTAGE_S <= took < OUTAGE_S + 20, took
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-2000:]
    assert stderr.rstrip().splitlines()[-1] == errors[0]
    assert "worker on lane 'outage'" in errors[0]
    assert "BOSSA_JOURNAL_DATABASE_OUTAGE_S" in errors[0]
    assert "supervisor" in errors[0]


async def test_a_short_outage_is_ridden_out() -> None:
    """PostgreSQL restarting within the bound: the worker carries on and delivers."""
    with own_postgres() as server:
        url = server.url("bossa")
        migrate(url)
        settings = JournalSettings(
            database_outage_s=60, reap_interval_s=0.1, poll_interval_s=0.2, lease_ms=2_000
        )
        async with open_pool(url, max_size=4) as pool:
            journal = Journal(pool, settings, actor="test")
            delivered: list[int] = []

            async def handler(entry: Entry) -> None:
                delivered.append(entry.id)

            worker = Worker(journal, "restart", {"*": handler}, concurrency=1)
            running = asyncio.create_task(worker.run())
            await journal.enqueue_one(NewEntry("restart", "k", {}))
            await _until(lambda: len(delivered) == 1, running)
            await asyncio.to_thread(server.restart)
            await _enqueue_once_it_answers(journal)
            await _until(lambda: len(delivered) == 2, running)
            worker.stop()
            await running


async def _until(done: Callable[[], bool], running: asyncio.Task[None]) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert not running.done(), running
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def _enqueue_once_it_answers(journal: Journal) -> None:
    """Stale pooled connections fail once after a restart."""
    for _ in range(100):
        try:
            await journal.enqueue_one(NewEntry("restart", "k", {}))
            return
        except psycopg.OperationalError:
            await asyncio.sleep(0.1)
    pytest.fail("the restarted server never answered")


async def test_a_closed_pool_stops_the_worker_at_once(journal_settings: JournalSettings) -> None:
    """The pool will not come back: no waiting out the outage bound, and every taker stops
    (before, one crashed taker closed the pool and the others looped on "pool is closed")."""
    with own_postgres() as server:
        url = server.url("bossa")
        migrate(url)
        settings = journal_settings.model_copy(update={"database_outage_s": 600})
        async with open_pool(url, max_size=4) as pool:
            journal = Journal(pool, settings, actor="test")
            worker = Worker(journal, "closing", {}, concurrency=4)
            running = asyncio.create_task(worker.run())
            await asyncio.sleep(0.3)
            await pool.close()
            started = time.monotonic()
            with pytest.raises(DatabaseLost, match="pool is closed"):
                await asyncio.wait_for(running, timeout=10)
            assert time.monotonic() - started < 5
