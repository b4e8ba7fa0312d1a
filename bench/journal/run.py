"""bossa's journal against its peers, in one run.

    .venv/bin/python -m bench.journal.run [--quick] [--json FILE] [--no-results]

Starts a private durable PostgreSQL (fsync on), one fresh database per system, and
drives bossa, pgmq, pgqueuer, procrastinate and a raw SKIP LOCKED table from one asyncio
process with psycopg 3. Prints the settings, each figure and bossa's ratio to each peer,
checks the targets, and appends a dated section to bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.common import Cpu, append_section, base_parser, fmt, free_port, git_ref, pct  # noqa: E402
from bossa.db import EmbeddedPostgres, open_pool  # noqa: E402
from bossa.db.migrations import migrate  # noqa: E402
from bossa.journal import Journal, JournalSettings, NewEntry, Worker  # noqa: E402
from bossa.journal.store import QUERIES  # noqa: E402  (the bare statements, timed alone)

LANE = "bench"
SYSTEMS = ["bossa", "pgmq", "pgqueuer", "procrastinate", "raw"]
PEERS = [s for s in SYSTEMS if s != "bossa"]
PHASES = ("enqueue", "drain", "keyed", "latency", "redelivery", "diagnostics")


# -- settings --------------------------------------------------------------------------


@dataclass
class Settings:
    quick: bool
    enqueue_n: int = 50_000
    enqueue1_n: int = 5_000
    producers: int = 4
    drain_cells: list[tuple[int, int, int]] = field(default_factory=list)  # (K, B, backlog)
    procrastinate_backlog: int = 10_000
    keys: int = 1000
    keyed_n: int = 100_000
    keyed_timeout_s: float = 45.0
    zipf_s: float = 1.1
    latency_s: float = 10.0
    #: The phases to run (all by default); `--phases latency` needs `--latency-rate`.
    phases: tuple[str, ...] = PHASES
    #: Entries per second of the latency phase; None: half of bossa's measured peak.
    latency_rate: float | None = None
    #: The consumers in the producers' process (as before 2026-11-29 21:00) instead of
    #: a process of their own.
    latency_inline: bool = False
    lease_ms: int = JournalSettings().lease_ms  # the default a deployment gets
    small_payload: int = 60
    large_payload: int = 1024

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if quick:
            return cls(
                quick=True,
                enqueue_n=10_000,
                enqueue1_n=1_000,
                drain_cells=[(1, 1, 1_000), (4, 100, 10_000)],
                procrastinate_backlog=2_000,
                keyed_n=20_000,
                keyed_timeout_s=20.0,
                latency_s=4.0,
            )
        return cls(
            quick=False,
            drain_cells=[(1, 1, 3_000), (4, 10, 20_000), (4, 100, 50_000), (16, 100, 50_000)],
        )


def payload_of(size: int, **extra: Any) -> dict[str, Any]:
    """A JSON object of about `size` bytes as compact JSON text."""
    base = {**extra, "p": ""}
    pad = size - len(json.dumps(base, separators=(",", ":")))
    base["p"] = "x" * max(0, pad)
    return base


# -- CPU accounting --------------------------------------------------------------------


# -- the systems -----------------------------------------------------------------------

Item = tuple[int, Any]  # (id, payload)


class System:
    """One queue under test: enqueue, take and ack with psycopg 3 async."""

    name = "?"

    def __init__(self, url: str) -> None:
        self.url = url

    async def setup(self) -> None: ...

    async def reset(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(self, payloads: list[Any], keys: list[str] | None = None) -> None:
        raise NotImplementedError

    def taker(
        self, batch: int, keyed: bool = False
    ) -> Callable[[], Awaitable[tuple[Callable[[], Awaitable[list[Item]]], Any, Any]]]:
        raise NotImplementedError


class AutocommitPool:
    """A pool of autocommit connections, no per-checkout check: what the peers get."""

    def __init__(self, url: str, size: int) -> None:
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=size,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
        )

    async def open(self) -> None:
        await self.pool.open(wait=True)

    async def close(self) -> None:
        await self.pool.close()


class Bossa(System):
    name = "bossa"
    #: Entries of one key per take: 1 for unkeyed drains (heads only, one statement), the
    #: batch for keyed ones (a run of a key under one lease, as a Worker takes it).
    run = 1

    async def setup(self) -> None:
        await asyncio.to_thread(migrate, self.url)
        self._cm = open_pool(self.url, min_size=1, max_size=24)
        self.pool = await self._cm.__aenter__()
        self.journal = Journal(self.pool, JournalSettings())

    async def close(self) -> None:
        await self._cm.__aexit__(None, None, None)

    async def reset(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("truncate journal.entries, journal.keys")
            await conn.commit()
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as c:
            await c.execute("vacuum analyze journal.entries")
            await c.execute("vacuum analyze journal.keys")

    async def enqueue(self, payloads: list[Any], keys: list[str] | None = None) -> None:
        ks = keys or [None] * len(payloads)
        await self.journal.enqueue(
            [
                NewEntry(lane=LANE, kind="noop", payload=p, key=k)
                for p, k in zip(payloads, ks, strict=True)
            ]
        )

    async def take(self, batch: int) -> tuple[Any, list[Item]]:
        taken = await self.journal.take(LANE, batch, run=self.run)
        return taken.token, [(e.id, e.payload) for e in taken.entries]

    async def ack(self, token: Any, ids: list[int]) -> None:
        await self.journal.ack(token, ids)


class Pgmq(System):
    name = "pgmq"
    sql_path = ROOT / ".venv/lib/python3.11/site-packages/pgmq/sql/pgmq.sql"

    async def setup(self) -> None:
        import pgmq

        path = Path(pgmq.__file__).parent / "sql" / "pgmq.sql"
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as c:
            await c.execute(path.read_text())  # type: ignore[arg-type]
            await c.execute("select pgmq.create('bench')")
            await c.execute("select pgmq.create('keyed')")
            await c.execute("select pgmq.create_fifo_index('keyed')")
            # A tuned variant: an expression index matching read_grouped's group expression.
            await c.execute("select pgmq.create('keyedx')")
            await c.execute(
                "create index q_keyedx_group on pgmq.q_keyedx"
                " ((coalesce(headers->>'x-pgmq-group', '_default_fifo_group')), msg_id)"
            )
        self.ac = AutocommitPool(self.url, 24)
        await self.ac.open()
        self.queue = "bench"

    async def close(self) -> None:
        await self.ac.close()

    async def reset(self) -> None:
        async with self.ac.pool.connection() as c:
            for q in ("bench", "keyed", "keyedx"):
                await c.execute(f"truncate pgmq.q_{q}, pgmq.a_{q}")
                await c.execute(f"vacuum analyze pgmq.q_{q}")

    keyed_queue = "keyed"

    async def enqueue(self, payloads: list[Any], keys: list[str] | None = None) -> None:
        async with self.ac.pool.connection() as c:
            if keys is not None:
                headers = [json.dumps({"x-pgmq-group": k}) for k in keys]
                await c.execute(
                    "select pgmq.send_batch(%s, %s::jsonb[], %s::jsonb[])",
                    (self.keyed_queue, [json.dumps(p) for p in payloads], headers),
                )
            elif len(payloads) == 1:
                await c.execute("select pgmq.send('bench', %s::jsonb)", (json.dumps(payloads[0]),))
            else:
                await c.execute(
                    "select pgmq.send_batch('bench', %s::jsonb[])",
                    ([json.dumps(p) for p in payloads],),
                )

    async def take(self, batch: int, keyed: bool = False) -> tuple[Any, list[Item]]:
        queue = self.keyed_queue if keyed else "bench"
        fn = "pgmq.read_grouped" if keyed else "pgmq.read"
        # fn is one of the two pgmq function names chosen above, never input.
        async with self.ac.pool.connection() as c:
            cur = await c.execute(f"select msg_id, message from {fn}(%s, 30, %s)", (queue, batch))  # noqa: S608  fn is one of two pgmq function names chosen above
            rows = await cur.fetchall()
        rows.sort(key=lambda r: r["msg_id"])
        return queue, [(r["msg_id"], r["message"]) for r in rows]

    async def ack(self, token: Any, ids: list[int]) -> None:
        async with self.ac.pool.connection() as c:
            await c.execute("select pgmq.archive(%s, %s::bigint[])", (token, ids))


class Raw(System):
    """The bound: a plain table, SKIP LOCKED claim (update) and delete ack."""

    name = "raw"

    async def setup(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as c:
            await c.execute(
                "create table raw_q (id bigint generated always as identity primary key,"
                " payload jsonb not null, taken_until timestamptz)"
            )
            await c.execute("create index raw_q_ready on raw_q (id) where taken_until is null")
        self.ac = AutocommitPool(self.url, 24)
        await self.ac.open()

    async def close(self) -> None:
        await self.ac.close()

    async def reset(self) -> None:
        async with self.ac.pool.connection() as c:
            await c.execute("truncate raw_q")
            await c.execute("vacuum analyze raw_q")

    async def enqueue(self, payloads: list[Any], keys: list[str] | None = None) -> None:
        async with self.ac.pool.connection() as c:
            await c.execute(
                "insert into raw_q (payload) select unnest(%s::jsonb[])",
                ([json.dumps(p) for p in payloads],),
            )

    async def take(self, batch: int) -> tuple[Any, list[Item]]:
        async with self.ac.pool.connection() as c:
            cur = await c.execute(
                "with c as (select id from raw_q where taken_until is null order by id"
                " limit %s for update skip locked)"
                " update raw_q r set taken_until = now() + interval '30 s' from c"
                " where r.id = c.id returning r.id, r.payload",
                (batch,),
            )
            rows = await cur.fetchall()
        return None, [(r["id"], r["payload"]) for r in rows]

    async def ack(self, token: Any, ids: list[int]) -> None:
        async with self.ac.pool.connection() as c:
            await c.execute("delete from raw_q where id = any(%s)", (ids,))


class PgQueuer(System):
    name = "pgqueuer"

    async def setup(self) -> None:
        from pgqueuer.db import PsycopgDriver
        from pgqueuer.queries import EntrypointExecutionParameter, Queries

        self._Queries = Queries
        self._Driver = PsycopgDriver
        self._param = EntrypointExecutionParameter(concurrency_limit=0)
        self._conns: list[psycopg.AsyncConnection[Any]] = []
        self._free: list[Any] = []
        q = await self._queries()
        await q.install()
        self._free.append(q)

    async def _queries(self) -> Any:
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        self._conns.append(conn)
        return self._Queries(self._Driver(conn))

    @contextlib.asynccontextmanager
    async def _q(self) -> Any:
        q = self._free.pop() if self._free else await self._queries()
        try:
            yield q
        finally:
            self._free.append(q)

    async def close(self) -> None:
        for c in self._conns:
            await c.close()

    async def reset(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as c:
            await c.execute("truncate pgqueuer, pgqueuer_log")
            await c.execute("vacuum analyze pgqueuer")

    async def enqueue(self, payloads: list[Any], keys: list[str] | None = None) -> None:
        data = [json.dumps(p).encode() for p in payloads]
        async with self._q() as q:
            if len(data) == 1:
                await q.enqueue("noop", data[0])
            else:
                await q.enqueue(["noop"] * len(data), data, [0] * len(data))

    async def take(self, batch: int) -> tuple[Any, list[Item]]:
        async with self._q() as q:
            jobs = await q.dequeue(
                batch, {"noop": self._param}, uuid.uuid4(), None, dt.timedelta(seconds=30)
            )
        return jobs, [(j.id, j.payload) for j in jobs]

    async def ack(self, token: Any, ids: list[int]) -> None:
        async with self._q() as q:
            await q.log_jobs([(j, "successful", None) for j in token])


class Procrastinate(System):
    """Driven through its own worker (it fetches one job per statement)."""

    name = "procrastinate"

    async def setup(self) -> None:
        import procrastinate

        self.count = 0
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=self.url, min_size=1, max_size=24)
        )

        @self.app.task(name="noop", queue=LANE)
        async def noop(**kwargs: Any) -> None:
            self.count += 1

        self.task = noop
        await self.app.open_async()
        await self.app.schema_manager.apply_schema_async()

    async def close(self) -> None:
        await self.app.close_async()

    async def reset(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as c:
            await c.execute("truncate procrastinate_jobs cascade")
            await c.execute("vacuum analyze procrastinate_jobs")

    async def enqueue(self, payloads: list[Any], keys: list[str] | None = None) -> None:
        if len(payloads) == 1:
            await self.task.defer_async(p=payloads[0])
        else:
            await self.task.batch_defer_async(*[{"p": p} for p in payloads])

    async def drain(self, k: int, n: int) -> float:
        import logging

        logging.getLogger("procrastinate").setLevel(logging.WARNING)
        self.count = 0
        t0 = time.perf_counter()
        await self.app.run_worker_async(
            queues=[LANE],
            concurrency=k,
            wait=False,
            listen_notify=False,
            fetch_job_polling_interval=0.01,
        )
        wall = time.perf_counter() - t0
        if self.count != n:
            raise RuntimeError(f"procrastinate handled {self.count} of {n}")
        return wall


FACTORIES: dict[str, type[System]] = {
    "bossa": Bossa,
    "pgmq": Pgmq,
    "pgqueuer": PgQueuer,
    "procrastinate": Procrastinate,
    "raw": Raw,
}


# -- phases ----------------------------------------------------------------------------


async def load(system: System, n: int, payload: Any, batch: int = 1000) -> None:
    for i in range(0, n, batch):
        await system.enqueue([payload] * min(batch, n - i))


async def bench_enqueue(system: System, n: int, batch: int, payload: Any, producers: int) -> float:
    # Untimed warm-up, the same for every system: each producer's connection is opened,
    # configured and has its statements prepared before the clock starts, so a 5,000-entry
    # phase measures enqueues, not the pool's first connections.
    await asyncio.gather(*(system.enqueue([payload]) for _ in range(producers)))
    await system.reset()
    per = n // producers

    async def producer() -> None:
        for i in range(0, per, batch):
            await system.enqueue([payload] * min(batch, per - i))

    t0 = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(producers)))
    return per * producers / (time.perf_counter() - t0)


async def run_drain(
    system: System,
    k: int,
    b: int,
    n: int,
    *,
    keyed: bool = False,
    limit_s: float = 600.0,
    check: Callable[[Any], None] | None = None,
) -> tuple[float, int, bool]:
    """K workers take B at a time and ack until n are done; returns (rate, done, cut short)."""
    done = 0
    deadline = time.perf_counter() + limit_s
    t0 = time.perf_counter()

    async def worker() -> None:
        nonlocal done
        while done < n and time.perf_counter() < deadline:
            if keyed:
                token, items = await system.take(b, keyed=True)  # type: ignore[call-arg]
            else:
                token, items = await system.take(b)  # type: ignore[attr-defined]
            if not items:
                await asyncio.sleep(0.002)
                continue
            if check is not None:
                for _, payload in items:
                    check(payload)
            await system.ack(token, [i for i, _ in items])  # type: ignore[attr-defined]
            done += len(items)

    await asyncio.gather(*(worker() for _ in range(k)))
    wall = time.perf_counter() - t0
    return done / wall, done, done < n


# -- latency ---------------------------------------------------------------------------


async def consumer_process(system: str, url: str) -> tuple[Any, asyncio.Task[bytes]]:
    """Starts `bench.journal.consumer` for `system` and waits until it consumes."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.journal.consumer",
        system,
        url,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    while True:
        line = await child.stdout.readline()
        if not line:
            raise RuntimeError(f"the {system} consumer exited before it was ready")
        if line.strip() == b"ready":
            break
    return child, asyncio.create_task(child.stdout.read())


async def consumer_starts(child: Any, output: asyncio.Task[bytes]) -> dict[int, float]:
    """Stops a consumer process; the handler start of each entry it handled."""
    assert child.stdin is not None
    child.stdin.write(b"stop\n")
    await child.stdin.drain()
    child.stdin.close()
    text = (await output).decode()
    await child.wait()
    last = [line for line in text.splitlines() if line.startswith("{")][-1]
    return {int(k): v for k, v in json.loads(last).items()}


async def latency_bossa(
    system: Bossa, url: str, rate: float, seconds: float, *, inline: bool = False
) -> list[float]:
    commits: dict[int, float] = {}
    starts: dict[int, float] = {}

    async def handler(entry: Any) -> None:
        starts[entry.id] = time.perf_counter()

    async def send() -> None:
        (res,) = await system.journal.enqueue(
            [NewEntry(lane=LANE, kind="noop", payload=payload_of(60))]
        )
        commits[res.id] = time.perf_counter()

    if not inline:
        child, output = await consumer_process("bossa", url)
        await paced(send, rate, seconds)
        await asyncio.sleep(1.0)
        starts = await consumer_starts(child, output)
        return [max(0.0, starts[i] - c) for i, c in commits.items() if i in starts]

    # The worker gets a pool of its own, as a worker process would: sharing the
    # producers' pool, its take and ack would queue behind hundreds of pending sends.
    async with open_pool(url, min_size=1, max_size=8) as worker_pool:
        journal = Journal(worker_pool, system.journal.settings)
        worker = Worker(
            journal, LANE, {"noop": handler}, listen_url=url, concurrency=4, batch_size=100
        )
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.5)
        await paced(send, rate, seconds)
        await asyncio.sleep(1.0)
        worker.stop()
        await task
    return [max(0.0, starts[i] - c) for i, c in commits.items() if i in starts]


async def latency_pgmq(
    system: Pgmq, rate: float, seconds: float, *, inline: bool = False
) -> list[float]:
    commits: dict[int, float] = {}
    starts: dict[int, float] = {}
    stop = asyncio.Event()

    async def send() -> None:
        async with system.ac.pool.connection() as c:
            cur = await c.execute(
                "select pgmq.send('bench', %s::jsonb) as id", (json.dumps(payload_of(60)),)
            )
            row = await cur.fetchone()
        commits[row["id"]] = time.perf_counter()

    if not inline:
        child, output = await consumer_process("pgmq", system.url)
        await paced(send, rate, seconds)
        await asyncio.sleep(1.5)
        starts = await consumer_starts(child, output)
        return [max(0.0, starts[i] - c) for i, c in commits.items() if i in starts]

    # Consumers on a pool of their own, as for bossa's worker: a consumer process.
    consumer_pool = AutocommitPool(system.url, 8)
    await consumer_pool.open()

    async def consumer() -> None:
        while not stop.is_set():
            async with consumer_pool.pool.connection() as c:
                cur = await c.execute(
                    "select msg_id from pgmq.read_with_poll('bench', 30, 100, 1, 10)"
                )
                rows = await cur.fetchall()
            now = time.perf_counter()
            for r in rows:
                starts[r["msg_id"]] = now
            if rows:
                async with consumer_pool.pool.connection() as c:
                    await c.execute(
                        "select pgmq.archive('bench', %s::bigint[])",
                        ([r["msg_id"] for r in rows],),
                    )

    consumers = [asyncio.create_task(consumer()) for _ in range(4)]
    await asyncio.sleep(0.5)
    await paced(send, rate, seconds)
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.gather(*consumers)
    await consumer_pool.close()
    return [max(0.0, starts[i] - c) for i, c in commits.items() if i in starts]


async def paced(send: Callable[[], Awaitable[None]], rate: float, seconds: float) -> None:
    """Open-loop arrivals at `rate` per second for `seconds` (each send its own task)."""
    n = int(rate * seconds)
    t0 = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send()))
    await asyncio.gather(*tasks)


# -- kill -9 redelivery ----------------------------------------------------------------

CHILD = """
import asyncio, sys
sys.path.insert(0, {src!r})
from bossa.db import open_pool
from bossa.journal import Journal, JournalSettings
async def main():
    async with open_pool({url!r}, max_size=2) as pool:
        j = Journal(pool, JournalSettings())
        taken = await j.take({lane!r}, 100, lease_ms={lease})
        print(len(taken.entries), flush=True)
        await asyncio.sleep(3600)
asyncio.run(main())
"""


async def redelivery(system: Bossa, url: str, lease_ms: int) -> dict[str, float]:
    await system.reset()
    await load(system, 100, payload_of(60), batch=100)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD.format(src=str(ROOT / "src"), url=url, lane=LANE, lease=lease_ms),
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    held = int(await child.stdout.readline())
    t_take = time.perf_counter()
    await asyncio.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    await child.wait()
    t_kill = time.perf_counter()
    first: list[float] = []
    handled = 0
    all_back = asyncio.Event()

    async def handler(entry: Any) -> None:
        nonlocal handled
        if not first:
            first.append(time.perf_counter())
        handled += 1
        if handled >= held:
            all_back.set()

    worker = Worker(
        system.journal, LANE, {"noop": handler}, listen_url=url, concurrency=1, batch_size=100
    )
    task = asyncio.create_task(worker.run())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_back.wait(), 30 + lease_ms / 1000)
    worker.stop()
    await task
    if not first:
        return {"held": held, "redelivered": 0, "after_kill_s": float("nan")}
    return {
        "held": held,
        "redelivered": handled,
        "after_kill_s": first[0] - t_kill,
        "after_take_s": first[0] - t_take,
        "reap_interval_s": JournalSettings().reap_interval_s,
    }


# -- diagnostics -----------------------------------------------------------------------


async def diagnostics(system: Bossa, url: str, backlog: int) -> dict[str, Any]:
    """What bounds bossa: the take plan, the cost of its connection handling, enqueue planning."""
    out: dict[str, Any] = {}
    await system.reset()
    await load(system, backlog, payload_of(60))
    async with await psycopg.AsyncConnection.connect(url) as c:
        cur = await c.execute(
            "explain (analyze, buffers, timing off) with picked as (select id from"
            " journal.entries where lane = 'bench' and state = 'ready' and not_before <= now()"
            " order by not_before, id limit 100 for update skip locked)"
            " update journal.entries e set state = 'taken', attempts = e.attempts + 1,"
            " lease_token = gen_random_uuid(), lease_expires_at = now() + interval '30 s',"
            " taken_at = now() from picked where e.id = picked.id returning e.id"
        )
        out["take_plan"] = [r[0] for r in await cur.fetchall()]
        await c.rollback()
        params = {
            "lanes": ["bench"],
            "keys": [None],
            "kinds": ["noop"],
            "payloads": [json.dumps(payload_of(60))],
            "not_befores": [None],
            "dedup_keys": [None],
            "created_by": "bench",
        }
        cur = await c.execute(
            "explain (analyze, summary, timing off) " + QUERIES["enqueue"], params
        )
        out["enqueue1_plan_summary"] = [r[0] for r in await cur.fetchall() if "Time" in r[0]]
        await c.rollback()
    # Batch-1 costs: one take and one ack of a single entry, timed apart.
    await system.reset()
    await load(system, 300, payload_of(60), batch=300)
    t_take = t_ack = 0.0
    for _ in range(300):
        t0 = time.perf_counter()
        token, items = await system.take(1)
        t1 = time.perf_counter()
        await system.ack(token, [i for i, _ in items])
        t_take += t1 - t0
        t_ack += time.perf_counter() - t1
    out["b1_take_ms"], out["b1_ack_ms"] = t_take / 300 * 1000, t_ack / 300 * 1000
    # Single-entry enqueue: through Journal.enqueue vs the same statement, prepared, on a
    # bare autocommit connection (no pool check, no BEGIN/COMMIT round trips, no planning).
    n1 = 300
    t0 = time.perf_counter()
    for _ in range(n1):
        await system.enqueue([payload_of(60)])
    out["enqueue1_journal_ms"] = (time.perf_counter() - t0) / n1 * 1000
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        params = {
            "lanes": ["bench"],
            "keys": [None],
            "kinds": ["noop"],
            "payloads": [json.dumps(payload_of(60))],
            "not_befores": [None],
            "dedup_keys": [None],
            "created_by": "bench",
        }
        t0 = time.perf_counter()
        for _ in range(n1):
            await c.execute(QUERIES["enqueue"], params, prepare=True)
        out["enqueue1_bare_prepared_ms"] = (time.perf_counter() - t0) / n1 * 1000
        t0 = time.perf_counter()
        for _ in range(n1):
            await c.execute(
                "insert into journal.lanes (lane, owner) values ('x', 'journal')"
                " on conflict do nothing"
            )
        out["commit_ms"] = (time.perf_counter() - t0) / n1 * 1000
    # Round trips: Journal.take on an empty lane vs the same statement on a bare autocommit
    # connection. The difference is the pool check, BEGIN and COMMIT around the statement.
    await system.reset()
    n = 500
    t0 = time.perf_counter()
    for _ in range(n):
        await system.journal.take(LANE, 100)
    out["take_empty_journal_ms"] = (time.perf_counter() - t0) / n * 1000
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        params = {"lane": LANE, "limit": 100, "token": uuid.uuid4(), "lease_ms": 30000}
        t0 = time.perf_counter()
        for _ in range(n):
            await c.execute(QUERIES["take"], params, prepare=True)
        out["take_empty_bare_ms"] = (time.perf_counter() - t0) / n * 1000
        t0 = time.perf_counter()
        for _ in range(n):
            await c.execute("select 1")
        out["roundtrip_ms"] = (time.perf_counter() - t0) / n * 1000
    return out


# -- the run ---------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.targets: list[dict[str, Any]] = []

    def add(
        self,
        phase: str,
        case: str,
        figures: dict[str, float | None],
        unit: str,
        higher_better: bool = True,
    ) -> None:
        row = {"phase": phase, "case": case, "unit": unit, "figures": figures}
        self.rows.append(row)
        b = figures.get("bossa")
        parts = []
        for s, v in figures.items():
            parts.append(f"{s} {fmt(v)}")
        ratios = []
        for s, v in figures.items():
            if s == "bossa" or b is None or v is None or v != v or v == 0:
                continue
            r = b / v if higher_better else v / b
            ratios.append(f"x{r:.2f} vs {s}")
        row["ratios"] = {
            s: (b / v if higher_better else v / b)
            for s, v in figures.items()
            if s != "bossa" and b and v and v == v
        }
        print(f"  [{phase}] {case} ({unit}): " + ", ".join(parts))
        if ratios:
            print("      bossa " + ", ".join(ratios))

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}")

    def target(self, name: str, value: float | None, goal: float, lower: bool = False) -> None:
        met = value is not None and value == value and (value <= goal if lower else value >= goal)
        self.targets.append(
            {"target": name, "value": value, "goal": goal, "met": met, "lower_is_better": lower}
        )
        sign = "<=" if lower else ">="
        print(f"  {'MET ' if met else 'MISS'} {name}: {fmt(value)} (goal {sign} {goal})")


async def run(settings: Settings, report: Report, base: Path, port: int) -> dict[str, Any]:
    pg = EmbeddedPostgres(base, port=port, database="bossa", durable=True)
    await asyncio.to_thread(pg.start)
    extra: dict[str, Any] = {}
    systems: dict[str, System] = {}
    try:
        async with await psycopg.AsyncConnection.connect(pg.url("postgres"), autocommit=True) as c:
            row = await (await c.execute("show server_version")).fetchone()
            fsync = await (await c.execute("show fsync")).fetchone()
            sc = await (await c.execute("show synchronous_commit")).fetchone()
            print(
                f"  server: PostgreSQL {row[0]} on 127.0.0.1:{port}, fsync={fsync[0]},"
                f" synchronous_commit={sc[0]}"
            )
            extra["server"] = {"version": row[0], "fsync": fsync[0], "synchronous_commit": sc[0]}
            for name in SYSTEMS:
                await c.execute(f"create database bench_{name}")
        for name in SYSTEMS:
            system = FACTORIES[name](pg.url(f"bench_{name}"))
            try:
                await system.setup()
                systems[name] = system
            except Exception as exc:  # a peer that will not install is reported, not fatal
                report.note(f"{name} could not be set up: {exc!r}")

        small, large = payload_of(settings.small_payload), payload_of(settings.large_payload)
        peak = 0.0  # bossa's best unkeyed drain rate, when the drain phase runs
        bossa = systems["bossa"]
        assert isinstance(bossa, Bossa)

        # 1. enqueue --------------------------------------------------------------------
        if "enqueue" in settings.phases:
            print("\n== 1. enqueue ==")
            for case, n, batch, payload in [
                (
                    f"batch 1, {settings.small_payload} B, n={settings.enqueue1_n}",
                    settings.enqueue1_n,
                    1,
                    small,
                ),
                (
                    f"batch 1000, {settings.small_payload} B, n={settings.enqueue_n}",
                    settings.enqueue_n,
                    1000,
                    small,
                ),
                (
                    f"batch 1000, {settings.large_payload} B, n={settings.enqueue_n}",
                    settings.enqueue_n,
                    1000,
                    large,
                ),
            ]:
                figs: dict[str, float | None] = {}
                cpu_b = None
                for name, system in systems.items():
                    try:
                        with Cpu() as cpu:
                            figs[name] = await bench_enqueue(
                                system, n, batch, payload, settings.producers
                            )
                        if name == "bossa":
                            cpu_b = cpu.summary()
                    except Exception as exc:
                        figs[name] = None
                        report.note(f"enqueue {case}: {name} failed: {exc!r}")
                report.add("enqueue", case, figs, "entries/s")
                if cpu_b:
                    print(f"      bossa cpu: {cpu_b}")
                    extra.setdefault("cpu", {})[f"enqueue {case}"] = cpu_b

        # 2. unkeyed drain --------------------------------------------------------------
        if "drain" in settings.phases:
            print("\n== 2. unkeyed drain ==")
            for k, b, n in settings.drain_cells:
                figs = {}
                for name, system in systems.items():
                    try:
                        await system.reset()
                        if name == "procrastinate":
                            pn = min(n, settings.procrastinate_backlog)
                            await load(system, pn, small)
                            wall = await system.drain(k, pn)  # type: ignore[attr-defined]
                            figs[name] = pn / wall
                            continue
                        await load(system, n, small)
                        with Cpu() as cpu:
                            rate, done, _ = await run_drain(system, k, b, n)
                        figs[name] = rate
                        if name == "bossa":
                            extra.setdefault("cpu", {})[f"drain K={k} B={b}"] = cpu.summary()
                            print(f"      bossa cpu: {cpu.summary()}")
                            peak = max(peak, rate)
                    except Exception as exc:
                        figs[name] = None
                        report.note(f"drain K={k} B={b}: {name} failed: {exc!r}")
                report.add("drain", f"K={k} B={b} backlog={n}", figs, "entries/s")
            report.note(
                "procrastinate fetches one job per statement through its own worker "
                f"(B is always 1; backlog capped at {settings.procrastinate_backlog})"
            )

        # 3. keyed drain ----------------------------------------------------------------
        if "keyed" in settings.phases:
            print("\n== 3. keyed drain (K=4, B=100) ==")
            rng = random.Random(42)
            weights_z = [1 / (i + 1) ** settings.zipf_s for i in range(settings.keys)]
            for dist in ("uniform", f"zipf s={settings.zipf_s}"):
                if dist == "uniform":
                    picks = [rng.randrange(settings.keys) for _ in range(settings.keyed_n)]
                else:
                    picks = rng.choices(range(settings.keys), weights=weights_z, k=settings.keyed_n)
                hot = max(picks.count(i) for i in range(min(5, settings.keys)))
                figs = {}
                for name in ("bossa", "pgmq", "pgmq+index"):
                    system = systems.get(name.split("+")[0])
                    if system is None:
                        continue
                    if isinstance(system, Pgmq):
                        system.keyed_queue = "keyedx" if name.endswith("index") else "keyed"
                    if isinstance(system, Bossa):
                        system.run = 100
                    await system.reset()
                    seq: dict[int, int] = {}
                    payloads, keys = [], []
                    for kk in picks:
                        seq[kk] = seq.get(kk, 0) + 1
                        payloads.append(payload_of(60, k=kk, s=seq[kk]))
                        keys.append(f"k{kk}")
                    for i in range(0, len(payloads), 1000):
                        await system.enqueue(payloads[i : i + 1000], keys[i : i + 1000])
                    last: dict[int, int] = {}
                    violations = 0

                    def check(p: Any, last: dict[int, int] = last) -> None:
                        nonlocal violations
                        if p["s"] != last.get(p["k"], 0) + 1:
                            violations += 1
                        last[p["k"]] = p["s"]

                    rate, done, timed_out = await run_drain(
                        system,
                        4,
                        100,
                        settings.keyed_n,
                        keyed=name.startswith("pgmq"),
                        limit_s=settings.keyed_timeout_s,
                        check=check,
                    )
                    figs[name] = rate
                    msg = f"keyed {dist}: {name} handled {done}/{settings.keyed_n}, per-key order"
                    msg += f" violations {violations}"
                    if timed_out:
                        msg += (
                            f" (stopped at the {settings.keyed_timeout_s:.0f} s limit; rate so far)"
                        )
                    report.note(msg)
                    if violations:
                        report.note(f"ORDER BROKEN for {name} ({dist})")
                if isinstance(systems.get("bossa"), Bossa):
                    systems["bossa"].run = 1  # type: ignore[attr-defined]
                report.add(
                    "keyed",
                    f"{dist}, {settings.keys} keys, n={settings.keyed_n}, hottest key {hot}",
                    figs,
                    "entries/s",
                )

        # 4. latency --------------------------------------------------------------------
        if "latency" in settings.phases:
            print("\n== 4. latency, enqueue commit -> handler start ==")
            e1 = next(
                (
                    r["figures"].get("bossa")
                    for r in report.rows
                    if r["phase"] == "enqueue" and r["case"].startswith("batch 1,")
                ),
                None,
            )
            if settings.latency_rate is not None:
                rate = settings.latency_rate
                why = "given with --latency-rate"
            elif peak or e1:
                rate = 0.5 * min(x for x in (peak, e1) if x)
                why = "half of min(bossa peak drain, bossa single-entry enqueue)"
            else:
                raise SystemExit("--phases without enqueue and drain needs --latency-rate")
            print(
                f"  rate {rate:.0f}/s for {settings.latency_s:.0f} s ({why}), open loop,"
                " 60 B payload"
            )
            lat: dict[str, list[float]] = {}
            await bossa.reset()
            lat["bossa"] = await latency_bossa(
                bossa,
                pg.url("bench_bossa"),
                rate,
                settings.latency_s,
                inline=settings.latency_inline,
            )
            if "pgmq" in systems:
                await systems["pgmq"].reset()
                pg_sys = systems["pgmq"]
                assert isinstance(pg_sys, Pgmq)
                lat["pgmq"] = await latency_pgmq(
                    pg_sys, rate, settings.latency_s, inline=settings.latency_inline
                )
            for q in (0.5, 0.99):
                report.add(
                    "latency",
                    f"p{int(q * 100)} at {rate:.0f}/s",
                    {s: pct(v, q) * 1000 for s, v in lat.items()},
                    "ms",
                    higher_better=False,
                )
            report.note(
                "latency: bossa Worker (LISTEN/NOTIFY, concurrency 4, batch 100) vs pgmq "
                "read_with_poll (4 consumers, batch 100, 10 ms server-side poll), consumers "
                + (
                    "in the producers' process"
                    if settings.latency_inline
                    else "in a process of their own"
                )
                + "; "
                + ", ".join(f"{s} {len(v)} samples" for s, v in lat.items())
            )
            extra["latency_rate"] = rate

        # 5. redelivery after kill -9 -----------------------------------------------------
        if "redelivery" in settings.phases:
            print("\n== 5. redelivery after kill -9 ==")
            red = await redelivery(bossa, pg.url("bench_bossa"), settings.lease_ms)
            extra["redelivery"] = red
            report.add(
                "redelivery",
                f"lease {settings.lease_ms} ms, reap every "
                f"{JournalSettings().reap_interval_s:.1f} s, {red['held']:.0f} held",
                {"bossa": red["after_kill_s"] * 1000},
                "ms kill->handler",
            )
            report.note(f"redelivery: {red}")

        # diagnostics -----------------------------------------------------------------------
        if "diagnostics" in settings.phases:
            print("\n== diagnostics ==")
            diag = await diagnostics(
                bossa, pg.url("bench_bossa"), 50_000 if not settings.quick else 10_000
            )
            extra["diagnostics"] = diag
            for line in diag["take_plan"]:
                print("  take plan | " + line)
            for line in diag["enqueue1_plan_summary"]:
                print("  enqueue(1) | " + line)
            print(
                f"  take on empty lane: Journal.take {diag['take_empty_journal_ms']:.3f} ms, same "
                f"statement on a bare autocommit connection {diag['take_empty_bare_ms']:.3f} ms, "
                f"bare round trip {diag['roundtrip_ms']:.3f} ms"
            )
            print(
                f"  batch 1: take {diag['b1_take_ms']:.3f} ms, ack {diag['b1_ack_ms']:.3f} ms; "
                f"enqueue(1): Journal {diag['enqueue1_journal_ms']:.3f} ms, bare prepared "
                f"{diag['enqueue1_bare_prepared_ms']:.3f} ms; no-op insert (no WAL flush) "
                f"{diag['commit_ms']:.3f} ms"
            )
    finally:
        for system in systems.values():
            with contextlib.suppress(Exception):
                await system.close()
        await asyncio.to_thread(pg.destroy)
    return extra


def check_targets(report: Report) -> None:
    print("\n== targets ==")

    def ratio(phase: str, prefix: str, peer: str) -> float | None:
        for r in report.rows:
            if r["phase"] == phase and r["case"].startswith(prefix):
                return r["ratios"].get(peer)
        return None

    def fig(phase: str, prefix: str, system: str) -> float | None:
        for r in report.rows:
            if r["phase"] == phase and r["case"].startswith(prefix):
                return r["figures"].get(system)
        return None

    def keyed_ratio(prefix: str) -> float | None:
        found = [r for p in ("pgmq", "pgmq+index") if (r := ratio("keyed", prefix, p)) is not None]
        return min(found) if found else None  # against the better pgmq variant

    report.target(
        "keyed FIFO drain (uniform) vs best pgmq read_grouped", keyed_ratio("uniform"), 2.0
    )
    # Issue 13: a hot key's tail against pgmq's grouped read with the index that helps it.
    report.target(
        "keyed FIFO drain (zipf) vs pgmq+index read_grouped",
        ratio("keyed", "zipf", "pgmq+index"),
        1.0,
    )
    report.target(
        "unkeyed drain K=4 B=100 vs pgmq read+archive", ratio("drain", "K=4 B=100", "pgmq"), 1.0
    )
    report.target(
        "unkeyed drain K=4 B=100 vs raw SQL bound", ratio("drain", "K=4 B=100", "raw"), 0.8
    )
    report.target("unkeyed drain K=1 B=1 vs pgmq", ratio("drain", "K=1 B=1", "pgmq"), 1.0)
    report.target("unkeyed drain K=1 B=1 vs raw", ratio("drain", "K=1 B=1", "raw"), 0.8)
    report.target(
        "enqueue batch 1000 (60 B) vs pgmq", ratio("enqueue", "batch 1000, 60", "pgmq"), 1.0
    )
    report.target("enqueue batch 1 vs pgmq", ratio("enqueue", "batch 1,", "pgmq"), 1.0)
    report.target(
        "p99 enqueue->start at half peak (ms)", fig("latency", "p99", "bossa"), 50.0, lower=True
    )
    # Latency ratios are peer/bossa: 0.5 is bossa's p99 at twice pgmq's.
    report.target("p99 enqueue->start vs 2x pgmq's p99", ratio("latency", "p99", "pgmq"), 0.5)


def append_results(
    path: Path, settings: Settings, report: Report, ref: str, command: str, extra: dict[str, Any]
) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"\n## {now} — journal vs peers{' (quick)' if settings.quick else ''}\n",
        f"- command: `{command}`",
        f"- git ref: `{ref}`",
        f"- machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}",
        f"- server: {extra.get('server')}",
        "",
    ]
    cols = [*SYSTEMS, "pgmq+index"]
    lines.append(
        "| phase | case | unit | " + " | ".join(cols) + " | bossa ratio (bossa/peer;"
        " latency: peer/bossa) |"
    )
    lines.append("|---|---|---|" + "---:|" * len(cols) + "---|")
    for r in report.rows:
        figs = " | ".join(fmt(r["figures"].get(s)) if s in r["figures"] else "—" for s in cols)
        ratios = ", ".join(f"{s} {v:.2f}" for s, v in r["ratios"].items())
        lines.append(f"| {r['phase']} | {r['case']} | {r['unit']} | {figs} | {ratios} |")
    lines += ["", "| target | value | goal | met |", "|---|---:|---:|---|"]
    for t in report.targets:
        goal = ("<= " if t["lower_is_better"] else ">= ") + fmt(t["goal"])
        lines.append(
            f"| {t['target']} | {fmt(t['value'])} | {goal} | {'yes' if t['met'] else '**no**'} |"
        )
    lines += ["", "Notes:", ""] + [f"- {n}" for n in report.notes]
    diag = extra.get("diagnostics")
    if diag:
        lines += ["", "Diagnostics (bossa):", "", "```"]
        lines += [f"take plan | {x}" for x in diag["take_plan"]]
        lines += [f"enqueue(1) | {x}" for x in diag["enqueue1_plan_summary"]]
        lines.append(
            f"take on empty lane: Journal.take {diag['take_empty_journal_ms']:.3f} ms;"
            f" bare autocommit statement {diag['take_empty_bare_ms']:.3f} ms;"
            f" 'select 1' round trip {diag['roundtrip_ms']:.3f} ms"
        )
        lines.append(
            f"batch 1: take {diag['b1_take_ms']:.3f} ms, ack {diag['b1_ack_ms']:.3f} ms;"
            f" enqueue(1): Journal {diag['enqueue1_journal_ms']:.3f} ms, bare prepared"
            f" {diag['enqueue1_bare_prepared_ms']:.3f} ms; no-op insert (no WAL flush)"
            f" {diag['commit_ms']:.3f} ms"
        )
        lines.append("```")
    if extra.get("cpu"):
        lines += ["", "CPU during bossa's runs:", ""]
        lines += [f"- {k}: {v}" for k, v in extra["cpu"].items()]
    append_section(path, lines)


def main() -> None:
    parser = base_parser(__doc__.split("\n")[0], "a smaller run (about 2 minutes)")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated phases to run (default all: {','.join(PHASES)})",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        help="entries/s of the latency phase (default: half of bossa's measured peak)",
    )
    parser.add_argument(
        "--latency-inline",
        action="store_true",
        help="run the latency phase's consumers in this process, beside the producers",
    )
    args = parser.parse_args()
    settings = Settings.make(args.quick)
    settings.phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    if unknown := set(settings.phases) - set(PHASES):
        parser.error(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")
    settings.latency_rate = args.latency_rate
    settings.latency_inline = args.latency_inline
    ref = git_ref()
    command = " ".join(["python -m bench.journal.run", *sys.argv[1:]])
    port = free_port()
    print("bench/journal: bossa vs pgmq, pgqueuer, procrastinate, raw SKIP LOCKED")
    print(f"  git ref {ref}; {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print(f"  settings: {settings}")
    report = Report()
    with tempfile.TemporaryDirectory(prefix="bossa-bench-") as tmp:
        extra = asyncio.run(run(settings, report, Path(tmp), port))
    check_targets(report)
    if not args.no_results:
        append_results(ROOT / "bench" / "RESULTS.md", settings, report, ref, command, extra)
        print("\nappended to bench/RESULTS.md")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "settings": settings.__dict__,
                    "git_ref": ref,
                    "rows": report.rows,
                    "targets": report.targets,
                    "notes": report.notes,
                    "extra": extra,
                },
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
