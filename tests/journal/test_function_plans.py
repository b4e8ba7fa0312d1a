"""The plans of the statements inside the journal's functions, as they run (auto_explain,
tests/foundation/plans.py): `journal.advance_keys`, run by every ack with a generic plan
(the function sets plan_cache_mode), must look its keys up by primary key and the key's
next entry through the unfinished-key index, even for a key with 20,000 entries behind
it; a custom plan for the hot key would walk the primary key."""

from __future__ import annotations

from bossa.db import Conn, Pool
from bossa.journal import Journal, NewEntry
from tests.foundation.plans import nested_plans, plan_of, uses


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
