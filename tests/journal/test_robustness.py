"""A worker's batch is no hostage (issue 13, point 6): with the default settings a SIGKILLed
worker's keys resume within a lease plus one reap interval, and what it finished before
its last heartbeat is not delivered again; a worker started while its database is away
waits for it; SIGTERM stops `bossa journal work` cleanly at any moment, start-up included.

Real faults: a worker subprocess SIGKILLed while it holds entries, a PostgreSQL of the
test's own stopped and started, SIGTERM sent to a real `bossa journal work`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from bossa.db import Pool
from bossa.db.migrations import migrate
from bossa.journal import Journal, JournalSettings, NewEntry
from bossa.journal.models import Entry
from bossa.journal.worker import Worker
from tests.support import own_postgres

pytestmark = pytest.mark.fault

ROOT = Path(__file__).resolve().parents[2]
LANE = "robust"
#: Scheduling on a shared, loaded machine: how late a timer or a subprocess may run.
SLACK_S = 1.5


def clean_env(url: str, **extra: str) -> dict[str, str]:
    """The environment of a worker with the journal's defaults (no BOSSA_JOURNAL_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOSSA_")}
    env.update(BOSSA_DATABASE_URL=url, **extra)
    return env


def work_command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "bossa.cli", "journal", "work", "--lane", LANE, *extra]


async def deliveries(pool: Pool) -> list[tuple[int, int]]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("select entry_id, pid from public.deliveries order by n")
        ).fetchall()
    return [(int(r["entry_id"]), int(r["pid"])) for r in rows]


async def test_a_killed_workers_keys_resume_within_the_default_lease(
    db_url: str, pool: Pool
) -> None:
    defaults = JournalSettings()
    assert defaults.lease_ms <= 5_000, "a killed worker's keys come back within seconds"
    journal = Journal(pool, defaults, actor="test")
    await journal.declare_lane(LANE, owner="journal")
    async with pool.connection() as conn:
        await conn.execute(
            "create table public.deliveries (n bigint generated always as identity,"
            " entry_id bigint not null, pid integer not null,"
            " at timestamptz not null default clock_timestamp())"
        )
    # 3 keys of 20: the worker takes each key's run at once and works through it, 0.25 s
    # an entry, so it holds every key when killed about 3 s in.
    keys = [f"SA-{k}" for k in range(3)]
    entries = [NewEntry(LANE, "cmd", {"seq": s}, key=k) for s in range(20) for k in keys]
    ids = [r.id for r in await journal.enqueue(entries)]
    key_of = {entry_id: entries[n].key for n, entry_id in enumerate(ids)}

    first = await asyncio.create_subprocess_exec(
        *work_command("--handler", "tests.journal.worker_process:slow_handler"),
        cwd=ROOT,
        env=clean_env(db_url, BOSSA_TEST_HANDLER_S="0.25"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(await deliveries(pool)) < 36:
            assert first.returncode is None, "the worker exited before it was killed"
            assert time.monotonic() < deadline, "the worker delivered too little"
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
    finally:
        if first.returncode is None:
            first.kill()
        await first.wait()
    killed_at = time.monotonic()

    async with pool.connection() as conn:
        held = await (
            await conn.execute("select id, key from journal.entries where state = 'taken'")
        ).fetchall()
        acked = {
            int(r["id"])
            for r in await (
                await conn.execute("select id from journal.entries where state = 'done'")
            ).fetchall()
        }
    assert {r["key"] for r in held} == set(keys), "killed while holding every key"
    assert acked, "heartbeats acked what was done so far"
    before = [entry_id for entry_id, _ in await deliveries(pool)]

    resumed: dict[str, float] = {}
    handled: list[int] = []
    all_done = asyncio.Event()

    async def handler(entry: Entry) -> None:
        assert entry.key is not None
        resumed.setdefault(entry.key, time.monotonic() - killed_at)
        handled.append(entry.id)
        if len(handled) + len(acked) >= len(ids):
            all_done.set()

    second = Worker(journal, LANE, {"*": handler}, concurrency=1)
    task = asyncio.create_task(second.run())
    try:
        await asyncio.wait_for(all_done.wait(), timeout=60)
    finally:
        second.stop()
        await task

    bound = defaults.lease_ms / 1000 + defaults.reap_interval_s
    print(f"keys resumed after the kill (s): {resumed}; bound {bound} s (+{SLACK_S} s slack)")
    assert set(resumed) == set(keys)
    assert max(resumed.values()) <= bound + SLACK_S

    async with pool.connection() as conn:
        final = await (
            await conn.execute("select id, state::text as state from journal.entries")
        ).fetchall()
    assert {r["state"] for r in final} == {"done"}
    # Nothing acked twice: the second worker handled exactly what the first left unacked.
    assert sorted(handled) == sorted(set(ids) - acked)
    # Duplicates are what the first did since its last heartbeat, not its whole batch.
    redelivered = set(handled) & set(before)
    assert acked <= set(before)
    assert len(redelivered) < len(before)
    # Per key, each worker delivered in enqueue order.
    for key in keys:
        for delivered in (before, handled):
            mine = [i for i in delivered if key_of[i] == key]
            assert mine == sorted(mine), (key, mine)


def _read_until(proc: subprocess.Popen[str], text: str, timeout: float) -> list[str]:
    """stderr lines up to the first holding `text` (the worker logs one JSON line each)."""
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break  # exited
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no {text!r} from the worker: {''.join(lines)[-2000:]}")


def _catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for `signum` (SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signum - 1)))


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_worker_started_while_its_database_is_away_waits_for_it() -> None:
    with own_postgres() as server:
        url = server.url("bossa")
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("select journal.declare_lane(%s, 'journal')", (LANE,))
            conn.execute(
                "insert into journal.entries (lane, kind, payload, state, created_by)"
                " select %s, 'noop', '{}', 'ready', 'test' from generate_series(1, 5)",
                (LANE,),
            )
        server.stop()
        proc = subprocess.Popen(
            work_command("--once"),
            cwd=ROOT,
            env=clean_env(url, BOSSA_JOURNAL_DATABASE_OUTAGE_S="120"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # It loads, finds no database and waits (it used to exit 1 here), twice.
            _read_until(proc, "database not reachable at start-up", 90)
            _read_until(proc, "database not reachable at start-up", 30)
            assert proc.poll() is None
            server.start()
            out, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err[-2000:]
        assert "5 done" in out, out
        assert "database answers; worker starting" in err


@pytest.mark.parametrize("moment", ["loading", "waiting for the database", "working"])
def test_sigterm_at_any_moment_stops_the_worker_cleanly(moment: str) -> None:
    with own_postgres() as server:
        url = server.url("bossa")
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("select journal.declare_lane(%s, 'journal')", (LANE,))
            # The slow handler (`--handler` serves kinds nothing else registered, hence
            # kind 'slow': 'noop' has a built-in handler) records each delivery here
            # before it sleeps.
            conn.execute(
                "create table public.deliveries (n bigint generated always as identity,"
                " entry_id bigint not null, pid integer not null)"
            )
            conn.execute(
                "insert into journal.entries (lane, key, kind, payload, state, created_by)"
                " select %s, 'k' || n, 'slow', '{}', 'ready', 'test'"
                " from generate_series(1, 200) n",
                (LANE,),
            )
        if moment == "waiting for the database":
            server.stop()
        proc = subprocess.Popen(
            work_command("--handler", "tests.journal.worker_process:slow_handler", "--batch", "10"),
            cwd=ROOT,
            env=clean_env(url, BOSSA_TEST_HANDLER_S="0.2"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            if moment == "loading":
                # As soon as it catches SIGTERM, while it is still importing (seconds).
                # Before its first line runs the interpreter itself dies by the signal,
                # holding nothing: no program can catch a signal before it exists.
                _wait_for(lambda: _catches(proc.pid, signal.SIGTERM), 60, "no handler")
            elif moment == "waiting for the database":
                _read_until(proc, "database not reachable at start-up", 90)
            else:
                with psycopg.connect(url, autocommit=True) as conn:

                    def started() -> bool:
                        # The handler records each delivery as it begins it (committed at
                        # once): the worker is working.
                        row = conn.execute("select count(*) from public.deliveries").fetchone()
                        return bool(row and row[0])

                    _wait_for(started, 60, "the worker took nothing")
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, (moment, out, err[-2000:])
        assert "Traceback" not in err, err[-2000:]
        assert took < 10, f"stopping took {took:.1f} s"
        if moment == "waiting for the database":
            assert "stopped before it started; nothing taken" in out
            server.start()
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "select count(*) from journal.entries where state = 'taken'"
            ).fetchone()
        assert row == (0,), "a stopped worker gives back what it has not finished"
