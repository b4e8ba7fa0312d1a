"""Each of the journal's protective mechanisms, tested so that removing it fails a test:
the worker's heartbeat (a batch that outlives its lease is not handed out again while
its worker lives), the retry backoff (`not_before` grows, is capped, and is jittered),
and the pause gate (a paused lane's workers take nothing and call nothing)."""

from __future__ import annotations

import asyncio
from datetime import datetime

from bossa.db import Pool
from bossa.journal import Failure, Journal, JournalSettings, NewEntry
from bossa.journal.models import Entry
from bossa.journal.worker import Worker

LANE = "mechanisms"


async def test_heartbeat_keeps_a_batch_that_outlives_its_lease(pool: Pool) -> None:
    """Handlers take 4 leases' time, with two workers reaping every 20 ms: the heartbeat
    (a third of the lease apart) keeps the lease, so no entry is handed out again."""
    journal = Journal(
        pool,
        JournalSettings(lease_ms=300, reap_interval_s=0.02, poll_interval_s=0.1, max_attempts=5),
        actor="test",
    )
    calls: list[int] = []

    async def slow(entry: Entry) -> None:
        calls.append(entry.id)
        await asyncio.sleep(1.2)

    entries = [NewEntry(LANE, "k", {}, key=f"K{i}") for i in range(3)]
    ids = [r.id for r in await journal.enqueue(entries)]
    workers = [Worker(journal, LANE, {"*": slow}, concurrency=1, batch_size=3) for _ in range(2)]
    await asyncio.wait_for(asyncio.gather(*(w.run(until_idle=True) for w in workers)), 30)
    assert sorted(calls) == ids  # each delivered once
    assert sum(w.stats.reaped for w in workers) == 0
    assert sum(w.stats.acked for w in workers) == 3
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("select attempts, errors from journal.entries order by id")
        ).fetchall()
    assert rows == [{"attempts": 1, "errors": []}] * 3


async def test_backoff_grows_is_capped_and_jittered(pool: Pool) -> None:
    """Twenty entries fail six times in a row (each made due again at once between
    rounds): the retry delay is base x 2^(attempt-1), capped at the maximum, times a
    jitter in [0.75, 1.25], and the jitter spreads the entries' retries apart."""
    base_ms, max_ms = 1_000, 8_000
    journal = Journal(
        pool,
        JournalSettings(backoff_base_ms=base_ms, backoff_max_ms=max_ms, max_attempts=10),
        actor="test",
    )
    await journal.enqueue([NewEntry(LANE, "k", {}, key=f"K{i}") for i in range(20)])
    for attempt in range(1, 7):
        taken = await journal.take(LANE, 100)
        assert len(taken.entries) == 20
        assert {e.attempts for e in taken.entries} == {attempt}
        results = await journal.fail(
            taken.token, LANE, [Failure(e.id, "E", "no") for e in taken.entries]
        )
        async with pool.connection() as conn:
            failed_at = {
                row["id"]: datetime.fromisoformat(row["at"])
                for row in await (
                    await conn.execute(
                        "select id, errors -> -1 ->> 'at' as at from journal.entries"
                    )
                ).fetchall()
            }
            # Made due at once: the next round needs no waiting.
            await conn.execute("update journal.entries set not_before = now()")
        nominal = min(max_ms, base_ms * 2 ** (attempt - 1)) / 1000
        delays = [(r.not_before - failed_at[r.entry_id]).total_seconds() for r in results]
        assert all(0.75 * nominal - 0.01 <= d <= 1.25 * nominal + 0.01 for d in delays), (
            attempt,
            nominal,
            delays,
        )
        # Jitter: twenty retries are not one burst.
        assert max(delays) - min(delays) > 0.05 * nominal, (attempt, delays)


async def test_a_paused_lane_is_not_taken_until_resumed(pool: Pool) -> None:
    """A worker on a paused lane runs for a second with work waiting and calls nothing;
    resumed, it handles everything."""
    journal = Journal(pool, JournalSettings(poll_interval_s=0.1), actor="test")
    await journal.declare_lane(LANE, owner="journal")
    ids = [r.id for r in await journal.enqueue([NewEntry(LANE, "k", {}, key="K")] * 3)]
    await journal.set_policy(LANE, {"paused": True}, actor="op")
    calls: list[int] = []

    async def handle(entry: Entry) -> None:
        calls.append(entry.id)

    worker = Worker(journal, LANE, {"*": handle}, concurrency=2)
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(1.0)
    worker.stop()
    await running
    assert calls == []
    assert worker.stats.taken == 0
    await journal.set_policy(LANE, {"paused": False}, actor="op")
    await asyncio.wait_for(Worker(journal, LANE, {"*": handle}).run(until_idle=True), 30)
    assert calls == ids
