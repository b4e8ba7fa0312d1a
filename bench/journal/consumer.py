"""The latency phase's consumers, each in a process of its own, as a worker daemon runs.

    python -m bench.journal.consumer {bossa|pgmq} URL

Prints `ready` once it consumes, then handles entries until a line `stop` (or EOF) on
stdin, and prints one JSON line: each entry's id and the `time.perf_counter()` at which
its handler started (CLOCK_MONOTONIC: the same clock as the producing process's). Run
apart from the producers, the consumer's event loop is not the one that hundreds of
pending sends a second keep busy: the figure is the queue's, for every system alike.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

LANE = "bench"  # the lane of bench.journal.run


async def _stopped() -> None:
    """Until the parent says stop (or goes away)."""
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line or line.strip() == "stop":
            return


async def bossa(url: str) -> dict[int, float]:
    from bossa.db import open_pool
    from bossa.journal import Journal, JournalSettings, Worker

    starts: dict[int, float] = {}

    async def handler(entry: Any) -> None:
        starts[entry.id] = time.perf_counter()

    async with open_pool(url, min_size=1, max_size=8) as pool:
        worker = Worker(
            Journal(pool, JournalSettings()),
            LANE,
            {"noop": handler},
            listen_url=url,
            concurrency=4,
            batch_size=100,
        )
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.5)
        print("ready", flush=True)
        await _stopped()
        worker.stop()
        await task
    return starts


async def pgmq(url: str) -> dict[int, float]:
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    starts: dict[int, float] = {}
    stop = asyncio.Event()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=8,
        open=False,
        kwargs={"autocommit": True, "row_factory": dict_row},
    )
    await pool.open(wait=True)

    async def consumer() -> None:
        while not stop.is_set():
            async with pool.connection() as c:
                cur = await c.execute(
                    "select msg_id from pgmq.read_with_poll('bench', 30, 100, 1, 10)"
                )
                rows = await cur.fetchall()
            now = time.perf_counter()
            for r in rows:
                starts[r["msg_id"]] = now
            if rows:
                async with pool.connection() as c:
                    await c.execute(
                        "select pgmq.archive('bench', %s::bigint[])",
                        ([r["msg_id"] for r in rows],),
                    )

    consumers = [asyncio.create_task(consumer()) for _ in range(4)]
    await asyncio.sleep(0.5)
    print("ready", flush=True)
    await _stopped()
    stop.set()
    await asyncio.gather(*consumers)
    await pool.close()
    return starts


def main() -> None:
    system, url = sys.argv[1], sys.argv[2]
    run = {"bossa": bossa, "pgmq": pgmq}[system]
    starts = asyncio.run(run(url))
    print(json.dumps({str(k): v for k, v in starts.items()}), flush=True)


if __name__ == "__main__":
    main()
