"""bossa's provisioning (SPEC P) under load, against the raw clients, in one run.

    .venv/bin/python -m bench.provisioning.run [--quick] [--json FILE] [--no-results]

Starts its own durable PostgreSQL for bossa (fsync on), a second durable PostgreSQL as
the SQL division (AAA), and a redis-server as the in-memory division (HDS), all on free
ports in a temporary directory. Measures:

1. orders: submit() latency and rate with N concurrent submitters, every division up,
   then with Redis stopped (its commands go to the buffer);
2. replay: a backlog of commands per division drained by BackupDaemon(run once),
   against the seed's own design (a table buffer drained by daemons, one once-only
   transaction per command), the same replay built on pgmq (grouped read, archive, the
   same delivery and markers), the daemon's no-op ceiling, and, as information, the raw
   client writing the same keys/rows to the same server (pipelined).

Prints the settings, the figures, the ratios and the targets, diagnoses the misses
(where the daemon's time goes, round trips, a cProfile of the event loop) and appends a
dated section to bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import cProfile
import datetime as dt
import io
import itertools
import json
import os
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.provisioning.servers import ServerProcess, redis_server  # noqa: E402
from tests.support import free_port  # noqa: E402

from bench.common import Cpu, append_section, base_parser, fmt, git_ref, pct  # noqa: E402
from bossa.customers import load_sample  # noqa: E402
from bossa.db import EmbeddedPostgres, open_pool  # noqa: E402
from bossa.db.migrations import migrate  # noqa: E402
from bossa.journal import Entry, Journal, JournalSettings, NewEntry  # noqa: E402
from bossa.provisioning import (  # noqa: E402
    BackupDaemon,
    Deliverer,
    OrderRequest,
    ProvisioningCommand,
    ProvisioningSettings,
    ServerType,
    lane_of,
    submit,
)
from bossa.provisioning.models import Delivery, DeliveryMode  # noqa: E402
from bossa.provisioning.sample import AAA, AAA_TABLE, HDS, load_sample_plans  # noqa: E402
from bossa.provisioning.service import log_deliveries  # noqa: E402

SQL_RAW_INSERT = (
    "insert into aaa_subscribers (sa_id, cust_id, speed, status) values (%s, %s, %s, 'active')"
)


@dataclass
class Settings:
    quick: bool
    submitters: int = 8
    orders: int = 3_000  # measured orders per phase
    warmup: int = 100  # orders before the all-up phase, not measured
    backlog: int = 100_000  # commands per division
    enqueue_batch: int = 1_000
    # The backup daemon's own defaults (BOSSA_PROVISIONING_BACKUP_*) unless --batch/--concurrency.
    concurrency: int = field(default_factory=lambda: ProvisioningSettings().backup_concurrency)
    batch: int = field(default_factory=lambda: ProvisioningSettings().backup_batch)
    diag_n: int = 20_000  # backlog of each diagnostic run (timed stages, cProfile, raw per command)
    raw_chunk: int = 1_000  # commands per pipeline flush / executemany transaction
    down_hold_s: float = 30.0
    replay_only: bool = False

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if quick:
            return cls(quick=True, orders=600, warmup=50, backlog=10_000, diag_n=5_000)
        return cls(quick=False)


# -- small helpers ---------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.targets: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.diagnostics: list[str] = []

    def add(self, phase: str, case: str, value: float, unit: str) -> None:
        self.rows.append({"phase": phase, "case": case, "value": value, "unit": unit})
        print(f"  [{phase}] {case}: {fmt(value)} {unit}")

    def target(self, name: str, value: float, goal: float, *, lower: bool = False) -> None:
        met = value == value and (value <= goal if lower else value >= goal)
        self.targets.append(
            {"target": name, "value": value, "goal": goal, "met": met, "lower_is_better": lower}
        )
        sign = "<=" if lower else ">="
        print(f"  {'MET ' if met else 'MISS'} {name}: {fmt(value)} (goal {sign} {goal})")

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}")

    def diag(self, text: str) -> None:
        self.diagnostics.append(text)
        print(f"  diag: {text}")


class Stages:
    """Wall time spent in named calls (summed over concurrent callers)."""

    def __init__(self) -> None:
        self.time: dict[str, float] = collections.defaultdict(float)
        self.calls: dict[str, int] = collections.defaultdict(int)
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.time[name] += seconds
            self.calls[name] += 1

    def wrap_async(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)

        return timed

    def wrap_sync(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)

        return timed


@contextlib.contextmanager
def counted_checkouts(pool: Any) -> Iterator[list[int]]:
    """Counts pool.connection() checkouts (each one also runs the pool's check query)."""
    count = [0]
    original = pool.connection

    def connection(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return original(*args, **kwargs)

    pool.connection = connection
    try:
        yield count
    finally:
        del pool.connection


def pg_commits(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select xact_commit from pg_stat_database where datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def pg_wal_lsn(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("select pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def pg_wal_bytes(dsn: str, since: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("select pg_current_wal_lsn() - %s::pg_lsn", (since,)).fetchone()
    assert row is not None
    return int(row[0])


def redis_commands(url: str) -> int:
    with redis.Redis.from_url(url) as r:
        return int(r.info("stats")["total_commands_processed"])


# -- the world -------------------------------------------------------------------------


@dataclass
class World:
    bossa_dsn: str
    target_dsn: str  # psycopg DSN of the AAA database
    redis: ServerProcess
    journal: Journal
    deliverer: Deliverer
    psettings: ProvisioningSettings
    extra: dict[str, Any] = field(default_factory=dict)

    def clear_targets(self) -> None:
        with redis.Redis.from_url(self.redis.url) as r:
            r.flushall()
        with psycopg.connect(self.target_dsn, autocommit=True) as conn:
            conn.execute("truncate aaa_subscribers")
            conn.execute("truncate bossa_applied_commands")

    def target_rows(self) -> int:
        with psycopg.connect(self.target_dsn, autocommit=True) as conn:
            row = conn.execute("select count(*) from aaa_subscribers").fetchone()
        assert row is not None
        return int(row[0])

    def redis_keys(self) -> int:
        with redis.Redis.from_url(self.redis.url) as r:
            return int(r.dbsize())


# -- 1. orders -------------------------------------------------------------------------


async def order_phase(
    world: World, prefix: str, n: int, submitters: int
) -> tuple[list[float], float, collections.Counter[str]]:
    latencies: list[float] = []
    routes: collections.Counter[str] = collections.Counter()
    counter = itertools.count()

    async def submitter() -> None:
        while (i := next(counter)) < n:
            request = OrderRequest(
                product="ADSL",
                sa_id=f"{prefix}-{i}",
                intf_code="4201",
                cust_id="C-1",
                bind_data={"speed": "100M"},
            )
            t0 = time.perf_counter()
            result = await submit(
                world.journal,
                world.deliverer,
                request,
                channel="bench",
                settings=world.psettings,
            )
            latencies.append(time.perf_counter() - t0)
            routes[" ".join(f"{d}={r}" for d, r in sorted(result["divisions"].items()))] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(submitters)))
    return latencies, time.perf_counter() - t0, routes


async def drain_buffer(world: World, division: str) -> int:
    daemon = BackupDaemon(world.journal, world.deliverer, division)
    await daemon.run(once=True)
    return daemon.worker.stats.acked


async def bench_orders(world: World, s: Settings, report: Report) -> None:
    print(f"\n1. orders: {s.submitters} concurrent submitters, ADSL 4201 (AAA sql + HDS redis)")
    await order_phase(world, "SA-warm", s.warmup, s.submitters)
    results: dict[str, dict[str, Any]] = {}
    for label in ("all up", "Redis down"):
        if label == "Redis down":
            world.redis.stop()
        with Cpu() as cpu:
            lat, wall, routes = await order_phase(
                world, f"SA-{label.split()[0]}", s.orders, s.submitters
            )
        ms = [x * 1000 for x in lat]
        fig = {
            "orders_per_s": len(lat) / wall,
            "p50_ms": pct(ms, 0.50),
            "p99_ms": pct(ms, 0.99),
            "max_ms": max(ms),
            "routes": dict(routes),
            "cpu": cpu.summary(),
        }
        results[label] = fig
        report.add("orders", f"{label}: rate", fig["orders_per_s"], "orders/s")
        report.add("orders", f"{label}: p50", fig["p50_ms"], "ms")
        report.add("orders", f"{label}: p99", fig["p99_ms"], "ms")
        report.add("orders", f"{label}: max", fig["max_ms"], "ms")
        print(f"      routes {dict(routes)}; {cpu.summary()}")
    world.redis.start()
    # The Redis-down phase left its HDS commands in the buffer: deliver them (and check).
    buffered = sum(n for r, n in results["Redis down"]["routes"].items() if "HDS=buffered" in r)
    acked = await drain_buffer(world, "HDS")
    if acked != buffered:
        report.note(f"after the orders: {buffered} HDS commands buffered but {acked} replayed")
    ratio = results["Redis down"]["p99_ms"] / results["all up"]["p99_ms"]
    report.add("orders", "p99 Redis down / p99 all up", ratio, "x")
    report.target("order p99 with one division down / all up", ratio, 1.1, lower=True)
    world.extra["orders"] = results


# -- 2. replay -------------------------------------------------------------------------


def payload_for(division: str, server_type: str, i: int, now: str) -> dict[str, Any]:
    """As service.accept makes it: the sample plan's version 1 for 4201, bind data only."""
    return ProvisioningCommand(
        sa_id=f"SA-B{i}",
        division=division,
        server_type=ServerType(server_type),
        product="ADSL",
        intf_code="4201",
        plan_version=1,
        wo_no=f"WO-B{i:09d}",
        cust_id="C-1",
        bind_data={"speed": "100M"},
        ins_date=datetime.fromisoformat(now),
    ).to_payload()


#: The sample divisions the replay fills, by server type (their 4201 commands are the
#: sample plans' AAA and HDS templates, version 1).
DIVISIONS = {
    "HDS": ("memstore", HDS["4201"]),
    "AAA": ("sql", AAA["4201"]),
}


async def fill(world: World, division: str, n: int, batch: int, prefix: str) -> float:
    server_type, _ = DIVISIONS[division]
    now = datetime.now(UTC).isoformat()
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        await world.journal.enqueue(
            [
                NewEntry(
                    lane_of(division),
                    "provisioning.command",
                    payload_for(division, server_type, i, now),
                    key=f"{prefix}-{i}",
                )
                for i in range(start, min(n, start + batch))
            ]
        )
    return n / (time.perf_counter() - t0)


def raw_redis(url: str, n: int, chunk: int, prefix: str) -> float:
    """The plain commands, pipelined on one connection, no transaction, no marker."""
    with redis.Redis.from_url(url) as r:
        t0 = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            sa = f"{prefix}-{i}"
            pipe.execute_command("HSET", f"sub:{sa}", "speed", "100M", "status", "active")
            pipe.execute_command("RPUSH", f"log:{sa}", f"WO-B{i:09d} new")
            if (i + 1) % chunk == 0:
                pipe.execute()
        pipe.execute()
        return n / (time.perf_counter() - t0)


def raw_sql(dsn: str, n: int, chunk: int, prefix: str) -> float:
    """The plain inserts, psycopg executemany (pipeline mode), one transaction per chunk."""
    with psycopg.connect(dsn) as conn:
        t0 = time.perf_counter()
        for start in range(0, n, chunk):
            rows = [(f"{prefix}-{i}", "C-1", "100M") for i in range(start, min(n, start + chunk))]
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(SQL_RAW_INSERT, rows)
        return n / (time.perf_counter() - t0)


def raw_per_command(world: World, division: str, n: int, threads: int, prefix: str) -> float:
    """The adapter's protocol without bossa: one once-only transaction per command,
    `threads` connections (Redis: WATCH marker, EXISTS, MULTI, commands, SET marker, EXEC;
    SQL: BEGIN, insert marker, insert row, COMMIT)."""
    counter = itertools.count()

    def work() -> None:
        if division == "HDS":
            with redis.Redis.from_url(world.redis.url) as r:
                while (i := next(counter)) < n:
                    sa, marker = f"{prefix}-{i}", f"bossa:applied:HDS:raw{i}"
                    with r.pipeline(transaction=True) as pipe:
                        pipe.watch(marker)
                        if pipe.exists(marker):
                            continue
                        pipe.multi()
                        pipe.execute_command(
                            "HSET", f"sub:{sa}", "speed", "100M", "status", "active"
                        )
                        pipe.execute_command("RPUSH", f"log:{sa}", f"WO-B{i:09d} new")
                        pipe.set(marker, i, ex=3600)
                        pipe.execute()
        else:
            with psycopg.connect(world.target_dsn) as conn:
                while (i := next(counter)) < n:
                    with conn.transaction():
                        conn.execute(
                            "insert into bossa_applied_commands (entry_id, division, applied_at)"
                            " values (%s, 'AAA', current_timestamp)",
                            (-1 - i,),
                        )
                        conn.execute(SQL_RAW_INSERT, (f"{prefix}-{i}", "C-1", "100M"))

    t0 = time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return n / (time.perf_counter() - t0)


async def timed_drain(world: World, division: str, n: int) -> dict[str, Any]:
    """Drain with every stage timed: where the daemon's time goes."""
    stages = Stages()
    journal, deliverer = world.journal, world.deliverer
    adapter = await deliverer._adapter(division)  # built now, so its deliver can be wrapped
    adapter.deliver_many = stages.wrap_sync(  # type: ignore[attr-defined]
        "adapter.deliver_many (per batch, in its thread)",
        adapter.deliver_many,  # type: ignore[attr-defined]
    )
    if hasattr(adapter, "adeliver_many"):  # a PostgreSQL division: the batch on the loop
        adapter.adeliver_many = stages.wrap_async(
            "adapter.adeliver_many (per batch, on the event loop)",
            adapter.adeliver_many,
        )
    deliverer._adapter = stages.wrap_async(
        "division lookup (Deliverer._adapter)", deliverer._adapter
    )  # type: ignore[method-assign]
    deliverer.mark = stages.wrap_async("mark up (Deliverer.mark)", deliverer.mark)  # type: ignore[method-assign]
    journal.take = stages.wrap_async("journal.take (per batch)", journal.take)  # type: ignore[method-assign]
    journal.ack = stages.wrap_async("journal.ack (per batch)", journal.ack)  # type: ignore[method-assign]
    daemon = BackupDaemon(journal, deliverer, division)
    daemon.worker.batch_handler = stages.wrap_async(
        "batch handler total (BackupDaemon._deliver_batch)", daemon._deliver_batch
    )
    daemon.worker.gate = stages.wrap_async("gate (division in use, per take)", daemon.worker.gate)
    t0 = time.perf_counter()
    try:
        await daemon.run(once=True)
    finally:
        wall = time.perf_counter() - t0
        with contextlib.suppress(AttributeError):
            del adapter.deliver
        for attr in ("_adapter", "mark", "log"):
            with contextlib.suppress(AttributeError):
                delattr(deliverer, attr)
        for attr in ("take", "ack"):
            with contextlib.suppress(AttributeError):
                delattr(journal, attr)
    acked = daemon.worker.stats.acked
    per_cmd = {name: stages.time[name] / max(1, acked) * 1000 for name in sorted(stages.time)}
    return {
        "acked": acked,
        "wall_s": wall,
        "slot_ms_per_command": wall * 4 / max(1, acked) * 1000,
        "ms_per_command": per_cmd,
        "calls": dict(stages.calls),
    }


async def profiled_drain(world: World, division: str) -> list[str]:
    """cProfile of the event loop thread (the adapter's thread is not in it)."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        await drain_buffer(world, division)
    finally:
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(12)
    lines = [ln.rstrip() for ln in out.getvalue().splitlines() if ln.strip()]
    start = next((k for k, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return lines[start : start + 13]


# -- the replay's peers: the seed's own design, and the same replay on pgmq --------------

SEED_TABLES = """
create table if not exists seed_plan_buffer (
    id         bigint generated always as identity primary key,
    division   text not null,
    sa_id      text not null,
    wo_no      text not null,
    intf_code  text not null,
    cust_id    text,
    command    text not null,
    bind_data  jsonb not null,
    logname    text,
    startdate  timestamptz not null default now(),
    enddate    timestamptz,
    errcode    text,
    errmsg     text,
    errdate    timestamptz
);
create index if not exists seed_plan_buffer_pending on seed_plan_buffer (division, id)
    where enddate is null;
create table if not exists seed_log (
    id        bigint generated always as identity primary key,
    buffer_id bigint not null,
    division  text not null,
    sa_id     text not null,
    wo_no     text not null,
    done_at   timestamptz not null default now()
);
"""


def seed_fill(dsn: str, division: str, n: int, prefix: str) -> None:
    """The seed's buffer (P8 columns): one row per command, oldest first by id."""
    command = "HSET sub:{sa} ...; RPUSH log:{sa} ..." if division == "HDS" else SQL_RAW_INSERT
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SEED_TABLES)
        conn.execute("truncate seed_plan_buffer, seed_log")
        conn.execute(
            "insert into seed_plan_buffer (division, sa_id, wo_no, intf_code, cust_id, command,"
            " bind_data, logname)"
            " select %s, %s || '-' || i, 'WO-B' || lpad(i::text, 9, '0'), '4201', 'C-1', %s,"
            " '{\"speed\": \"100M\"}', 'bench'"
            " from generate_series(0, %s - 1) i",
            (division, prefix, command, n),
        )
        conn.execute("vacuum analyze seed_plan_buffer")


def seed_daemon(world: World, division: str, n: int, threads: int) -> float:
    """The seed's design (P6): a daemon per division drains its table buffer oldest first,
    one command per cycle: fetch the row, execute it at the target in a once-only
    transaction (the marker, as bossa's adapters write it), then record ENDDATE and the
    P11 log line and commit. `threads` such daemons share the buffer (skip locked; the
    backlog's contracts are distinct, so per-contract order needs no more)."""
    done = itertools.count()

    def work() -> None:
        with contextlib.ExitStack() as stack:
            buffer = stack.enter_context(psycopg.connect(world.bossa_dsn))
            if division == "HDS":
                r = stack.enter_context(redis.Redis.from_url(world.redis.url))
            else:
                target = stack.enter_context(psycopg.connect(world.target_dsn))
            while True:
                with buffer.transaction():
                    row = buffer.execute(
                        "select id, sa_id, wo_no, bind_data from seed_plan_buffer"
                        " where division = %s and enddate is null"
                        " order by id limit 1 for update skip locked",
                        (division,),
                    ).fetchone()
                    if row is None:
                        return
                    entry_id, sa, wo_no, bind = row
                    if division == "HDS":
                        marker = f"bossa:applied:HDS:seed{entry_id}"
                        with r.pipeline(transaction=True) as pipe:
                            pipe.watch(marker)
                            if not pipe.exists(marker):
                                pipe.multi()
                                pipe.execute_command(
                                    "HSET", f"sub:{sa}", "speed", bind["speed"], "status", "active"
                                )
                                pipe.execute_command("RPUSH", f"log:{sa}", f"{wo_no} new")
                                pipe.set(marker, entry_id, ex=3600)
                                pipe.execute()
                    else:
                        with target.transaction():
                            target.execute(
                                "insert into bossa_applied_commands (entry_id, division,"
                                " applied_at) values (%s, 'AAA', current_timestamp)",
                                (-entry_id,),
                            )
                            target.execute(SQL_RAW_INSERT, (sa, "C-1", bind["speed"]))
                    buffer.execute(
                        "update seed_plan_buffer set enddate = now() where id = %s", (entry_id,)
                    )
                    buffer.execute(
                        "insert into seed_log (buffer_id, division, sa_id, wo_no)"
                        " values (%s, %s, %s, %s)",
                        (entry_id, division, sa, wo_no),
                    )
                next(done)

    t0 = time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    count = next(done)
    if count != n:
        raise RuntimeError(f"the seed daemon delivered {count} of {n}")
    return n / wall


async def pgmq_setup(dsn: str) -> None:
    import pgmq

    path = Path(pgmq.__file__).parent / "sql" / "pgmq.sql"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        exists = await (await c.execute("select to_regnamespace('pgmq') is not null")).fetchone()
        if not (exists and exists[0]):
            await c.execute(path.read_text())  # type: ignore[arg-type]
        for division in DIVISIONS:
            await c.execute("select pgmq.create(%s)", (f"replay_{division.lower()}",))
            # read_grouped's group expression, indexed (pgmq's own fifo index is a GIN
            # index read_grouped cannot use): the peer at its best.
            await c.execute(
                sql.SQL(
                    "create index if not exists {} on pgmq.{}"
                    " ((coalesce(headers->>'x-pgmq-group', '_default_fifo_group')), msg_id)"
                ).format(
                    sql.Identifier(f"q_replay_{division.lower()}_group"),
                    sql.Identifier(f"q_replay_{division.lower()}"),
                )
            )


async def pgmq_replay(world: World, s: Settings, division: str, n: int, prefix: str) -> float:
    """The same replay built on pgmq: the commands in a pgmq queue grouped by contract
    (SQS-FIFO style), K consumers `read_grouped` a batch, deliver it with the backup
    daemon's own code (the same adapter, plans, and once-only markers at the target),
    then archive what was applied and write the P11 log in one transaction."""
    queue = f"replay_{division.lower()}"
    server_type, _ = DIVISIONS[division]
    now = datetime.now(UTC).isoformat()
    pool = world.journal.pool
    async with pool.connection() as c:
        await c.execute(
            sql.SQL("truncate pgmq.{}, pgmq.{}").format(
                sql.Identifier(f"q_{queue}"), sql.Identifier(f"a_{queue}")
            )
        )
        for start in range(0, n, s.enqueue_batch):
            rows = range(start, min(n, start + s.enqueue_batch))
            await c.execute(
                "select pgmq.send_batch(%s, %s::jsonb[], %s::jsonb[])",
                (
                    queue,
                    [json.dumps(payload_for(division, server_type, i, now)) for i in rows],
                    [json.dumps({"x-pgmq-group": f"{prefix}-{i}"}) for i in rows],
                ),
            )
        await c.execute(sql.SQL("vacuum analyze pgmq.{}").format(sql.Identifier(f"q_{queue}")))
    daemon = BackupDaemon(world.journal, world.deliverer, division)  # its code, not its loop
    lane = lane_of(division)
    done = 0

    async def consumer() -> None:
        nonlocal done
        while done < n:
            async with pool.connection() as c:
                rows = await (
                    await c.execute(
                        "select msg_id, read_ct, enqueued_at, vt, message, headers"
                        " from pgmq.read_grouped(%s, 30, %s)",
                        (queue, s.batch),
                    )
                ).fetchall()
            if not rows:
                await asyncio.sleep(0.005)
                continue
            entries = [
                Entry(
                    int(r["msg_id"]),
                    lane,
                    r["headers"]["x-pgmq-group"],
                    "provisioning.command",
                    r["message"],
                    int(r["read_ct"]),
                    r["enqueued_at"],
                    r["vt"],
                )
                for r in sorted(rows, key=lambda r: r["msg_id"])
            ]
            outcome = await daemon._deliver_batch(entries)
            ok = [e for e in entries if e.id in outcome and outcome[e.id] is None]
            async with pool.connection() as c, c.pipeline(), c.transaction():
                await c.execute(
                    "select pgmq.archive(%s, %s::bigint[])", (queue, [e.id for e in ok])
                )
                # P11 by the same writer as the daemon's own, from the payloads
                # _deliver_batch validated (not validated again).
                await log_deliveries(
                    c,
                    [
                        Delivery(
                            e.id,
                            ProvisioningCommand.model_construct(**e.payload, sa_id=str(e.key)),
                            DeliveryMode.BACKUP,
                            e.attempts,
                        )
                        for e in ok
                    ],
                )
            done += len(ok)

    t0 = time.perf_counter()
    await asyncio.gather(*(consumer() for _ in range(s.concurrency)))
    return n / (time.perf_counter() - t0)


async def bench_replay(world: World, s: Settings, report: Report) -> None:
    print(
        f"\n2. replay: {s.backlog:,} commands per division, BackupDaemon once,"
        f" concurrency {s.concurrency}, batch {s.batch}; raw = pipelined plain commands"
    )
    replay: dict[str, Any] = {}
    for division in ("HDS", "AAA"):
        world.clear_targets()
        fill_rate = await fill(world, division, s.backlog, s.enqueue_batch, f"SA-{division}")
        print(f"  {division}: backlog of {s.backlog:,} enqueued at {fill_rate:,.0f}/s")
        commits0 = pg_commits(world.bossa_dsn)
        tcommits0 = pg_commits(world.target_dsn)
        lsn0 = pg_wal_lsn(world.bossa_dsn)
        rcmds0 = redis_commands(world.redis.url)
        # The adapter built before the clock starts, as for the no-op ceiling: with
        # --replay-only nothing has used the division yet, and importing SQLAlchemy for
        # the first SQL adapter alone took 0.43 s, a third of a quick run's AAA drain.
        await world.deliverer._adapter(division)
        with counted_checkouts(world.journal.pool) as checkouts, Cpu() as cpu:
            acked = await drain_buffer(world, division)
        bossa_rate = acked / cpu.wall
        per_cmd = {
            "bossa db commits": (pg_commits(world.bossa_dsn) - commits0) / acked,
            "bossa db WAL bytes": pg_wal_bytes(world.bossa_dsn, lsn0) / acked,
            "bossa pool checkouts": checkouts[0] / acked,
            "target db commits": (pg_commits(world.target_dsn) - tcommits0) / acked,
            "redis commands": (redis_commands(world.redis.url) - rcmds0) / acked,
        }
        if division == "HDS":
            applied = world.redis_keys()
            expected = 3 * s.backlog  # sub:, log: and the marker per command
        else:
            applied = world.target_rows()
            expected = s.backlog
        if acked != s.backlog or applied != expected:
            report.note(
                f"{division} replay: acked {acked} of {s.backlog}; {applied} applied, "
                f"expected {expected}"
            )
        # The daemon's own ceiling: the same drain with a no-op adapter.
        world.clear_targets()
        await fill(world, division, s.backlog, s.enqueue_batch, f"SA-n-{division}")
        ceiling = await journal_only_drain(world, division)
        # The seed's design: a table buffer, one once-only transaction per command.
        world.clear_targets()
        await asyncio.to_thread(seed_fill, world.bossa_dsn, division, s.backlog, f"SA-s{division}")
        seed = await asyncio.to_thread(seed_daemon, world, division, s.backlog, s.concurrency)
        seed_ok = (
            world.redis_keys() == 3 * s.backlog
            if division == "HDS"
            else world.target_rows() == s.backlog
        )
        # The same replay on pgmq (grouped read, archive, the daemon's delivery code).
        world.clear_targets()
        on_pgmq = await pgmq_replay(world, s, division, s.backlog, f"SA-q{division}")
        pgmq_ok = (
            world.redis_keys() == 3 * s.backlog
            if division == "HDS"
            else world.target_rows() == s.backlog
        )
        for peer, ok in (("seed design", seed_ok), ("pgmq replay", pgmq_ok)):
            if not ok:
                report.note(f"{division} {peer} did not apply every command exactly once")
        world.clear_targets()
        if division == "HDS":
            raw = await asyncio.to_thread(
                raw_redis, world.redis.url, s.backlog, s.raw_chunk, f"SA-{division}"
            )
            raw_ok = world.redis_keys() == 2 * s.backlog
        else:
            raw = await asyncio.to_thread(
                raw_sql, world.target_dsn, s.backlog, s.raw_chunk, f"SA-{division}"
            )
            raw_ok = world.target_rows() == s.backlog
        if not raw_ok:
            report.note(f"{division} raw run did not apply every command")
        name = "Redis (HDS)" if division == "HDS" else "PostgreSQL (AAA)"
        drain_100k_s = 100_000 / bossa_rate
        report.add("replay", f"{name}: bossa BackupDaemon", bossa_rate, "commands/s")
        report.add("replay", f"{name}: seed design (table buffer + daemon)", seed, "commands/s")
        report.add("replay", f"{name}: pgmq replay (read_grouped + archive)", on_pgmq, "commands/s")
        report.add("replay", f"{name}: daemon no-op ceiling", ceiling, "commands/s")
        report.add("replay", f"{name}: raw client, pipelined (information)", raw, "commands/s")
        report.add("replay", f"{name}: bossa / seed design", bossa_rate / seed, "x")
        report.add("replay", f"{name}: bossa / pgmq replay", bossa_rate / on_pgmq, "x")
        report.add("replay", f"{name}: bossa / no-op ceiling", bossa_rate / ceiling, "x")
        report.add("replay", f"{name}: bossa / raw (information)", bossa_rate / raw, "x")
        report.add("replay", f"{name}: 100,000 backlog drained in", drain_100k_s, "s")
        report.target(f"replay {name} vs the seed's design", bossa_rate / seed, 3.0)
        report.target(f"replay {name} vs the same replay on pgmq", bossa_rate / on_pgmq, 1.5)
        report.target(f"replay {name} vs the daemon's no-op ceiling", bossa_rate / ceiling, 0.8)
        report.target(f"replay {name}: 100,000 backlog drained (s)", drain_100k_s, 10.0, lower=True)
        print(f"      {cpu.summary()}")
        print("      per command: " + ", ".join(f"{k} {v:.2f}" for k, v in per_cmd.items()))
        replay[division] = {
            "bossa_per_s": bossa_rate,
            "seed_per_s": seed,
            "pgmq_per_s": on_pgmq,
            "ceiling_per_s": ceiling,
            "raw_per_s": raw,
            "drain_100k_s": drain_100k_s,
            "cpu": cpu.summary(),
            "per_command": per_cmd,
        }
        missed = (
            bossa_rate < 3 * seed
            or bossa_rate < 1.5 * on_pgmq
            or bossa_rate < 0.8 * ceiling
            or drain_100k_s > 10
        )
        if missed:
            replay[division]["diagnosis"] = await diagnose(world, s, division, report, ceiling)
    world.extra["replay"] = replay


async def journal_only_drain(world: World, division: str) -> float:
    """The backup daemon's ceiling here: everything but the delivery (the adapter says
    "applied" without a call), so what remains is the journal's and the log's cost."""
    adapter = await world.deliverer._adapter(division)
    real = adapter.deliver_many  # type: ignore[attr-defined]
    adapter.deliver_many = lambda commands: dict.fromkeys(c.entry_id for c in commands)  # type: ignore[attr-defined]
    real_async = getattr(adapter, "adeliver_many", None)
    if real_async is not None:  # a PostgreSQL division delivers its batches on the loop

        async def applied(commands: list[Any]) -> dict[int, None]:
            return dict.fromkeys(c.entry_id for c in commands)

        adapter.adeliver_many = applied  # type: ignore[attr-defined]
    try:
        with Cpu() as cpu:
            acked = await drain_buffer(world, division)
    finally:
        adapter.deliver_many = real  # type: ignore[attr-defined]
        if real_async is not None:
            adapter.adeliver_many = real_async  # type: ignore[attr-defined]
    return acked / cpu.wall


async def diagnose(
    world: World, s: Settings, division: str, report: Report, ceiling: float
) -> dict[str, Any]:
    n = s.diag_n
    print(f"  diagnosing {division} on {n:,} commands")
    out: dict[str, Any] = {}
    world.clear_targets()
    per_cmd = await asyncio.to_thread(
        raw_per_command, world, division, n, s.concurrency, f"SA-pc-{division}"
    )
    out["raw_per_command_per_s"] = per_cmd
    report.diag(
        f"{division}: the adapter's protocol without bossa (one once-only transaction per"
        f" command, {s.concurrency} connections): {per_cmd:,.0f} commands/s"
    )
    world.clear_targets()
    await fill(world, division, n, s.enqueue_batch, f"SA-t-{division}")
    timed = await timed_drain(world, division, n)
    out["timed"] = timed
    parts = ", ".join(f"{k} {v:.3f}" for k, v in timed["ms_per_command"].items())
    report.diag(
        f"{division}: timed drain {timed['acked'] / timed['wall_s']:,.0f}/s;"
        f" each of {s.concurrency} slots spends {timed['slot_ms_per_command']:.3f} ms per"
        " command;"
        f" ms per command by stage: {parts}"
    )
    world.clear_targets()
    await fill(world, division, n, s.enqueue_batch, f"SA-j-{division}")
    bound = await journal_only_drain(world, division)
    out["journal_only_per_s"] = bound
    report.diag(
        f"{division}: the same daemon with a no-op adapter (journal take, ack and P11 log"
        f" only, nothing sent), on {n:,}: {bound:,.0f} commands/s (the headline's ceiling"
        f" on the whole backlog: {ceiling:,.0f}/s)"
    )
    world.clear_targets()
    await fill(world, division, n, s.enqueue_batch, f"SA-p-{division}")
    profile = await profiled_drain(world, division)
    out["cprofile_tottime"] = profile
    print("\n".join("      " + ln for ln in profile))
    world.clear_targets()
    return out


# -- the run ---------------------------------------------------------------------------


async def run(s: Settings, report: Report, base: Path) -> dict[str, Any]:
    bossa_pg = EmbeddedPostgres(base / "bossa", port=free_port(), database="bossa", durable=True)
    target_pg = EmbeddedPostgres(base / "aaa", port=free_port(), database="bossa", durable=True)
    await asyncio.to_thread(bossa_pg.start)
    await asyncio.to_thread(target_pg.start)
    try:
        with redis_server() as redis_proc:
            return await run_with(s, report, bossa_pg, target_pg, redis_proc)
    finally:
        await asyncio.to_thread(bossa_pg.destroy)
        await asyncio.to_thread(target_pg.destroy)


async def run_with(
    s: Settings,
    report: Report,
    bossa_pg: EmbeddedPostgres,
    target_pg: EmbeddedPostgres,
    redis_proc: ServerProcess,
) -> dict[str, Any]:
    bossa_dsn, target_dsn = bossa_pg.url(), target_pg.url()
    await asyncio.to_thread(migrate, bossa_dsn)
    with psycopg.connect(bossa_dsn) as conn:
        load_sample(conn)
        server = conn.execute(
            "select version(), current_setting('fsync'), current_setting('synchronous_commit')"
        ).fetchone()
    with psycopg.connect(target_dsn, autocommit=True) as conn:
        conn.execute(AAA_TABLE)
    print(f"  bossa db: {server}")
    psettings = ProvisioningSettings(
        down_hold_s=s.down_hold_s, backup_batch=s.batch, backup_concurrency=s.concurrency
    )
    async with open_pool(bossa_dsn, min_size=16, max_size=16) as pool:
        journal = Journal(pool, JournalSettings(), actor="bench")
        target_url = target_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
        await load_sample_plans(pool, aaa_url=target_url, hds_url=redis_proc.url)
        deliverer = Deliverer(pool, psettings)
        world = World(bossa_dsn, target_dsn, redis_proc, journal, deliverer, psettings)
        world.extra["server"] = server
        with psycopg.connect(target_dsn, autocommit=True) as conn:
            # the marker table exists before the first order (the adapter creates it too)
            conn.execute(
                "create table if not exists bossa_applied_commands (entry_id bigint primary"
                " key, division varchar(64) not null, applied_at timestamp not null)"
            )
        await pgmq_setup(bossa_dsn)
        try:
            if not s.replay_only:
                await bench_orders(world, s, report)
            await bench_replay(world, s, report)
        finally:
            await deliverer.close()
        return world.extra


def append_results(
    path: Path, s: Settings, report: Report, ref: str, command: str, extra: dict[str, Any]
) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"\n## {now} — provisioning: orders and replay{' (quick)' if s.quick else ''}\n",
        f"- command: `{command}`",
        f"- git ref: `{ref}`",
        f"- machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release};"
        f" load average at start {extra.get('loadavg')}",
        f"- bossa database: {extra.get('server')}; the AAA division is a second durable"
        " PostgreSQL, HDS a redis-server (no persistence), all on this machine",
        f"- settings: {s.submitters} submitters, {s.orders:,} orders per phase after"
        f" {s.warmup} warm-up orders; backlog {s.backlog:,} commands per division,"
        f" BackupDaemon concurrency {s.concurrency}, batch {s.batch}; raw clients flush"
        f" every {s.raw_chunk:,} commands; down_hold_s {s.down_hold_s:g}",
        "",
        "| phase | case | value | unit |",
        "|---|---|---:|---|",
    ]
    lines += [
        f"| {r['phase']} | {r['case']} | {fmt(r['value'])} | {r['unit']} |" for r in report.rows
    ]
    lines += ["", "| target | value | goal | met |", "|---|---:|---:|---|"]
    for t in report.targets:
        goal = ("<= " if t["lower_is_better"] else ">= ") + fmt(t["goal"])
        met = "yes" if t["met"] else "**no**"
        lines.append(f"| {t['target']} | {fmt(t['value'])} | {goal} | {met} |")
    replay = extra.get("replay", {})
    if replay:
        lines += ["", "Per replayed command (headline drains):", ""]
        for division, r in replay.items():
            per = ", ".join(f"{k} {v:,.2f}" for k, v in r["per_command"].items())
            lines.append(f"- {division}: {per}; {r['cpu']}")
    orders = extra.get("orders", {})
    if orders:
        lines += ["", "Orders:", ""]
        for label, o in orders.items():
            lines.append(f"- {label}: routes {o['routes']}; {o['cpu']}")
    if report.notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in report.notes]
    if report.diagnostics:
        lines += ["", "Diagnostics of the misses:", ""] + [f"- {d}" for d in report.diagnostics]
        for division, r in replay.items():
            prof = r.get("diagnosis", {}).get("cprofile_tottime")
            if prof:
                lines += ["", f"cProfile of the {division} drain (event loop thread, by tottime):"]
                lines += ["", "```", *prof, "```"]
    append_section(path, lines)


def main() -> None:
    parser = base_parser(__doc__.split("\n")[0], "10k backlog, fewer orders")
    parser.add_argument("--batch", type=int, help="backup daemon batch (default: its own)")
    parser.add_argument("--concurrency", type=int, help="backup daemon batches in hand")
    parser.add_argument("--replay-only", action="store_true", help="skip the orders phase")
    args = parser.parse_args()
    s = Settings.make(args.quick)
    s.replay_only = args.replay_only
    if args.batch:
        s.batch = args.batch
    if args.concurrency:
        s.concurrency = args.concurrency
    ref = git_ref()
    command = " ".join([".venv/bin/python -m bench.provisioning.run", *sys.argv[1:]])
    print("bench/provisioning: orders (all up / one down) and buffer replay vs raw clients")
    print(f"  git ref {ref}; {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print(f"  settings: {s}")
    report = Report()
    loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"  load average at start: {loadavg}")
    with tempfile.TemporaryDirectory(prefix="bossa-bench-prov-") as tmp:
        extra = asyncio.run(run(s, report, Path(tmp)))
    extra["loadavg"] = loadavg
    if not args.no_results:
        append_results(ROOT / "bench" / "RESULTS.md", s, report, ref, command, extra)
        print("\nappended to bench/RESULTS.md")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "settings": asdict(s),
                    "git_ref": ref,
                    "rows": report.rows,
                    "targets": report.targets,
                    "notes": report.notes,
                    "diagnostics": report.diagnostics,
                    "extra": extra,
                },
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
