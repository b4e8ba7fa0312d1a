"""Provisioning struck in the windows where a crash is dangerous, each test proving its
fault hit the window and counting what it tore:

- a backup daemon killed between the target's commit and the journal's ack (the
  target's once-only markers show the commands applied, the journal shows them still
  taken): the redeliveries are deduplicated at the target, counted, each applied once;
- an order daemon killed after its orders were accepted and committed, with a direct
  call in flight: the orders left `accepted` are completed by the backup daemon's sweep
  once the claims' leases ran out and the buffer delivered them;
- a direct call slower than the lease, with a backup daemon watching: the claim's
  heartbeat keeps it, the command is applied and logged once, as direct;
- a direct delivery whose lease passed to the backup daemon during the call: its ack is
  refused and it is not logged as direct.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from bossa.customers import load_sample
from bossa.db import Pool
from bossa.journal import Journal, JournalSettings
from bossa.provisioning import (
    BackupDaemon,
    Deliverer,
    OrderRequest,
    ProvisioningSettings,
    add_division,
)
from bossa.provisioning.service import accept, deliver_direct
from tests.faults import Hook, terminate
from tests.provisioning import servers
from tests.provisioning.test_faults import add_plan, check_target, journal_facts

pytestmark = pytest.mark.fault

REPO = Path(__file__).resolve().parents[2]
#: A lease short enough for the tests to outlive it; the daemons reap every 0.1 s.
LEASE_MS = 2500
CRASH_JOURNAL = JournalSettings(
    backoff_base_ms=10,
    backoff_max_ms=50,
    max_attempts=100,
    lease_ms=LEASE_MS,
    poll_interval_s=0.2,
    reap_interval_s=0.1,
)
SETTINGS = ProvisioningSettings(down_hold_s=0.5, stranded_after_s=0.5)


def report(request: pytest.FixtureRequest, **counts: int) -> None:
    print(f"{request.node.name}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    for name, value in counts.items():
        request.node.user_properties.append((name, value))


def env_for(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOSSA_")}
    env.update(
        BOSSA_DATABASE_URL=db_url,
        BOSSA_JOURNAL_LEASE_MS=str(LEASE_MS),
        BOSSA_JOURNAL_BACKOFF_BASE_MS="10",
        BOSSA_JOURNAL_BACKOFF_MAX_MS="50",
        BOSSA_JOURNAL_REAP_INTERVAL_S="0.1",
        BOSSA_JOURNAL_POLL_INTERVAL_S="0.2",
        BOSSA_JOURNAL_MAX_ATTEMPTS="100",
        BOSSA_PROVISIONING_RECEIPT_POLL_S="0.1",
    )
    return env


def bossa(db_url: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bossa.cli", "provisioning", *args],
        env=env_for(db_url),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def reap(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.kill()
    output, _ = proc.communicate(timeout=30)
    return output.decode()[-3000:]


async def target_table(target: servers.PostgresTarget, table: str) -> None:
    """A fresh applied table (and no markers: entry ids restart in every test database)."""
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute(f"drop table if exists {table}, bossa_applied_commands")
        conn.execute(
            f"create table {table} (id bigint generated always as identity primary key,"
            " sa_id varchar(64) not null, seq integer not null)"
        )


def target_rows(target: servers.PostgresTarget, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(target.dsn) as conn:
        return conn.execute(query).fetchall()


async def division(pool: Pool, name: str, target: servers.PostgresTarget, command: str) -> None:
    await add_division(pool, name, {"server_type": "sql", "server_url": target.url}, actor="t")
    await add_plan(pool, name, command)


async def run_daemon_until(journal: Journal, name: str, done: str, *, limit_s: float = 60) -> None:
    """Run a backup daemon of `name` in this process until the query `done` counts 0."""
    deliverer = Deliverer(journal.pool, SETTINGS)
    daemon = BackupDaemon(journal, deliverer, name)
    task = asyncio.create_task(daemon.run())
    try:
        deadline = time.monotonic() + limit_s
        while True:
            async with journal.pool.connection() as conn:
                row = await (await conn.execute(done)).fetchone()
            assert row is not None
            if int(next(iter(row.values()))) == 0:
                break
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, f"not finished in {limit_s}s"
            await asyncio.sleep(0.1)
    finally:
        daemon.stop()
        await asyncio.gather(task, return_exceptions=True)
        await deliverer.close()


@pytest.fixture
async def crash_journal(pool: Pool, db_url: str) -> Journal:
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    return Journal(pool, CRASH_JOURNAL, actor="test")


# -- a backup daemon killed between the target's commit and the journal's ack ----------


FAST_SQL = "insert into acked_applied (sa_id, seq) values (:sa_id, :seq)"


async def test_backup_daemon_killed_between_target_commit_and_ack(
    db_url: str,
    crash_journal: Journal,
    pg_target: servers.PostgresTarget,
    request: pytest.FixtureRequest,
) -> None:
    """A buffer of 12 contracts x 3 commands; the daemon's first ack is held in a hook
    on journal.entries after its batch committed at the target, and the daemon is killed
    there. The commands with a marker at the target and still taken in the journal were
    in the window; a second daemon redelivers them, the target's markers skip them, and
    each is applied once, logged once, in order per contract."""
    journal = crash_journal
    pool = journal.pool
    pg_target.start()
    await target_table(pg_target, "acked_applied")
    await division(pool, "ACKPG", pg_target, FAST_SQL)
    async with pool.connection() as conn:  # known down: every order goes to the buffer
        await conn.execute(
            "update provisioning.divisions set down_until = now() + interval '1 hour'"
            " where division = 'ACKPG'"
        )
    contracts = [f"W{i:02d}" for i in range(12)]
    deliverer = Deliverer(pool, SETTINGS)
    try:
        for seq in range(3):
            for sa_id in contracts:
                request_ = OrderRequest(
                    product="ADSL",
                    sa_id=sa_id,
                    intf_code="4201" if seq == 0 else "4202",
                    bind_data={"seq": seq},
                )
                async with pool.connection() as conn, conn.transaction():
                    accepted = await accept(
                        conn,
                        journal,
                        request_,
                        channel="t",
                        idempotency_key=None,
                        settings=SETTINGS,
                    )
                assert accepted.routes == {"ACKPG": "buffered"}
                await deliver_direct(journal, deliverer, accepted)
    finally:
        await deliverer.close()
    total = len(contracts) * 3

    hook = Hook(
        db_url, "journal", "entries", nth=1, when="old.state = 'taken' and new.state = 'done'"
    ).install()
    hook.arm()
    proc = bossa(db_url, "backup-daemon", "--division", "ACKPG", "--concurrency", "1")
    try:
        stuck = hook.wait_stuck(containing="journal.ack", at_least=1)
        with psycopg.connect(db_url) as plain:
            taken = {
                int(r[0])
                for r in plain.execute(
                    "select id from journal.entries where state = 'taken'"
                ).fetchall()
            }
        marked = {
            int(str(r[0]))
            for r in target_rows(pg_target, "select entry_id from bossa_applied_commands")
        }
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # Its ack, held in the hook, must not commit after its process died.
        terminate(db_url, [s.pid for s in stuck])
    finally:
        hook.disarm()
        reap(proc)
    in_window = taken & marked  # applied at the target, not acked in the journal
    assert in_window, (taken, marked)
    applied_before = len(target_rows(pg_target, "select 1 from acked_applied"))
    assert applied_before == len(marked)

    last = bossa(db_url, "backup-daemon", "--division", "ACKPG", "--once")
    output, _ = last.communicate(timeout=90)
    assert last.returncode == 0, output.decode()[-3000:]

    rows = target_rows(pg_target, "select sa_id, seq from acked_applied order by id")
    expected = {sa_id: list(range(3)) for sa_id in contracts}
    assert check_target("ACKPG", [(str(a), int(str(b))) for a, b in rows], expected) == []
    assert len(rows) == total  # the redeliveries were skipped at the target
    entry_states, entry_ids, logged = await journal_facts(pool)
    assert entry_states == {"done": total}
    assert sorted(logged) == sorted(entry_ids)
    async with pool.connection() as conn:
        redelivered = await (
            await conn.execute(
                "select e.id, e.attempts, e.errors -> -1 ->> 'code' as code, l.mode"
                " from journal.entries e join provisioning.log l on l.entry_id = e.id"
                " where e.id = any(%s)",
                (sorted(in_window),),
            )
        ).fetchall()
    assert len(redelivered) == len(in_window)
    # Delivered again (the killed daemon's own reaper may have handed them out to it once
    # more while its ack was held past the lease), skipped at the target each time after
    # the first, then acked and logged once.
    for row in redelivered:
        assert row["attempts"] >= 2
        assert (row["code"], row["mode"]) == ("lease_expired", "backup")
    report(
        request,
        redeliveries_deduplicated=sum(r["attempts"] - 1 for r in redelivered),
        entries_in_window=len(in_window),
        applied_before_kill=applied_before,
    )


# -- an order daemon killed after accepting, with a direct call in flight ---------------


SLOW_SQL = (
    "insert into stranded_applied (sa_id, seq)"
    " select cast(:sa_id as varchar(64)), cast(:seq as integer) from pg_sleep(0.3)"
)


async def test_orders_left_accepted_by_a_killed_order_daemon_are_recovered(
    db_url: str,
    crash_journal: Journal,
    pg_target: servers.PostgresTarget,
    request: pytest.FixtureRequest,
) -> None:
    """Ten receipts; the order daemon accepts them (one committed transaction) and is
    killed while its first direct call is in flight at the target. The ten orders stay
    `accepted`, their commands claimed; the claims' leases run out, the backup daemon
    delivers the commands, and its sweep completes every order as buffered."""
    journal = crash_journal
    pool = journal.pool
    pg_target.start()
    await target_table(pg_target, "stranded_applied")
    await division(pool, "STRPG", pg_target, SLOW_SQL)
    contracts = [f"R{i:02d}" for i in range(10)]
    with psycopg.connect(db_url) as plain:
        plain.execute(
            "insert into provisioning.receipts_adsl (product_code, sa_id, intf_code, bind_data)"
            " select 'ADSL', sa_id, '4201', '{\"seq\": 0}' from unnest(%s::text[]) sa_id",
            (contracts,),
        )
    proc = bossa(db_url, "order-daemon", "--product", "ADSL")
    try:
        deadline = time.monotonic() + 60
        while not target_rows(
            pg_target,
            "select 1 from pg_stat_activity where state = 'active'"
            " and query like '%stranded_applied%' and pid <> pg_backend_pid()",
        ):
            assert proc.poll() is None, reap(proc)
            assert time.monotonic() < deadline, "no direct call got under way"
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        reap(proc)
    async with pool.connection() as conn:
        stranded = [
            r["wo_no"]
            for r in await (
                await conn.execute(
                    "select wo_no from provisioning.orders where status = 'accepted'"
                )
            ).fetchall()
        ]
        claimed = await (
            await conn.execute("select count(*) as n from journal.entries where state = 'taken'")
        ).fetchone()
    assert len(stranded) == len(contracts)  # accepted, committed, never completed
    assert claimed is not None
    assert claimed["n"] >= 1  # the direct claims outlive the process until their lease ends

    await run_daemon_until(
        journal,
        "STRPG",
        "select count(*) from provisioning.orders where status = 'accepted'",
    )
    async with pool.connection() as conn:
        orders = await (
            await conn.execute(
                "select wo_no, status, result from provisioning.orders where wo_no = any(%s)",
                (stranded,),
            )
        ).fetchall()
    assert {(o["status"], tuple(o["result"].items())) for o in orders} == {
        ("completed", (("STRPG", "buffered"),))
    }
    rows = target_rows(pg_target, "select sa_id, seq from stranded_applied order by id")
    assert sorted((str(a), int(str(b))) for a, b in rows) == [(c, 0) for c in contracts]
    entry_states, entry_ids, logged = await journal_facts(pool)
    assert entry_states == {"done": len(contracts)}
    assert sorted(logged) == sorted(entry_ids)
    report(request, orders_recovered=len(orders))


# -- the direct claim's heartbeat, and an ack refused -----------------------------------


LONG_SQL = (
    "insert into long_applied (sa_id, seq)"
    " select cast(:sa_id as varchar(64)), cast(:seq as integer) from pg_sleep(3.5)"
)


async def test_direct_claim_heartbeats_through_a_call_longer_than_its_lease(
    db_url: str, crash_journal: Journal, pg_target: servers.PostgresTarget
) -> None:
    """A direct call lasting 3.5 s against a 2.5 s lease, with the division's backup
    daemon reaping every 0.1 s: the claim is heartbeaten, so the command is not handed
    out again; it is applied once, acked on its first attempt and logged as direct."""
    journal = crash_journal
    pool = journal.pool
    pg_target.start()
    await target_table(pg_target, "long_applied")
    await division(pool, "LONGPG", pg_target, LONG_SQL)
    deliverer = Deliverer(pool, SETTINGS)
    daemon = BackupDaemon(journal, Deliverer(pool, SETTINGS), "LONGPG")
    watching = asyncio.create_task(daemon.run())
    try:
        request_ = OrderRequest(
            product="ADSL", sa_id="HB-1", intf_code="4201", bind_data={"seq": 0}
        )
        async with pool.connection() as conn, conn.transaction():
            accepted = await accept(
                conn, journal, request_, channel="t", idempotency_key=None, settings=SETTINGS
            )
        assert accepted.routes == {"LONGPG": "direct"}
        started = time.monotonic()
        order = await deliver_direct(journal, deliverer, accepted)
        assert time.monotonic() - started > LEASE_MS / 1000  # the call outlived the lease
    finally:
        daemon.stop()
        await asyncio.gather(watching, return_exceptions=True)
        await daemon.deliverer.close()
        await deliverer.close()
    assert order.divisions == {"LONGPG": "direct"}
    assert daemon.worker.stats.reaped == 0
    assert len(target_rows(pg_target, "select 1 from long_applied")) == 1
    async with pool.connection() as conn:
        entry = await (
            await conn.execute("select state::text as state, attempts, errors from journal.entries")
        ).fetchone()
        log = await (await conn.execute("select mode, attempts from provisioning.log")).fetchall()
    assert entry == {"state": "done", "attempts": 1, "errors": []}
    assert log == [{"mode": "direct", "attempts": 1}]


async def test_direct_delivery_whose_lease_passed_on_is_not_logged_direct(
    db_url: str, crash_journal: Journal, pg_target: servers.PostgresTarget
) -> None:
    """The claim's lease runs out before the direct call is made (a process paused past
    it) and the backup daemon delivers the command; the direct call then finds the
    target's marker (applied once), its ack is refused, and the order's route and the log
    say buffered / backup, not direct."""
    journal = crash_journal
    pool = journal.pool
    pg_target.start()
    await target_table(pg_target, "refused_applied")
    await division(
        pool, "REFPG", pg_target, "insert into refused_applied (sa_id, seq) values (:sa_id, :seq)"
    )
    deliverer = Deliverer(pool, SETTINGS)
    try:
        request_ = OrderRequest(
            product="ADSL", sa_id="RF-1", intf_code="4201", bind_data={"seq": 0}
        )
        async with pool.connection() as conn, conn.transaction():
            accepted = await accept(
                conn, journal, request_, channel="t", idempotency_key=None, settings=SETTINGS
            )
        [(claim, _, _)] = accepted.claims.values()
        async with pool.connection() as conn:  # the lease ran out while the process slept
            await conn.execute(
                "update journal.entries set lease_expires_at = now() - interval '1 second'"
                " where id = %s",
                (claim.entry_id,),
            )
        daemon = BackupDaemon(journal, Deliverer(pool, SETTINGS), "REFPG")
        await asyncio.wait_for(daemon.run(once=True), 30)
        await daemon.deliverer.close()
        order = await deliver_direct(journal, deliverer, accepted)
    finally:
        await deliverer.close()
    assert order.divisions == {"REFPG": "buffered"}
    assert len(target_rows(pg_target, "select 1 from refused_applied")) == 1
    async with pool.connection() as conn:
        log = await (await conn.execute("select mode, attempts from provisioning.log")).fetchall()
    assert log == [{"mode": "backup", "attempts": 2}]
