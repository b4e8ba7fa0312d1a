"""The worker runtime: woken by NOTIFY, heartbeats, graceful stop, metrics; and the
outbox, heartbeat and retention rules it relies on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import psycopg
import pytest
from prometheus_client import REGISTRY

from bossa.db import Pool
from bossa.journal import Entry, Journal, JournalSettings, NewEntry, Worker, service


async def count(pool: Pool) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute("select count(*) as n from journal.entries")).fetchone()
    assert row is not None
    return int(row["n"])


async def test_enqueue_joins_the_callers_transaction(journal: Journal, pool: Pool) -> None:
    async with pool.connection() as conn:
        async with conn.transaction():
            await journal.enqueue([NewEntry("l", "k", {"n": 1}, key="SA-1")], conn=conn)
            assert await count(pool) == 0  # not visible before the business change commits
        async with conn.transaction(force_rollback=True):
            await journal.enqueue([NewEntry("l", "k", {"n": 2}, key="SA-1")], conn=conn)
    assert await count(pool) == 1
    async with pool.connection() as conn:
        row = await (await conn.execute("select unfinished from journal.keys")).fetchone()
    assert row == {"unfinished": 1}  # the rolled-back entry left no trace on its key


async def test_heartbeat_keeps_the_lease(journal: Journal) -> None:
    await journal.enqueue_one(NewEntry("l", "k", {}))
    taken = await journal.take("l", 1, lease_ms=300)
    for _ in range(3):
        await asyncio.sleep(0.15)
        assert await journal.heartbeat(taken.token, "l", taken.ids, lease_ms=300) == set(taken.ids)
    assert await journal.reap_expired("l") == []
    assert await journal.ack(taken.token, taken.ids) == set(taken.ids)


async def test_purge_keeps_retention(journal: Journal, pool: Pool) -> None:
    await journal.enqueue([NewEntry("l", "k", {"n": n}) for n in range(30)])
    await journal.declare_lane("l", owner="journal")
    taken = await journal.take("l", 20)
    await journal.ack(taken.token, taken.ids)
    assert await service.purge(journal) == 0  # within the default retention
    await journal.set_policy("l", {"retention_s": 0}, actor="test")
    journal.settings = journal.settings.model_copy(update={"purge_batch": 7})
    assert await service.purge(journal, "l") == 20
    assert await count(pool) == 10


async def test_notify_wakes_an_idle_worker(journal: Journal, db_url: str) -> None:
    seen: list[float] = []

    async def handler(entry: Entry) -> None:
        seen.append((datetime.now(UTC) - entry.created_at).total_seconds())

    worker = Worker(journal, "l", {"k": handler}, listen_url=db_url, poll_interval_s=30)
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(0.5)  # the worker is idle, sleeping up to 30 s
    for n in range(5):
        await journal.enqueue_one(NewEntry("l", "k", {"n": n}))
        await asyncio.sleep(0.05)
    for _ in range(100):
        if len(seen) == 5:
            break
        await asyncio.sleep(0.05)
    worker.stop()
    await running
    assert len(seen) == 5
    assert max(seen) < 1.0  # woken by NOTIFY, not by the 30 s poll


async def test_worker_wakes_for_a_due_retry_without_notify(journal: Journal) -> None:
    attempts: list[int] = []

    async def flaky(entry: Entry) -> None:
        attempts.append(entry.attempts)
        if entry.attempts < 3:
            raise RuntimeError("server down")

    await journal.enqueue_one(NewEntry("l", "k", {}))
    worker = Worker(journal, "l", {"k": flaky}, poll_interval_s=30)  # no LISTEN at all
    started = time.monotonic()
    await worker.run(until_idle=True)
    assert attempts == [1, 2, 3]
    assert time.monotonic() - started < 5
    assert worker.stats.acked == 1
    assert worker.stats.failed == 2


def test_metrics_count_what_workers_do(journal_settings: JournalSettings, db_url: str) -> None:
    async def scenario() -> None:
        from bossa.db import open_pool

        async with open_pool(db_url) as pool:
            journal = Journal(pool, journal_settings)
            await journal.enqueue([NewEntry("metrics-lane", "noop", {}) for _ in range(7)])
            from bossa.journal.handlers import REGISTRY as HANDLERS

            await Worker(journal, "metrics-lane", HANDLERS).run(until_idle=True)

    asyncio.run(scenario())
    acked = REGISTRY.get_sample_value("bossa_journal_acked_total", {"lane": "metrics-lane"})
    assert acked == 7


@pytest.mark.fault
def test_sigterm_finishes_the_entry_in_hand_and_gives_back_the_rest(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "create table public.deliveries"
            " (entry_id bigint, pid int, at timestamptz default now())"
        )
        conn.execute(
            "insert into journal.entries (lane, kind, payload, state, created_by)"
            " select 'slow', 'k', jsonb_build_object('n', n), 'ready', 'test'"
            " from generate_series(1, 20) n"
        )
        conn.execute("select journal.declare_lane('slow', 'journal')")
    env = {
        **os.environ,
        "BOSSA_DATABASE_URL": db_url,
        "BOSSA_TEST_HANDLER_S": "0.3",
        "BOSSA_JOURNAL_CONCURRENCY": "1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bossa.cli",
            "journal",
            "work",
            "--lane",
            "slow",
            "--handler",
            "tests.journal.worker_process:slow_handler",
            "--batch",
            "20",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        # Start-up (imports, the schema check) takes seconds on a loaded machine: a
        # SIGTERM before the worker installed its handler would kill it outright.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            row = conn.execute("select count(*) from public.deliveries").fetchone()
            if row and row[0] >= 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        delivered = {r[0] for r in conn.execute("select entry_id from public.deliveries")}
        states = dict(
            conn.execute("select state::text, count(*) from journal.entries group by 1").fetchall()
        )
        attempts = conn.execute(
            "select max(attempts) from journal.entries where state = 'ready'"
        ).fetchone()
    assert states.get("taken", 0) == 0  # nothing left leased: no wait for a lease to expire
    assert states["done"] == len(delivered)  # every started entry finished and was acked
    assert states["ready"] == 20 - len(delivered)  # the rest given back
    assert attempts == (0,)  # giving back does not count an attempt
    assert "given back" in stdout


async def test_a_trickle_is_watched_by_one_taker_and_the_rest_sleep_quietly(
    journal_settings: JournalSettings, pool: Pool, db_url: str
) -> None:
    """While one taker watches the lane (lingers), the others that find nothing nap
    without registering a sleep: each registration is a write, and makes the next
    enqueue pay a NOTIFY, which serialises committing transactions."""

    class Counting(Journal):
        sleeps = 0

        async def mark_asleep(self, lane: str) -> None:
            self.sleeps += 1
            await super().mark_asleep(lane)

    journal = Counting(pool, journal_settings.model_copy(update={"poll_interval_s": 30}))
    seen: list[float] = []

    async def handler(entry: Entry) -> None:
        seen.append((datetime.now(UTC) - entry.created_at).total_seconds())

    worker = Worker(journal, "l", {"k": handler}, listen_url=db_url, concurrency=4)
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(0.3)
    asleep_at_start = journal.sleeps
    for n in range(60):
        await journal.enqueue_one(NewEntry("l", "k", {"n": n}))
        await asyncio.sleep(0.02)
    for _ in range(100):
        if len(seen) == 60:
            break
        await asyncio.sleep(0.05)
    during = journal.sleeps - asleep_at_start
    worker.stop()
    await running
    assert len(seen) == 60
    assert max(seen) < 1.0
    assert during <= 3, during
