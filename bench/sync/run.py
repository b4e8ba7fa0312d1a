"""bench/sync: business events per second through the publisher and the listener, each
against the journal's own floor in the same run, on a private durable PostgreSQL.

    .venv/bin/python -m bench.sync.run            # 20,000 events
    .venv/bin/python -m bench.sync.run --quick    # 5,000 events

Publish: each event its own business transaction (an AccountCreated of one of 1,000
customers: notification list, policy hook, assembly, the publisher's switch, the router,
the enqueue), 4 publishers at once; the peer enqueues the same payloads with
`Journal.enqueue_one`, one transaction each, 4 at once. Listen: the sync listener
processes them (batches of 500, the account_data module's upsert in each ack's
transaction); the peer is a journal `Worker` acking the same number of entries with a
no-op handler, batches of 500.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, Cpu, append_section, base_parser, fmt, free_port, git_ref

sys.path.insert(0, str(ROOT))

from bossa import sync
from bossa.db import EmbeddedPostgres, Pool, open_pool
from bossa.db.migrations import migrate
from bossa.journal import Journal, NewEntry, Worker
from bossa.sync import InternalEvent, SyncSettings
from bossa.sync.lanes import Listener

CUSTOMERS = 1_000
PUBLISHERS = 4
PEER_LANE = "bench.peer"


def event(i: int) -> InternalEvent:
    return InternalEvent(
        name="customers.account_opened",
        customer_id=f"C-{i % CUSTOMERS:05d}",
        data={"account": f"A-{i % CUSTOMERS:05d}", "currency": "KRW", "cycle": "MONTHLY"},
    )


async def publish(pool: Pool, journal: Journal, n: int, settings: SyncSettings) -> float:
    async def one_publisher(start: int) -> None:
        for i in range(start, n, PUBLISHERS):
            async with pool.connection() as conn, conn.transaction():
                await sync.publish(conn, journal, [event(i)], settings=settings)

    t0 = time.perf_counter()
    await asyncio.gather(*(one_publisher(p) for p in range(PUBLISHERS)))
    return n / (time.perf_counter() - t0)


async def enqueue_peer(pool: Pool, journal: Journal, n: int) -> float:
    payload = sync.BusinessEvent(
        type="AccountCreated",
        customer_id="C-1",
        events=[event(1)],
        occurred_at=dt.datetime.now(dt.UTC),
    ).to_payload()

    async def one(start: int) -> None:
        for i in range(start, n, PUBLISHERS):
            async with pool.connection() as conn, conn.transaction():
                await journal.enqueue_one(
                    NewEntry(PEER_LANE, "business-event", payload, key=f"C-{i % CUSTOMERS:05d}"),
                    conn=conn,
                )

    t0 = time.perf_counter()
    await asyncio.gather(*(one(p) for p in range(PUBLISHERS)))
    return n / (time.perf_counter() - t0)


async def main() -> None:
    args = base_parser(__doc__ or "", "5,000 events instead of 20,000").parse_args()
    n = 5_000 if args.quick else 20_000
    settings = SyncSettings(batch=500, poll_s=0.05)
    print(f"bench/sync: {n:,} events over {CUSTOMERS:,} customers, {PUBLISHERS} publishers")
    with tempfile.TemporaryDirectory() as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", port=free_port(), database="bossa", durable=True)
        await asyncio.to_thread(pg.start)
        try:
            url = pg.url("bossa")
            await asyncio.to_thread(migrate, url)
            async with open_pool(url, min_size=2, max_size=PUBLISHERS + 2) as pool:
                journal = Journal(pool)
                await journal.declare_lane(PEER_LANE, owner="journal")
                with Cpu() as pub_cpu:
                    published = await publish(pool, journal, n, settings)
                peer_pub = await enqueue_peer(pool, journal, n)
                listener = Listener(journal, settings)
                with Cpu() as listen_cpu:
                    t0 = time.perf_counter()
                    await listener.run(until_idle=True)
                    listened = listener.stats.acked / (time.perf_counter() - t0)
                assert listener.stats.acked == n, listener.stats
                worker = Worker(journal, PEER_LANE, {"*": lambda e: None}, batch_size=500)
                t0 = time.perf_counter()
                await worker.run(until_idle=True)
                peer_listen = worker.stats.acked / (time.perf_counter() - t0)
                assert worker.stats.acked == n, worker.stats
        finally:
            await asyncio.to_thread(pg.stop)
    lines = [
        f"- publish (one business transaction per event): {fmt(published)} events/s;"
        f" journal enqueue_one alone: {fmt(peer_pub)}/s; ratio {published / peer_pub:.2f};"
        f" {pub_cpu.summary()}",
        f"- listen (batches of 500, applied in the ack's transaction): {fmt(listened)} events/s;"
        f" journal Worker with a no-op handler: {fmt(peer_listen)}/s;"
        f" ratio {listened / peer_listen:.2f}; {listen_cpu.summary()}",
    ]
    print("\n".join(lines))
    if not args.no_results:
        command = f".venv/bin/python -m bench.sync.run{' --quick' if args.quick else ''}"
        append_section(
            ROOT / "bench" / "RESULTS.md",
            [
                "",
                f"## bench/sync {dt.date.today()} at {git_ref()}"
                + (" (quick)" if args.quick else ""),
                "",
                f"`{command}`: {n:,} business events, {CUSTOMERS:,} customers.",
                "",
                *lines,
            ],
        )


if __name__ == "__main__":
    asyncio.run(main())
