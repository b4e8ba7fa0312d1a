"""The journal under faults: a worker killed mid-batch, PostgreSQL restarted under load, its
backends terminated, and a poison entry. Each test checks that nothing is lost, nothing is
acked twice, and a key's entries are handled in order.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
import pytest

from bossa.db import Pool, open_pool
from bossa.db.migrations import migrate
from bossa.journal import Journal, JournalSettings, NewEntry, service
from bossa.journal.models import Entry
from bossa.journal.worker import HandlerError, Worker
from tests.support import own_postgres

pytestmark = pytest.mark.fault

LANE = "faults"
ROOT = Path(__file__).resolve().parents[2]
DB_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout)


def sturdy_settings() -> JournalSettings:
    """Fast, with attempts to spare: a fault may cost an entry an attempt or two."""
    return JournalSettings(
        backoff_base_ms=10,
        backoff_max_ms=50,
        max_attempts=20,
        lease_ms=2_000,
        poll_interval_s=0.5,
        reap_interval_s=0.1,
    )


async def rows(pool: Pool, query: str, params: Any = None) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (await conn.execute(query, params)).fetchall()


async def column(pool: Pool, query: str, params: Any = None) -> list[Any]:
    return [next(iter(row.values())) for row in await rows(pool, query, params)]


async def states(pool: Pool) -> dict[str, int]:
    found = await rows(
        pool, "select state::text as state, count(*) as n from journal.entries group by state"
    )
    return {row["state"]: int(row["n"]) for row in found}


def collapse(seen: list[int]) -> list[int]:
    """A key's deliveries with immediate redeliveries of the same entry folded."""
    folded: list[int] = []
    for seq in seen:
        if not folded or folded[-1] != seq:
            folded.append(seq)
    return folded


# -- a. a worker process killed in the middle of a batch ---------------------------------


def worker_command(*extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bossa.cli",
        "journal",
        "work",
        "--lane",
        LANE,
        "--handler",
        "tests.journal.worker_process:slow_handler",
        "--concurrency",
        "1",
        "--batch",
        "4",
        *extra,
    ]


def worker_env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOSSA_")}
    env.update(
        BOSSA_DATABASE_URL=db_url,
        BOSSA_JOURNAL_LEASE_MS="1500",
        BOSSA_JOURNAL_REAP_INTERVAL_S="0.1",
        BOSSA_JOURNAL_POLL_INTERVAL_S="0.5",
        BOSSA_JOURNAL_MAX_ATTEMPTS="5",
        BOSSA_TEST_HANDLER_S="0.08",
    )
    return env


async def test_worker_killed_mid_batch(db_url: str, journal: Journal, pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "create table public.deliveries (n bigint generated always as identity,"
            " entry_id bigint not null, pid integer not null)"
        )
    entries = [
        NewEntry(LANE, "cmd", {"seq": seq}, key=f"SA-{key}") for seq in range(4) for key in range(8)
    ]
    ids = [r.id for r in await journal.enqueue(entries)]
    await journal.declare_lane(LANE, owner="journal")  # `journal work` refuses a typo
    env = worker_env(db_url)

    first = await asyncio.create_subprocess_exec(
        *worker_command(),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        # A process takes a while to start on a loaded machine (its imports alone).
        deadline = asyncio.get_running_loop().time() + 90
        while (await rows(pool, "select count(*) as n from public.deliveries"))[0]["n"] < 6:
            assert first.returncode is None, "the worker exited before it was killed"
            assert asyncio.get_running_loop().time() < deadline, "the worker delivered nothing"
            await asyncio.sleep(0.01)
        first.send_signal(signal.SIGKILL)  # in its second batch of 4
    finally:
        if first.returncode is None:
            first.kill()
        await first.wait()

    in_flight = set(await column(pool, "select id from journal.entries where state = 'taken'"))
    done_before = set(await column(pool, "select id from journal.entries where state = 'done'"))
    delivered_before = await column(pool, "select entry_id from public.deliveries order by n")
    assert len(in_flight) == 4, "the killed batch holds its entries under a lease"
    assert len(done_before) == 4
    assert set(delivered_before) - done_before <= in_flight
    assert set(delivered_before) & in_flight  # killed after delivering, before acking

    second = await asyncio.create_subprocess_exec(
        *worker_command("--once"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(second.communicate(), timeout=60)
    finally:
        if second.returncode is None:
            second.kill()
            await second.wait()
    assert second.returncode == 0, err.decode()[-2000:]
    acked = re.search(r"(\d+) done", out.decode())
    assert acked, out.decode()
    # Every entry acked exactly once in all: the first worker's 4, the second the rest.
    assert int(acked.group(1)) == len(ids) - len(done_before)

    final = {
        r["id"]: r
        for r in await rows(
            pool, "select id, state::text as state, attempts, errors from journal.entries"
        )
    }
    assert {r["state"] for r in final.values()} == {"done"}
    assert set(final) == set(ids)
    after = await rows(
        pool,
        "select entry_id, pid from public.deliveries where pid = %s order by n",
        (second.pid,),
    )
    delivered_after = [r["entry_id"] for r in after]
    assert sorted(delivered_after) == sorted(set(ids) - done_before)  # each once
    assert in_flight <= set(delivered_after)  # the killed batch, redelivered
    for entry_id in in_flight:
        assert final[entry_id]["attempts"] == 2
        assert final[entry_id]["errors"][-1]["code"] == "lease_expired"
    for entry_id in set(ids) - in_flight:
        assert final[entry_id]["attempts"] == 1
        assert final[entry_id]["errors"] == []
    # Per key, the deliveries (first worker, then second) follow enqueue order.
    everything = await column(pool, "select entry_id from public.deliveries order by n")
    key_of = {entry_id: entries[n].key for n, entry_id in enumerate(ids)}
    for key in {e.key for e in entries}:
        mine = collapse([i for i in everything if key_of[i] == key])
        assert mine == sorted(i for i in ids if key_of[i] == key)


# -- b, c. PostgreSQL restarted and backends terminated under load ------------------------


class Load:
    """A producer enqueueing keyed entries while a Worker drains them."""

    def __init__(self, journal: Journal, *, keys: int = 20, rounds: int = 60) -> None:
        self.journal = journal
        self.keys = [f"SA-{n}" for n in range(keys)]
        self.rounds = rounds
        self.seen: dict[str, list[int]] = {key: [] for key in self.keys}
        self.producer_errors = 0

    async def handle(self, entry: Entry) -> None:
        assert entry.key is not None
        self.seen[entry.key].append(entry.payload["seq"])
        await asyncio.sleep(0.001)

    async def produce(self) -> None:
        for seq in range(self.rounds):
            batch = [
                NewEntry(LANE, "cmd", {"seq": seq}, key=key, dedup_key=f"{key}/{seq}")
                for key in self.keys
            ]
            while True:
                try:
                    if not await self._already_enqueued(batch):
                        await self.journal.enqueue(batch)
                    break
                except DB_ERRORS:
                    # The commit may have happened: look before enqueueing again.
                    self.producer_errors += 1
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.03)

    async def _already_enqueued(self, batch: list[NewEntry]) -> bool:
        found = await rows(
            self.journal.pool,
            "select count(*) as n from journal.entries where lane = %s and dedup_key = any(%s)",
            (LANE, [e.dedup_key for e in batch]),
        )
        return int(found[0]["n"]) == len(batch)

    async def drained(self) -> None:
        total = len(self.keys) * self.rounds
        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline:
            try:
                if (await states(self.journal.pool)).get("done") == total:
                    return
            except DB_ERRORS:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"not drained: {await states(self.journal.pool)}")

    async def run(self, listen_url: str, fault: Callable[[], Awaitable[None]]) -> Worker:
        worker = Worker(
            self.journal,
            LANE,
            {"*": self.handle},
            listen_url=listen_url,
            concurrency=4,
            batch_size=20,
        )
        running = asyncio.create_task(worker.run())
        try:
            producer = asyncio.create_task(self.produce())
            await fault()
            await producer
            await self.drained()
        finally:
            worker.stop()
            await running
        return worker

    async def check(self, worker: Worker) -> None:
        total = len(self.keys) * self.rounds
        assert await states(self.journal.pool) == {"done": total}  # nothing lost or stuck
        assert await rows(self.journal.pool, "select * from journal.keys") == []
        for key in self.keys:
            assert collapse(self.seen[key]) == list(range(self.rounds)), key
        # Acks are fenced: each entry's ack is accepted once (one whose reply was lost
        # to the fault is refused when sent again, as stale).
        assert total - worker.stats.db_errors <= worker.stats.acked <= total


async def test_postgres_restarted_under_load() -> None:
    with own_postgres() as server:
        url = server.url()
        migrate(url)
        async with open_pool(url, min_size=1, max_size=10) as pool:
            load = Load(Journal(pool, sturdy_settings(), actor="test"))

            handled_at_restart: list[int] = []

            async def restarts() -> None:
                for _ in range(2):
                    await asyncio.sleep(0.6)
                    handled_at_restart.append(sum(map(len, load.seen.values())))
                    await asyncio.to_thread(server.restart)

            async with await psycopg.AsyncConnection.connect(url) as conn:
                before = await (await conn.execute("select pg_postmaster_start_time()")).fetchone()
            worker = await load.run(url, restarts)
            async with await psycopg.AsyncConnection.connect(url) as conn:
                after = await (await conn.execute("select pg_postmaster_start_time()")).fetchone()
            await load.check(worker)
            assert before != after  # PostgreSQL did restart
            # under load when restarted, and it went on afterwards
            assert 0 < handled_at_restart[0] <= handled_at_restart[1] < len(load.keys) * load.rounds


async def test_backends_terminated_under_load(db_url: str, pool: Pool) -> None:
    load = Load(Journal(pool, sturdy_settings(), actor="test"))
    terminated = 0

    async def terminations() -> None:
        nonlocal terminated
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as admin:
            for _ in range(6):
                await asyncio.sleep(0.3)
                cursor = await admin.execute(
                    "select count(*) filter (where pg_terminate_backend(pid)) from"
                    " pg_stat_activity where datname = current_database()"
                    " and pid <> pg_backend_pid()"
                )
                row = await cursor.fetchone()
                assert row is not None
                terminated += int(row[0])

    worker = await load.run(db_url, terminations)
    await load.check(worker)
    assert terminated >= 6


# -- d. the poison entry ------------------------------------------------------------------


class Element:
    """A network element that rejects the poison command until it is fixed or edited."""

    def __init__(self) -> None:
        self.fixed = False
        self.seen: dict[str, list[int]] = {}

    async def handle(self, entry: Entry) -> None:
        assert entry.key is not None
        if entry.payload.get("poison") and not self.fixed:
            raise HandlerError("E_POISON", f"element rejects command {entry.payload['seq']}")
        self.seen.setdefault(entry.key, []).append(entry.payload["seq"])


async def drain(journal: Journal, element: Element) -> Worker:
    worker = Worker(journal, LANE, {"*": element.handle}, concurrency=2)
    await asyncio.wait_for(worker.run(until_idle=True), timeout=30)
    return worker


async def entry_row(pool: Pool, entry_id: int) -> dict[str, Any]:
    [row] = await rows(
        pool,
        "select state::text as state, attempts, errors, payload from journal.entries where id = %s",
        (entry_id,),
    )
    return row


@pytest.mark.parametrize("action", ["retry", "edit", "discard"])
async def test_poison_entry_parks_and_blocks_only_its_key(
    journal: Journal, pool: Pool, action: str
) -> None:
    poison_key = "SA-POISON"
    batch = [NewEntry(LANE, "cmd", {"seq": 0, "poison": True}, key=poison_key)]
    batch += [NewEntry(LANE, "cmd", {"seq": seq}, key=poison_key) for seq in (1, 2)]
    batch += [
        NewEntry(LANE, "cmd", {"seq": seq}, key=f"SA-{k}") for seq in range(5) for k in range(4)
    ]
    ids = [r.id for r in await journal.enqueue(batch)]
    await journal.declare_lane(LANE, owner="journal")  # operators name declared lanes only
    poison, behind = ids[0], ids[1:3]
    element = Element()

    worker = await drain(journal, element)
    assert worker.stats.parked == 1
    row = await entry_row(pool, poison)
    assert row["state"] == "parked"
    assert row["attempts"] == 3
    assert [(e["attempt"], e["code"]) for e in row["errors"]] == [
        (1, "E_POISON"),
        (2, "E_POISON"),
        (3, "E_POISON"),
    ]
    assert all(e["message"] == "element rejects command 0" for e in row["errors"])
    assert [(await entry_row(pool, i))["state"] for i in behind] == ["waiting", "waiting"]
    for k in range(4):
        assert element.seen[f"SA-{k}"] == list(range(5))  # other keys kept flowing
    assert poison_key not in element.seen
    blocked = await service.blocked_keys(journal, LANE)
    assert [(b.key, b.head_id, b.state) for b in blocked] == [(poison_key, poison, "parked")]

    await drain(journal, element)  # another pass: the key stays blocked
    assert (await entry_row(pool, poison))["state"] == "parked"
    assert poison_key not in element.seen

    if action == "retry":
        element.fixed = True  # the element was repaired
        assert await service.retry(journal, poison, actor="op", reason="NE fixed") == "ready"
        expected = [0, 1, 2]
    elif action == "edit":
        await service.edit(
            journal, poison, {"seq": 0, "poison": False}, actor="op", reason="drop the bad option"
        )
        # Editing alone does not unblock: the entry stays parked until it is retried.
        await drain(journal, element)
        assert (await entry_row(pool, poison))["state"] == "parked"
        assert poison_key not in element.seen
        assert await service.retry(journal, poison, actor="op") == "ready"
        expected = [0, 1, 2]
    else:
        await service.discard(journal, poison, actor="op", reason="customer cancelled")
        expected = [1, 2]

    await drain(journal, element)
    assert element.seen[poison_key] == expected
    final = await entry_row(pool, poison)
    assert final["state"] == ("discarded" if action == "discard" else "done")
    assert len(final["errors"]) == 3  # the history is kept
    if action == "edit":
        assert final["payload"] == {"seq": 0, "poison": False}
    assert [(await entry_row(pool, i))["state"] for i in behind] == ["done", "done"]
    assert await rows(pool, "select * from journal.keys") == []
    assert await service.blocked_keys(journal, LANE) == []
    audit = [a.action for a in (await service.show(journal, poison)).audit]
    assert audit == {"retry": ["retry"], "edit": ["edit", "retry"], "discard": ["discard"]}[action]
