"""Unreachable is not refused (issue 13, P4, P6), with real faults.

- A PostgreSQL division stopped for far longer than its attempts and backoff would
  last: nothing parks, the backup daemon makes only probes while it is down (counted at
  a relay in front of the server), and after the server returns everything is delivered
  once, in per-contract order.
- A server that refuses one command (a unique violation at the target) parks that
  command after its attempts, holds only its contract, and the others flow; the parking
  is logged with the entry, the contract, the division and the code.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from urllib.parse import urlsplit

import psycopg
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

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
from tests.provisioning.proxy import counting_relay

#: Three attempts with a backoff of at most 50 ms: under the old rule a division down
#: for more than a fraction of a second parked every contract's first command.
JOURNAL = JournalSettings(
    max_attempts=3,
    backoff_base_ms=10,
    backoff_max_ms=50,
    lease_ms=5_000,
    poll_interval_s=0.1,
    reap_interval_s=0.1,
)
#: Probes every 0.1 s at first, then at most every 0.4 s (+-25%).
SETTINGS = ProvisioningSettings(
    down_hold_s=0.5, probe_backoff_base_s=0.1, probe_backoff_max_s=0.4, backup_concurrency=2
)
SQL = "insert into applied (sa_id, seq) values (:sa_id, :seq)"
CONTRACTS = 40
ORDERS = 3  # per contract: a new (seq 0) and two changes
OUTAGE_S = 10.0


async def _setup(pool: Pool, db_url: str, target_dsn: str, url: str) -> None:
    with psycopg.connect(target_dsn, autocommit=True) as conn:
        conn.execute("drop table if exists applied, bossa_applied_commands")
        conn.execute(
            "create table applied (id bigint generated always as identity primary key,"
            " sa_id text not null, seq integer not null, unique (sa_id, seq))"
        )
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    await add_division(
        pool, "PGDOWN", {"server_type": "sql", "server_url": url, "timeout_ms": 1000}, actor="t"
    )
    for intf_code in ("4201", "4202"):
        await add_plan_command(pool, "ADSL", intf_code, "PGDOWN", SQL, actor="test")


def _applied(target_dsn: str) -> dict[str, list[int]]:
    with psycopg.connect(target_dsn) as conn:
        rows = conn.execute("select sa_id, seq from applied order by id").fetchall()
    per_contract: dict[str, list[int]] = defaultdict(list)
    for sa_id, seq in rows:
        per_contract[sa_id].append(seq)
    return dict(per_contract)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _states(pool: Pool) -> dict[str, int]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "select state::text as state, count(*) as n from journal.entries group by 1"
            )
        ).fetchall()
    return {row["state"]: int(row["n"]) for row in rows}


async def _wait(pool: Pool, done: dict[str, int], limit_s: float) -> dict[str, int]:
    deadline = time.monotonic() + limit_s
    while True:
        states = await _states(pool)
        if states == done or time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.1)


@pytest.mark.fault
async def test_a_long_outage_parks_nothing_and_the_daemon_only_probes(
    db_url: str, pg_target: servers.PostgresTarget
) -> None:
    pg_target.start()
    target_port = urlsplit(pg_target.dsn).port
    assert target_port is not None
    async with (
        counting_relay(target_port) as relay,
        open_pool(db_url, min_size=2, max_size=20) as pool,
    ):
        relayed = pg_target.url.replace(f":{target_port}/", f":{relay.port}/")
        await _setup(pool, db_url, pg_target.dsn, relayed)
        journal = Journal(pool, JOURNAL, actor="test")
        tag = uuid.uuid4().hex[:6]
        contracts = [f"O{tag}-{i:02d}" for i in range(CONTRACTS)]

        pg_target.stop()
        orders = Deliverer(pool, SETTINGS)
        for seq in range(ORDERS):
            for sa_id in contracts:
                result = await numbered_order(
                    journal, orders, sa_id, seq, channel="outage", settings=SETTINGS
                )
                assert result["status"] == "completed"
                assert result["divisions"] == {"PGDOWN": "buffered"}
        await orders.close()
        entries = CONTRACTS * ORDERS

        deliverer = Deliverer(pool, SETTINGS)
        daemon = BackupDaemon(journal, deliverer, "PGDOWN", listen_url=db_url)
        probes_down = _metric("bossa_provisioning_probes_total", division="PGDOWN", outcome="down")
        went_up = _metric(
            "bossa_provisioning_division_transitions_total", division="PGDOWN", to="up"
        )
        started = time.monotonic()
        task = asyncio.create_task(daemon.run())
        try:
            await asyncio.sleep(OUTAGE_S)
            assert not task.done(), task
            down_until = time.monotonic()
            calls = relay.count(since=started, until=down_until)
            probes = daemon.probes
            states = await _states(pool)
            assert "parked" not in states, states
            assert daemon.down
            # Many times the attempts an entry has, and yet nothing parked.
            assert probes >= 5 * JOURNAL.max_attempts, probes
            # Only probes: at most the first batch of each taker before the division was
            # known down, then one connection per probe (libpq may try twice: with and
            # without TLS), against the 360 calls a call per entry and attempt would be.
            assert calls <= 2 * (probes + SETTINGS.backup_concurrency), (calls, probes)
            assert calls < entries, (calls, entries)

            pg_target.start()
            back = time.monotonic()
            states = await _wait(pool, {"done": entries}, limit_s=60)
            assert states == {"done": entries}, states
            drained_s = time.monotonic() - back
        finally:
            daemon.stop()
            await asyncio.gather(task, return_exceptions=True)
            await deliverer.close()
            pg_target.start()

        # The same, as Prometheus has it: every probe but the last found it down, and the
        # division came up once.
        assert (
            _metric("bossa_provisioning_probes_total", division="PGDOWN", outcome="down")
            - probes_down
            >= probes - 1
        )
        assert (
            _metric("bossa_provisioning_division_transitions_total", division="PGDOWN", to="up")
            - went_up
            == 1
        )
        print(
            f"division down {OUTAGE_S:.0f} s with {entries} commands buffered and"
            f" max_attempts {JOURNAL.max_attempts}: {probes} probes, {calls} connections at"
            f" the division; drained {drained_s:.2f} s after it returned"
        )
        applied = _applied(pg_target.dsn)
        assert applied == {sa_id: list(range(ORDERS)) for sa_id in contracts}, applied
        async with pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "select e.attempts, e.errors, c.errcode from journal.entries e"
                    " join provisioning.commands c on c.entry_id = e.id"
                )
            ).fetchall()
            log_rows = await (
                await conn.execute("select count(*) as n from provisioning.log")
            ).fetchone()
        assert log_rows is not None
        assert log_rows["n"] == entries
        # Delivered on its first counted attempt; every failure on record gave its attempt
        # back; and the buffer no longer shows an error for what was delivered.
        assert {row["attempts"] for row in rows} == {1}
        assert all(not error.get("counted", True) for row in rows for error in row["errors"])
        assert {row["errcode"] for row in rows} == {None}
        # The division answered within a probe's backoff and the backlog went at once.
        assert drained_s < 30, drained_s


@pytest.mark.fault
async def test_a_refused_command_parks_after_its_attempts_and_holds_only_its_contract(
    db_url: str, pg_target: servers.PostgresTarget
) -> None:
    pg_target.start()
    async with open_pool(db_url, min_size=2, max_size=20) as pool:
        await _setup(pool, db_url, pg_target.dsn, pg_target.url)
        journal = Journal(pool, JOURNAL, actor="test")
        tag = uuid.uuid4().hex[:6]
        blocked, others = f"R{tag}-X", [f"R{tag}-{i}" for i in range(5)]
        # The target already has the blocked contract's second command: it refuses it
        # (23505, unique violation) every time.
        with psycopg.connect(pg_target.dsn, autocommit=True) as conn:
            conn.execute("insert into applied (sa_id, seq) values (%s, 1)", (blocked,))

        deliverer = Deliverer(pool, SETTINGS)
        daemon = BackupDaemon(journal, deliverer, "PGDOWN", listen_url=db_url)
        task = asyncio.create_task(daemon.run())
        parked_before = _metric("bossa_provisioning_parked_total", division="PGDOWN", code="23505")
        try:
            with capture_logs() as logs:
                for seq in range(ORDERS):
                    for sa_id in [blocked, *others]:
                        await numbered_order(
                            journal, deliverer, sa_id, seq, channel="refusal", settings=SETTINGS
                        )
                expected = {"done": 1 + ORDERS * len(others), "parked": 1, "waiting": 1}
                states = await _wait(pool, expected, limit_s=30)
            assert states == expected, states
        finally:
            daemon.stop()
            await asyncio.gather(task, return_exceptions=True)
            await deliverer.close()

        applied = _applied(pg_target.dsn)
        assert applied[blocked] == [1, 0]  # the row put there by hand, then seq 0
        assert all(applied[sa_id] == list(range(ORDERS)) for sa_id in others), applied
        async with pool.connection() as conn:
            parked = await (
                await conn.execute(
                    "select entry_id, attempts, errcode, sa_id from provisioning.commands"
                    " where state = 'parked'"
                )
            ).fetchall()
            division = await (
                await conn.execute(
                    "select down_until from provisioning.divisions where division = 'PGDOWN'"
                )
            ).fetchone()
        assert [(r["attempts"], r["errcode"], r["sa_id"]) for r in parked] == [
            (JOURNAL.max_attempts, "23505", blocked)
        ]
        assert division is not None
        assert division["down_until"] is None
        parked_lines = [line for line in logs if line["event"] == "command parked"]
        assert [
            (line["log_level"], line["entry_id"], line["sa_id"], line["division"], line["code"])
            for line in parked_lines
        ] == [("warning", parked[0]["entry_id"], blocked, "PGDOWN", "23505")]
        parked_now = _metric("bossa_provisioning_parked_total", division="PGDOWN", code="23505")
        assert parked_now - parked_before == 1
        failed = [line for line in logs if line["event"] == "delivery failed"]
        assert len(failed) == JOURNAL.max_attempts
        assert {(line["log_level"], line["cause"], line["code"]) for line in failed} == {
            ("warning", "refused", "23505")
        }
        assert all(line["sa_id"] == blocked for line in failed)
