"""One owner per transaction (issue 10, point 5): a caller that holds a pooled connection
inside a transaction must never need a second one.

`Journal.policy` used to check out a connection of its own to read a lane's settings.
With a cold policy cache and every pooled connection held by a caller inside a
transaction (an order being accepted, a direct delivery failing), each caller then
waited for a second connection that no one would give back, until PoolTimeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bossa.db import Conn, Pool
from bossa.journal import Failure, Journal, JournalSettings, NewEntry

HELD = 3


@pytest.fixture
async def small_pool(db_url: str) -> AsyncIterator[Pool]:
    """HELD connections, and a checkout that waits half a second at most: a caller that
    needs a second connection fails fast instead of hanging the test."""
    pool: Pool = AsyncConnectionPool(
        db_url,
        min_size=HELD,
        max_size=HELD,
        timeout=0.5,
        open=False,
        kwargs={"row_factory": dict_row, "autocommit": True},
    )
    await pool.open(wait=True, timeout=30)
    try:
        yield pool
    finally:
        await pool.close()


def cold(pool: Pool) -> Journal:
    """A journal with nothing cached: its first look at any lane reads the database."""
    return Journal(pool, JournalSettings(max_attempts=5), actor="test")


async def test_a_cold_policy_read_inside_every_held_transaction_needs_no_second_connection(
    small_pool: Pool,
) -> None:
    # Stored overrides, so that reading them is real work and not a default.
    setup = cold(small_pool)
    for n in range(HELD):
        for step in ("enqueue", "claim"):
            lane = f"lane-{n}-{step}"
            await setup.declare_lane(lane, owner="journal")
            await setup.set_policy(lane, {"max_attempts": 2}, actor="test")

    all_held = asyncio.Barrier(HELD)

    async def business(n: int) -> str:
        async with small_pool.connection() as conn, conn.transaction():
            await all_held.wait()  # every pooled connection is now checked out
            assert small_pool.get_stats()["pool_available"] == 0
            await cold(small_pool).enqueue(
                [NewEntry(f"lane-{n}-enqueue", "k", {"n": n}, key=f"SA-{n}")], conn=conn
            )
            claim = await cold(small_pool).enqueue_or_claim(
                NewEntry(f"lane-{n}-claim", "k", {"n": n}, key=f"SA-{n}"), conn=conn
            )
            assert claim.go_ahead
            assert claim.token is not None
            failed = await cold(small_pool).fail(
                claim.token,
                f"lane-{n}-claim",
                [Failure(claim.entry_id, "DOWN", "the element did not answer")],
                conn=conn,
            )
            assert [r.attempts for r in failed] == [1]
            await conn_proves_it_is_still_ours(conn)
        return f"{n} done"

    outcomes = await asyncio.wait_for(
        asyncio.gather(*(business(n) for n in range(HELD))), timeout=10
    )
    assert outcomes == [f"{n} done" for n in range(HELD)]
    stats = small_pool.get_stats()
    assert stats.get("requests_waiting", 0) == 0
    assert stats.get("requests_queued", 0) == 0  # no checkout ever had to wait
    assert stats.get("requests_errors", 0) == 0  # and none timed out


async def conn_proves_it_is_still_ours(conn: Conn) -> None:
    row = await (await conn.execute("select count(*) as n from journal.entries")).fetchone()
    assert row is not None
    assert row["n"] >= 2


async def test_without_the_callers_connection_the_same_read_would_wait(
    small_pool: Pool,
) -> None:
    """The test above is not vacuous: with every connection held, a policy read that
    checks out its own connection times out."""
    all_held = asyncio.Barrier(HELD + 1)
    release = asyncio.Event()

    async def hold() -> None:
        async with small_pool.connection() as conn, conn.transaction():
            await all_held.wait()
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(HELD)]
    await all_held.wait()
    try:
        with pytest.raises(PoolTimeout):
            await cold(small_pool).policy("any-lane")
    finally:
        release.set()
        await asyncio.gather(*holders)
