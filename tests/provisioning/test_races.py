"""P5's race: an order's direct delivery (through enqueue_or_claim) and running backup
daemons on the same contract at the same moment. A contract's later command must never
overtake an earlier one at the target, whichever path each of them takes."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter

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
from bossa.provisioning.adapters import Command, DeliveryError
from tests.provisioning import servers
from tests.provisioning.ordering import numbered_order

ROUNDS = 100
ORDERS_PER_ROUND = 6  # one buffered while the division is down, then five more at once
# The test marks the division down while its server is up: the daemons must not probe
# it back up in the middle of a round (a daemon holding a down division probes it on its
# backoff; only the first sight of another process's mark is probed at once).
SETTINGS = ProvisioningSettings(down_hold_s=30, probe_backoff_base_s=600, probe_backoff_max_s=600)
RACE_JOURNAL = JournalSettings(
    backoff_base_ms=10,
    backoff_max_ms=50,
    max_attempts=100,
    lease_ms=5_000,
    poll_interval_s=0.5,
    reap_interval_s=0.1,
)


async def drained(pool: Pool, *, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        async with pool.connection() as conn:
            row = await (
                await conn.execute(
                    "select count(*) as n from journal.entries where state <> 'done'"
                )
            ).fetchone()
        if row and row["n"] == 0:
            return
        assert time.monotonic() < deadline, "the buffer did not drain"
        await asyncio.sleep(0.01)


class LaggingDeliverer(Deliverer):
    """The daemon's side of the wire with some latency before and after the call: the
    window in which a command is in flight, or applied but not yet acked, grows."""

    async def deliver(self, command: Command) -> None:
        await asyncio.sleep(random.uniform(0, 0.015))
        await super().deliver(command)
        await asyncio.sleep(random.uniform(0, 0.015))

    async def deliver_many(
        self, division: str, commands: list[Command]
    ) -> dict[int, DeliveryError | None]:
        # The backup daemon's batch path: the same lag around the whole batch.
        await asyncio.sleep(random.uniform(0, 0.015))
        results = await super().deliver_many(division, commands)
        await asyncio.sleep(random.uniform(0, 0.015))
        return results


@pytest.mark.fault
async def test_direct_delivery_never_overtakes_the_backup_daemon(
    db_url: str, redis_server: servers.ServerProcess
) -> None:
    """100 rounds, each on a contract of its own: its first command is buffered (the
    division is marked down), then the division is up again and five more orders for the
    contract follow at once while two backup daemons drain the first. Each later command
    goes direct only if nothing of the contract is left in the buffer, else behind it;
    the Redis list of each contract must equal the issue order."""
    if not redis_server.running:
        redis_server.start()
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    tag = uuid.uuid4().hex[:8]
    rng = random.Random(random.randrange(2**32))  # the test's seed replays it (conftest)
    started = time.monotonic()
    async with open_pool(db_url, min_size=2, max_size=20) as pool:
        journal = Journal(pool, RACE_JOURNAL, actor="test")
        await add_division(
            pool, "FLAP", {"server_type": "memstore", "server_url": redis_server.url}, actor="test"
        )
        for intf_code in ("4201", "4202"):
            await add_plan_command(
                pool, "ADSL", intf_code, "FLAP", [["RPUSH", "race:{sa_id}", "{seq}"]], actor="test"
            )
        deliverer = Deliverer(pool, SETTINGS)
        daemon_deliverers = [LaggingDeliverer(pool, SETTINGS) for _ in range(2)]
        daemons = [BackupDaemon(journal, d, "FLAP", listen_url=db_url) for d in daemon_deliverers]
        tasks = [asyncio.create_task(d.run()) for d in daemons]
        routes: list[list[str]] = []

        async def order(sa_id: str, seq: int) -> str:
            result = await numbered_order(
                journal, deliverer, sa_id, seq, channel="race-test", settings=SETTINGS
            )
            assert result["status"] == "completed"
            return str(result["divisions"]["FLAP"])

        try:
            for r in range(ROUNDS):
                sa_id = f"R{tag}-{r:03d}"
                # The daemons' success with the last round would clear the down mark set
                # below (as it should): let them finish it first.
                await drained(pool, limit_s=30)
                async with pool.connection() as conn:
                    await conn.execute(
                        "update provisioning.divisions set down_until = now() + interval '1 hour'"
                        " where division = 'FLAP'"
                    )
                first = await order(sa_id, 0)
                async with pool.connection() as conn:
                    await conn.execute(
                        "update provisioning.divisions set down_until = null"
                        " where division = 'FLAP'"
                    )
                # Give the daemon a varying head start, so the later orders meet it at
                # every stage of its delivery of the first command.
                await asyncio.sleep(rng.uniform(0, 0.02))
                later = [await order(sa_id, seq) for seq in range(1, ORDERS_PER_ROUND)]
                routes.append([first, *later])
            await drained(pool, limit_s=30)
        finally:
            for daemon in daemons:
                daemon.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            for d in (deliverer, *daemon_deliverers):
                await d.close()
        async with pool.connection() as conn:
            entries = await (await conn.execute("select id from journal.entries")).fetchall()
            logged = await (await conn.execute("select entry_id from provisioning.log")).fetchall()
    elapsed = time.monotonic() - started

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        applied = {r: client.lrange(f"race:R{tag}-{r:03d}", 0, -1) for r in range(ROUNDS)}
    finally:
        client.close()
    issued = [str(s) for s in range(ORDERS_PER_ROUND)]
    overtaken = {r: got for r, got in applied.items() if got != issued}
    paths = Counter(route for round_routes in routes for route in round_routes[1:])
    mixed = sum(1 for rr in routes if "direct" in rr[1:] and "buffered" in rr[1:])
    print(f"{ROUNDS} rounds in {elapsed:.1f}s; later orders {dict(paths)}; mixed rounds {mixed}")
    assert overtaken == {}, f"commands overtook one another: {dict(list(overtaken.items())[:10])}"
    # The race needs the round's first command in the buffer. A daemon that reads a down
    # mark another process set probes the division at once (issue 13), and here the
    # server is up, so now and then it clears the test's mark before the round's first
    # order reads it, and that order goes direct: right for the product, a round that
    # races nothing for the test. Most rounds must still be real races.
    buffered_first = sum(1 for rr in routes if rr[0] == "buffered")
    print(f"rounds whose first command was buffered: {buffered_first} of {ROUNDS}")
    assert buffered_first >= ROUNDS * 3 // 4, buffered_first
    assert paths["direct"] > 0, paths  # the direct path was raced, not just the buffer
    assert paths["buffered"] > 0, paths
    assert sorted(e["entry_id"] for e in logged) == sorted(e["id"] for e in entries)
    assert len(entries) == ROUNDS * ORDERS_PER_ROUND
