"""The plans of the statements inside the journal's functions, as they run (auto_explain,
tests/foundation/plans.py): `journal.advance_keys`, run by every ack with a generic plan
(the function sets plan_cache_mode), must look its keys up by primary key and the key's
next entry through the unfinished-key index, even for a key with 20,000 entries behind
it; a custom plan for the hot key would walk the primary key. And the plans a worker
keeps for its connection's life, made on an empty table (its first take), must still walk
the indexes once the table is full."""

from __future__ import annotations

import uuid

from bossa.db import Conn, Pool
from bossa.journal import Journal, NewEntry
from bossa.journal.store import QUERIES
from tests.foundation.plans import nested_plans, nodes, plan_of, uses


async def test_ack_promotes_through_the_key_indexes(journal: Journal, pool: Pool) -> None:
    await journal.enqueue([NewEntry("l", "k", {"n": n}, key="hot") for n in range(20_000)])
    for start in range(0, 20_000, 5_000):
        await journal.enqueue(
            [NewEntry("l", "k", {"n": n}, key=f"c{n}") for n in range(start, start + 5_000)]
        )
    async with pool.connection() as conn:
        await conn.execute("analyze journal.entries")
        await conn.execute("analyze journal.keys")
    taken = await journal.take("l", 100)
    assert any(e.key == "hot" for e in taken.entries)

    async def ack(conn: Conn) -> None:
        assert await journal.ack(taken.token, taken.ids, conn=conn) == set(taken.ids)

    async with pool.connection() as conn:
        plans = await nested_plans(conn, ack)
    lock = plan_of(plans, "for update of k")
    assert uses(lock, "keys_pkey"), lock
    assert not any(
        n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "keys" for n in lock
    ), lock
    promote = plan_of(plans, "with promoted as")
    assert uses(promote, "entries_key_unfinished"), promote


async def test_take_and_ack_walk_the_indexes_whatever_the_statistics(
    journal: Journal, pool: Pool
) -> None:
    """A queue's statistics are stale by nature: a worker's first take often runs on an
    empty lane just analyzed, and its plans (generic, cached for the connection's life)
    were sequential scans, which cost milliseconds a take once thousands of entries had
    gone through, until the next ANALYZE. The functions plan with scans off."""
    async with pool.connection() as conn:
        await conn.execute("analyze journal.entries")
        # This connection's plans are made now, on an empty table.
        await conn.execute(
            "select * from journal.take_batch('l', 100, 100, gen_random_uuid(), 5000, 1, 1)"
        )
        await conn.execute("select journal.ack('{0}'::bigint[], gen_random_uuid())")
        await journal.enqueue([NewEntry("done", "k", {"n": n}) for n in range(5_000)])
        await journal.enqueue([NewEntry("l", "k", {"n": n}, key=f"c{n % 50}") for n in range(500)])
        async with pool.connection() as other:
            await other.execute(
                "update journal.entries set state = 'done', finished_at = now() where lane = 'done'"
            )

        async def take_and_ack(conn: Conn) -> None:
            token = uuid.uuid4()
            cursor = await conn.execute(
                "select id from journal.take_batch('l', 100, 100, %s, 5000, 1, 1)", (token,)
            )
            ids = [row["id"] for row in await cursor.fetchall()]
            assert len(ids) == 100
            await conn.execute("select journal.ack(%s, %s)", (ids, token))

        plans = await nested_plans(conn, take_and_ack)
    scans = [
        (p["Query Text"].split("\n")[0], n.get("Relation Name"))
        for p in plans
        for n in nodes(p["Plan"])
        if n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan")
        and n.get("Relation Name") in ("entries", "keys")
    ]
    assert not scans, scans


async def test_the_single_statement_take_walks_the_indexes_whatever_the_statistics(
    journal: Journal, pool: Pool
) -> None:
    """A backup daemon's take (heads only, no wait) is a prepared statement with a generic
    plan, kept for the connection's life: lease_settings turns the scans off for it."""

    async def take(conn: Conn) -> list[int]:
        params = {"lane": "l", "limit": 100, "token": uuid.uuid4(), "lease_ms": 5000}
        async with conn.transaction():
            await conn.execute(QUERIES["lease_settings"], prepare=True)
            cursor = await conn.execute(QUERIES["take"], params, prepare=True)
            return [row["id"] for row in await cursor.fetchall()]

    async with pool.connection() as conn:
        await conn.execute("analyze journal.entries")
        assert await take(conn) == []  # planned now, on an empty table
        await journal.enqueue([NewEntry("done", "k", {"n": n}) for n in range(5_000)])
        await journal.enqueue([NewEntry("l", "k", {"n": n}) for n in range(500)])
        async with pool.connection() as other:
            await other.execute(
                "update journal.entries set state = 'done', finished_at = now() where lane = 'done'"
            )
        taken: list[int] = []

        async def take_once(conn: Conn) -> None:
            taken.extend(await take(conn))

        plans = await nested_plans(conn, take_once)
    assert len(taken) == 100
    the_take = plan_of(plans, "update journal.entries e")
    assert uses(the_take, "entries_ready"), the_take
    assert not any(n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan") for n in the_take)
