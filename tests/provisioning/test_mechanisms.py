"""Provisioning's protective mechanisms, each tested so that removing it fails a test:
SERVER_USED off (the backup daemon holds: nothing is sent), the division marked up
again after a success (`mark_up`: orders go direct again), and several order daemons
on one receive table at once (each receipt once, each contract in order)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg.types.json import Jsonb

from bossa.customers import load_sample
from bossa.db import Pool
from bossa.journal import Journal, JournalSettings
from bossa.provisioning import (
    BackupDaemon,
    Deliverer,
    OrderDaemon,
    ProvisioningSettings,
    add_division,
    update_division,
)
from tests.provisioning import servers
from tests.provisioning.ordering import numbered_order
from tests.provisioning.test_faults import add_plan, check_target

SETTINGS = ProvisioningSettings(down_hold_s=3600, receipt_batch=5, receipt_poll_s=0.05)
JOURNAL = JournalSettings(
    backoff_base_ms=10,
    backoff_max_ms=50,
    lease_ms=5_000,
    poll_interval_s=0.1,
    reap_interval_s=0.1,
)
SQL = "insert into {table} (sa_id, seq) values (:sa_id, :seq)"


@pytest.fixture
async def journal(pool: Pool, db_url: str) -> Journal:
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    return Journal(pool, JOURNAL, actor="test")


def fresh_table(target: servers.PostgresTarget, table: str) -> None:
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute(f"drop table if exists {table}, bossa_applied_commands")
        conn.execute(
            f"create table {table} (id bigint generated always as identity primary key,"
            " sa_id varchar(64) not null, seq integer not null)"
        )


def applied(target: servers.PostgresTarget, table: str) -> list[tuple[str, int]]:
    with psycopg.connect(target.dsn) as conn:
        rows = conn.execute(f"select sa_id, seq from {table} order by id").fetchall()  # noqa: S608
    return [(str(a), int(b)) for a, b in rows]


async def states(pool: Pool) -> dict[str, int]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "select state::text as state, count(*) as n from journal.entries group by 1"
            )
        ).fetchall()
    return {r["state"]: int(r["n"]) for r in rows}


async def test_server_used_off_holds_the_backup_daemon(
    journal: Journal, pg_target: servers.PostgresTarget
) -> None:
    """SERVER_USED off: orders go to the buffer and a running backup daemon sends
    nothing for a second; on again, it delivers everything, in order."""
    pool = journal.pool
    pg_target.start()
    fresh_table(pg_target, "used_applied")
    values = {"server_type": "sql", "server_url": pg_target.url, "server_used": False}
    await add_division(pool, "USEDPG", values, actor="t")
    await add_plan(pool, "USEDPG", SQL.format(table="used_applied"))
    deliverer = Deliverer(pool, SETTINGS)
    daemon = BackupDaemon(journal, Deliverer(pool, SETTINGS), "USEDPG")
    running = asyncio.create_task(daemon.run())
    try:
        for seq in range(3):
            result = await numbered_order(
                journal, deliverer, "SU-1", seq, channel="t", settings=SETTINGS
            )
            assert result["divisions"] == {"USEDPG": "buffered"}
        await asyncio.sleep(1.0)
        assert applied(pg_target, "used_applied") == []  # nothing was called
        assert daemon.worker.stats.taken == 0
        assert await states(pool) == {"ready": 1, "waiting": 2}
        await update_division(pool, "USEDPG", {"server_used": True}, actor="t")
        for _ in range(200):
            if (await states(pool)) == {"done": 3}:
                break
            await asyncio.sleep(0.05)
    finally:
        daemon.stop()
        await asyncio.gather(running, return_exceptions=True)
        await daemon.deliverer.close()
        await deliverer.close()
    assert applied(pg_target, "used_applied") == [("SU-1", 0), ("SU-1", 1), ("SU-1", 2)]


async def test_a_success_marks_the_division_up_again(
    journal: Journal, pg_target: servers.PostgresTarget
) -> None:
    """A division known down (held for an hour) takes orders into its buffer; the
    backup daemon's first success clears the mark, and the next order goes direct."""
    pool = journal.pool
    pg_target.start()
    fresh_table(pg_target, "up_applied")
    await add_division(pool, "UPPG", {"server_type": "sql", "server_url": pg_target.url}, actor="t")
    await add_plan(pool, "UPPG", SQL.format(table="up_applied"))
    async with pool.connection() as conn:
        await conn.execute(
            "update provisioning.divisions set down_until = now() + interval '1 hour'"
            " where division = 'UPPG'"
        )
    deliverer = Deliverer(pool, SETTINGS)
    try:
        first = await numbered_order(journal, deliverer, "UP-1", 0, channel="t", settings=SETTINGS)
        assert first["divisions"] == {"UPPG": "buffered"}
        daemon = BackupDaemon(journal, Deliverer(pool, SETTINGS), "UPPG")
        await asyncio.wait_for(daemon.run(once=True), 30)
        await daemon.deliverer.close()
        async with pool.connection() as conn:
            row = await (
                await conn.execute(
                    "select down_until from provisioning.divisions where division = 'UPPG'"
                )
            ).fetchone()
        assert row == {"down_until": None}
        second = await numbered_order(journal, deliverer, "UP-1", 1, channel="t", settings=SETTINGS)
        assert second["divisions"] == {"UPPG": "direct"}
    finally:
        await deliverer.close()
    assert applied(pg_target, "up_applied") == [("UP-1", 0), ("UP-1", 1)]


async def test_several_order_daemons_share_one_receive_table(
    journal: Journal, db_url: str, pg_target: servers.PostgresTarget
) -> None:
    """Three order daemons at once on 8 contracts x 5 receipts: every receipt becomes one
    order, applied once, and each contract's commands reach the target in receipt order."""
    pool = journal.pool
    pg_target.start()
    fresh_table(pg_target, "shared_applied")
    await add_division(pool, "SHPG", {"server_type": "sql", "server_url": pg_target.url}, actor="t")
    await add_plan(pool, "SHPG", SQL.format(table="shared_applied"))
    contracts = [f"SH-{i}" for i in range(8)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for seq in range(5):
            for sa_id in contracts:
                conn.execute(
                    "insert into provisioning.receipts_adsl"
                    " (product_code, sa_id, intf_code, bind_data) values ('ADSL', %s, %s, %s)",
                    (sa_id, "4201" if seq == 0 else "4202", Jsonb({"seq": seq})),
                )
    deliverers = [Deliverer(pool, SETTINGS) for _ in range(3)]
    daemons = [OrderDaemon(journal, d, "ADSL", SETTINGS) for d in deliverers]
    try:
        await asyncio.wait_for(asyncio.gather(*(d.run_once() for d in daemons)), 60)
        # A daemon that found every remaining receipt held by another ends its pass
        # early: passes again until none is left.
        for _ in range(20):
            if sum(await asyncio.gather(*(d.run_once() for d in daemons))) == 0:
                break
        # A command that met its contract's earlier one still in flight (or a slow call,
        # on a loaded machine) waits in the buffer, as it should: the backup daemon
        # delivers it, in order, as in production.
        backup = BackupDaemon(journal, deliverers[0], "SHPG")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while await _unfinished(pool) and loop.time() < deadline:
            await asyncio.wait_for(backup.run(once=True), 30)
            await asyncio.sleep(0.05)
    finally:
        for deliverer in deliverers:
            await deliverer.close()
    total = len(contracts) * 5
    assert sum(d.processed for d in daemons) == total
    assert sum(1 for d in daemons if d.processed) >= 2, [d.processed for d in daemons]
    rows = applied(pg_target, "shared_applied")
    expected = {sa_id: list(range(5)) for sa_id in contracts}
    assert check_target("SHPG", rows, expected) == []
    assert len(rows) == total
    async with pool.connection() as conn:
        orders = await (
            await conn.execute(
                "select status, count(*) as n from provisioning.orders group by status"
            )
        ).fetchall()
    assert orders == [{"status": "completed", "n": total}]


async def _unfinished(pool: Pool) -> int:
    async with pool.connection() as conn:
        row = await (
            await conn.execute("select count(*) as n from journal.entries where state <> 'done'")
        ).fetchone()
    return int(row["n"]) if row else 0
