"""Provisioning under real faults: division servers stopped and restarted at random while
orders pour in and backup daemons deliver, and a backup daemon killed with SIGKILL in the
middle of a delivery. Nothing may be lost, nothing applied twice, and the commands for one
contract must reach each server in the order they were issued (P4, P5, P6)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest
import redis

from bossa.customers import load_sample
from bossa.db import Pool, open_pool
from bossa.journal import Journal, JournalSettings
from bossa.provisioning import (
    BackupDaemon,
    Deliverer,
    ProvisioningSettings,
    add_division,
    add_plan_command,
)
from tests.provisioning import servers
from tests.provisioning.ordering import numbered_order
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]
SETTINGS = ProvisioningSettings(down_hold_s=0.5)
#: Fast retries, and enough attempts that nothing parks while servers come and go.
CHAOS_JOURNAL = JournalSettings(
    backoff_base_ms=10,
    backoff_max_ms=50,
    max_attempts=1000,
    lease_ms=5_000,
    poll_interval_s=0.5,
    reap_interval_s=0.1,
)

SQL_APPLIED = "insert into applied (sa_id, wo_no, seq) values (:sa_id, :wo_no, :seq)"
PG_APPLIED_TABLE = (
    "create table applied (id bigint generated always as identity primary key,"
    " sa_id text not null, wo_no text not null, seq integer not null)"
)
MARIADB_APPLIED_TABLE = (
    "create table applied (id bigint auto_increment primary key,"
    " sa_id varchar(64) not null, wo_no varchar(64) not null, seq int not null) engine=InnoDB"
)
REDIS_APPLIED = [["RPUSH", "applied:{sa_id}", "{seq}"]]
SOAP_APPLIED = {
    "operation": "Provision",
    "params": {"saId": "{sa_id}", "intfCode": "{intf_code}", "service": "seq-{seq}"},
}


class Stoppable(Protocol):
    def stop(self) -> None: ...

    def start(self) -> None: ...


# -- helpers -----------------------------------------------------------------------------


@contextlib.contextmanager
def durable_redis() -> Iterator[servers.ServerProcess]:
    """A Redis of the test's own that keeps its data across a restart (AOF, fsync always).

    The session `redis_server` runs without persistence: a restart empties it, which would
    make "applied exactly once" unverifiable after the chaos."""
    work = Path(tempfile.mkdtemp(prefix="bossa-redis-aof-"))
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    argv = [
        "/usr/bin/redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        str(work),
    ]

    def ready() -> bool:
        try:
            with redis.Redis.from_url(url, socket_connect_timeout=0.2) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    server = servers.ServerProcess("redis-aof", argv, port=port, workdir=work, url=url, ready=ready)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


class Chaos:
    """A thread that stops a random server for 0.2-1.5 s, starts it again, and repeats."""

    def __init__(self, targets: dict[str, Stoppable], *, seed: int, limit_s: float) -> None:
        self.targets = targets
        self.seed = seed
        self.limit_s = limit_s
        self.outages: list[tuple[str, float]] = []
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def __enter__(self) -> Chaos:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(60)
        for server in self.targets.values():  # whatever happened, every server is up again
            server.start()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        rng = random.Random(self.seed)
        deadline = time.monotonic() + self.limit_s
        try:
            while not self._done.is_set() and time.monotonic() < deadline:
                name = rng.choice(sorted(self.targets))
                server = self.targets[name]
                down_s = rng.uniform(0.2, 1.5)
                server.stop()
                try:
                    self._done.wait(down_s)
                finally:
                    server.start()
                self.outages.append((name, down_s))
                self._done.wait(rng.uniform(0.05, 0.3))
        except BaseException as exc:  # reported by stop(), in the test's thread
            self.error = exc


@contextlib.asynccontextmanager
async def chaos_journal(db_url: str) -> AsyncIterator[Journal]:
    async with open_pool(db_url, min_size=2, max_size=40) as pool:
        yield Journal(pool, CHAOS_JOURNAL, actor="test")


async def add_plan(pool: Pool, division: str, command: Any) -> None:
    for intf_code in ("4201", "4202"):
        await add_plan_command(pool, "ADSL", intf_code, division, command, actor="test")


async def wait_drained(pool: Pool, *, limit_s: float) -> dict[str, int]:
    """Wait until no entry is waiting, ready or taken; returns the entries by state."""
    deadline = time.monotonic() + limit_s
    while True:
        async with pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "select state::text as state, count(*) as n from journal.entries group by 1"
                )
            ).fetchall()
        states = {row["state"]: int(row["n"]) for row in rows}
        if not any(states.get(s) for s in ("waiting", "ready", "taken")):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"buffers not drained in {limit_s}s: {states}")
        await asyncio.sleep(0.2)


async def journal_facts(pool: Pool) -> tuple[dict[str, int], set[int], list[int]]:
    """Entries by state, the ids of all entries, and the provisioning log's entry ids."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("select id, state::text as state from journal.entries")
        ).fetchall()
        log = await (await conn.execute("select entry_id from provisioning.log")).fetchall()
    return (
        dict(Counter(row["state"] for row in rows)),
        {int(row["id"]) for row in rows},
        [int(row["entry_id"]) for row in log],
    )


def check_target(
    name: str, applied: list[tuple[str, int]], expected: dict[str, list[int]]
) -> list[str]:
    """Problems with one target's applied (sa_id, seq) list, in the order applied."""
    problems: list[str] = []
    counts = Counter(applied)
    twice = sorted(k for k, n in counts.items() if n > 1)
    if twice:
        problems.append(f"{name}: applied more than once: {twice[:10]}")
    per_contract: dict[str, list[int]] = defaultdict(list)
    for sa_id, seq in applied:
        per_contract[sa_id].append(seq)
    for sa_id, seqs in expected.items():
        got = per_contract.get(sa_id, [])
        if sorted(set(got)) != seqs:
            problems.append(f"{name}: {sa_id} applied {got}, issued {seqs} (lost or extra)")
        elif [s for i, s in enumerate(got) if s not in got[:i]] != seqs:
            problems.append(f"{name}: {sa_id} applied out of order: {got}")
    return problems


# -- a. the acceptance test: random outages of four divisions ------------------------------


CONTRACTS = 200
ORDERS_PER_CONTRACT = 5  # 4201, then four 4202 changes: 1,000 orders
SUBMITTERS = 8
DIVISIONS = ("PGSQL", "MARIA", "REDIS", "SOAP")
CHAOS_LIMIT_S = 40.0


@pytest.mark.fault
async def test_random_outages_lose_nothing_repeat_nothing_reorder_nothing(
    db_url: str,
    pg_target: servers.PostgresTarget,
    mariadb_server: servers.MariaDbServer,
) -> None:
    """1,000 orders over 200 contracts and four divisions (PostgreSQL, MariaDB, Redis,
    SOAP) while a chaos thread stops and restarts a random one of them for 0.2-1.5 s,
    again and again, with the four backup daemons running. Afterwards every order is
    completed, every command was applied exactly once at its target, in issue order per
    contract, no journal entry is unfinished, and the log has one row per entry."""
    started = time.monotonic()
    pg_target.start()
    mariadb_server.start()
    with psycopg.connect(pg_target.dsn, autocommit=True) as conn:
        conn.execute("drop table if exists applied, bossa_applied_commands")
        conn.execute(PG_APPLIED_TABLE)
    with contextlib.closing(mariadb_server.connect()) as conn, conn.cursor() as cur:
        cur.execute("drop table if exists applied, bossa_applied_commands")
        cur.execute(MARIADB_APPLIED_TABLE)
    with psycopg.connect(db_url) as conn:
        load_sample(conn)

    # A SOAP server of the test's own: its message ids are journal entry ids, which start
    # at 1 in every test database, so a shared one would take ours for repeats.
    with durable_redis() as store, servers.soap_server() as soap:
        async with chaos_journal(db_url) as journal:
            pool = journal.pool
            for name, values, command in (
                ("PGSQL", {"server_type": "sql", "server_url": pg_target.url}, SQL_APPLIED),
                ("MARIA", {"server_type": "sql", "server_url": mariadb_server.url}, SQL_APPLIED),
                ("REDIS", {"server_type": "memstore", "server_url": store.url}, REDIS_APPLIED),
                ("SOAP", {"server_type": "soap", "server_url": soap.url}, SOAP_APPLIED),
            ):
                await add_division(pool, name, {**values, "timeout_ms": 3000}, actor="test")
                await add_plan(pool, name, command)

            tag = uuid.uuid4().hex[:6]
            contracts = [f"C{tag}-{i:03d}" for i in range(CONTRACTS)]
            routes: Counter[str] = Counter()
            statuses: Counter[str] = Counter()
            order_deliverer = Deliverer(pool, SETTINGS)
            daemon_deliverers = {d: Deliverer(pool, SETTINGS) for d in DIVISIONS}
            daemons = [
                BackupDaemon(journal, daemon_deliverers[d], d, listen_url=db_url) for d in DIVISIONS
            ]
            daemon_tasks = [asyncio.create_task(d.run()) for d in daemons]

            async def submitter(mine: list[str]) -> None:
                for seq in range(ORDERS_PER_CONTRACT):
                    for sa_id in mine:
                        result = await numbered_order(
                            journal,
                            order_deliverer,
                            sa_id,
                            seq,
                            channel="fault-test",
                            settings=SETTINGS,
                        )
                        statuses[result["status"]] += 1
                        routes.update(result["divisions"].values())

            targets: dict[str, Stoppable] = {
                "PGSQL": pg_target,
                "MARIA": mariadb_server,
                "REDIS": store,
                "SOAP": soap,
            }
            try:
                # From the test's seed (conftest): BOSSA_TEST_SEED replays the outages.
                chaos_seed = random.randrange(10**6)
                with Chaos(targets, seed=chaos_seed, limit_s=CHAOS_LIMIT_S) as chaos:
                    await asyncio.gather(
                        *(submitter(contracts[i::SUBMITTERS]) for i in range(SUBMITTERS))
                    )
                submitted = time.monotonic()
                states = await wait_drained(pool, limit_s=60)
                drained = time.monotonic()
            finally:
                for daemon in daemons:
                    daemon.stop()
                await asyncio.gather(*daemon_tasks, return_exceptions=True)
                for deliverer in (order_deliverer, *daemon_deliverers.values()):
                    await deliverer.close()

            entry_states, entry_ids, logged = await journal_facts(pool)
            async with pool.connection() as conn:
                orders = await (
                    await conn.execute(
                        "select status, count(*) as n from provisioning.orders group by status"
                    )
                ).fetchall()

        expected = {sa_id: list(range(ORDERS_PER_CONTRACT)) for sa_id in contracts}
        with psycopg.connect(pg_target.dsn) as conn:
            pg_applied = conn.execute("select sa_id, seq from applied order by id").fetchall()
        with contextlib.closing(mariadb_server.connect()) as conn, conn.cursor() as cur:
            cur.execute("select sa_id, seq from applied order by id")
            maria_applied = [(str(a), int(b)) for a, b in cur.fetchall()]
        client = redis.Redis.from_url(store.url, decode_responses=True)
        redis_applied = [
            (sa_id, int(seq))
            for sa_id in contracts
            for seq in client.lrange(f"applied:{sa_id}", 0, -1)
        ]
        client.close()
        soap_applied = [
            (row["params"]["saId"], int(row["params"]["service"].removeprefix("seq-")))
            for row in soap.applied()
        ]

    timing = (
        f"chaos seed {chaos_seed}: submitted in {submitted - started:.1f}s,"
        f" drained in {drained - submitted:.1f}s,"
        f" {len(chaos.outages)} outages {Counter(n for n, _ in chaos.outages)}, routes {routes}"
    )
    print(timing)
    total = CONTRACTS * ORDERS_PER_CONTRACT
    assert len(chaos.outages) >= 4, timing
    assert statuses == {"completed": total}
    assert orders == [{"status": "completed", "n": total}]
    assert routes["buffered"] > 0, timing
    assert routes["direct"] > 0, timing
    problems = [
        *check_target("PGSQL", [(a, int(b)) for a, b in pg_applied], expected),
        *check_target("MARIA", maria_applied, expected),
        *check_target("REDIS", redis_applied, expected),
        *check_target("SOAP", soap_applied, expected),
    ]
    assert problems == [], "\n".join(problems[:40])
    for applied in (pg_applied, maria_applied, redis_applied, soap_applied):
        assert len(applied) == total
    assert states == {"done": total * len(DIVISIONS)}
    assert entry_states == {"done": total * len(DIVISIONS)}
    assert sorted(logged) == sorted(entry_ids)


# -- b. a backup daemon process killed with SIGKILL mid-delivery ---------------------------


SLOW_SQL = (
    "insert into slow_applied (sa_id, seq)"
    " select cast(:sa_id as varchar(64)), cast(:seq as integer) from pg_sleep(0.15)"
)
KILLS = 3


def daemon_process(db_url: str, division: str, *, once: bool = False) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BOSSA_DATABASE_URL": db_url,
        "BOSSA_JOURNAL_LEASE_MS": "1500",
        "BOSSA_JOURNAL_BACKOFF_BASE_MS": "10",
        "BOSSA_JOURNAL_BACKOFF_MAX_MS": "50",
        "BOSSA_JOURNAL_REAP_INTERVAL_S": "0.1",
        "BOSSA_JOURNAL_POLL_INTERVAL_S": "0.5",
        "BOSSA_JOURNAL_MAX_ATTEMPTS": "100",
    }
    argv = [sys.executable, "-m", "bossa.cli", "provisioning", "backup-daemon"]
    argv += ["--division", division, "--concurrency", "4"]
    if once:
        argv.append("--once")
    return subprocess.Popen(
        argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def sleeping_deliveries(dsn: str) -> int:
    """Deliveries in the middle of their target transaction right now."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity"
            " where query like '%%pg_sleep%%' and state = 'active' and pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


def applied_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select count(*) from slow_applied").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.fault
async def test_backup_daemon_killed_mid_delivery_loses_and_repeats_nothing(
    db_url: str, journal: Journal, pg_target: servers.PostgresTarget
) -> None:
    """A buffer of 60 slow commands (12 contracts x 5); the daemon process is killed with
    SIGKILL three times while deliveries are in flight; a last daemon finishes the job.
    Every command is applied once, in order per contract, and logged once."""
    pg_target.start()
    with psycopg.connect(pg_target.dsn, autocommit=True) as conn:
        conn.execute("drop table if exists slow_applied, bossa_applied_commands")
        conn.execute(
            "create table slow_applied (id bigint generated always as identity primary key,"
            " sa_id varchar(64) not null, seq integer not null)"
        )
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    pool = journal.pool
    await add_division(
        pool, "SLOWPG", {"server_type": "sql", "server_url": pg_target.url}, actor="test"
    )
    await add_plan(pool, "SLOWPG", SLOW_SQL)
    # Known down for now: every order goes to the buffer (P4a).
    async with pool.connection() as conn:
        await conn.execute(
            "update provisioning.divisions set down_until = now() + interval '1 hour'"
            " where division = 'SLOWPG'"
        )
    deliverer = Deliverer(pool, SETTINGS)
    contracts = [f"K{i:02d}" for i in range(12)]
    try:
        for seq in range(5):
            for sa_id in contracts:
                result = await numbered_order(
                    journal, deliverer, sa_id, seq, channel="fault-test", settings=SETTINGS
                )
                assert result["divisions"] == {"SLOWPG": "buffered"}
    finally:
        await deliverer.close()
    total = len(contracts) * 5
    # The server is back: a daemon would first probe a division known to be down
    # (tests/provisioning/test_outage.py); this test is about killing it mid-delivery.
    async with pool.connection() as conn:
        await conn.execute(
            "update provisioning.divisions set down_until = null where division = 'SLOWPG'"
        )

    kills: list[int] = []
    for _ in range(KILLS):
        proc = daemon_process(db_url, "SLOWPG")
        try:
            deadline = time.monotonic() + 30
            while sleeping_deliveries(pg_target.dsn) < 1 or applied_count(pg_target.dsn) <= (
                kills[-1] if kills else 0
            ):
                assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
                if time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(
                        f"the daemon never got going:\n{proc.communicate()[0].decode()[-3000:]}"
                    )
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            if proc.stdout:
                proc.stdout.close()
        kills.append(applied_count(pg_target.dsn))
    assert kills[-1] < total, f"too quick to kill mid-buffer: {kills}"

    last = daemon_process(db_url, "SLOWPG", once=True)
    try:
        output, _ = last.communicate(timeout=60)
    finally:
        if last.poll() is None:
            last.kill()
            last.wait(10)
    assert last.returncode == 0, output.decode()[-3000:]

    with psycopg.connect(pg_target.dsn) as conn:
        rows = conn.execute("select sa_id, seq from slow_applied order by id").fetchall()
    expected = {sa_id: list(range(5)) for sa_id in contracts}
    assert check_target("SLOWPG", [(a, int(b)) for a, b in rows], expected) == []
    assert len(rows) == total
    entry_states, entry_ids, logged = await journal_facts(pool)
    assert entry_states == {"done": total}
    assert sorted(logged) == sorted(entry_ids)
