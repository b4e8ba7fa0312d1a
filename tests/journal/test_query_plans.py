"""The hot queries' plans, pinned: take must walk its partial index and touch about as
many pages for a 50k backlog behind one key as for a 1k one (cost O(batch), not
O(backlog)). After ANALYZE the planner could prefer the primary key and lose 5-10x.
The statements inside the journal's functions are checked as they run, with
auto_explain, in test_function_plans.py."""

from __future__ import annotations

import json
import uuid
from importlib import resources
from typing import Any

import pytest

from bossa.db import Pool
from bossa.journal import Journal, NewEntry
from bossa.journal.store import QUERIES


async def explain(pool: Pool, query: str, params: dict[str, Any], *, analyze: bool) -> Any:
    options = "analyze, buffers, format json" if analyze else "format json"
    async with pool.connection() as conn, conn.transaction(force_rollback=True):
        # EXPLAIN ANALYZE of take really leases; the rollback keeps the data as it was.
        cursor = await conn.execute(f"explain ({options}) {query}".encode(), params)
        row = await cursor.fetchone()
    assert row is not None
    plan = row["QUERY PLAN"]
    return plan[0] if isinstance(plan, list) else json.loads(plan)[0]


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += nodes(child)
    return found


def shared_pages(plan: dict[str, Any]) -> int:
    top = plan["Plan"]
    return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))


async def backlog(journal: Journal, pool: Pool, waiting_behind_one_key: int) -> None:
    """100 keys with one ready head each, one key with a long queue, many done entries."""
    await journal.enqueue(
        [NewEntry("l", "k", {"n": n}, key="hot") for n in range(waiting_behind_one_key)]
    )
    await journal.enqueue([NewEntry("l", "k", {"n": n}, key=f"k{n}") for n in range(100)])
    await journal.enqueue([NewEntry("done", "k", {"n": n}) for n in range(5_000)])
    async with pool.connection() as conn:
        await conn.execute(
            "update journal.entries set state = 'done', finished_at = now() where lane = 'done'"
        )
        await conn.commit()
        await conn.execute("analyze journal.entries")
        await conn.commit()


def take_params(limit: int = 100) -> dict[str, Any]:
    return {"lane": "l", "limit": limit, "token": uuid.uuid4(), "lease_ms": 30_000}


@pytest.mark.parametrize("limit", [100, 1_000])
async def test_take_uses_the_ready_index(journal: Journal, pool: Pool, limit: int) -> None:
    # A backup daemon takes a thousand at once: a join would scan the table for them.
    await backlog(journal, pool, 20_000)
    plan = await explain(pool, QUERIES["take"], take_params(limit), analyze=False)
    every = nodes(plan["Plan"])
    assert any(n.get("Index Name") == "entries_ready" for n in every), every
    assert not any(n["Node Type"] == "Seq Scan" for n in every), every


async def test_take_cost_does_not_grow_with_backlog(journal: Journal, pool: Pool) -> None:
    await backlog(journal, pool, 1_000)
    small = shared_pages(await explain(pool, QUERIES["take"], take_params(), analyze=True))
    await journal.enqueue([NewEntry("l", "k", {"n": n}, key="hot") for n in range(49_000)])
    async with pool.connection() as conn:
        await conn.execute("analyze journal.entries")
    large = shared_pages(await explain(pool, QUERIES["take"], take_params(), analyze=True))
    assert large < small * 1.5 + 20, (small, large)


async def test_next_due_uses_the_ready_index(journal: Journal, pool: Pool) -> None:
    await backlog(journal, pool, 1_000)
    due = await explain(pool, QUERIES["next_due"], {"lane": "l"}, analyze=False)
    assert any(n.get("Index Name") == "entries_ready" for n in nodes(due["Plan"]))


async def plan_of(pool: Pool, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return nodes((await explain(pool, QUERIES[name], params, analyze=False))["Plan"])


def uses(every: list[dict[str, Any]], index: str) -> bool:
    return any(n.get("Index Name") == index for n in every)


async def test_unfinished_lookups_use_the_partial_indexes(journal: Journal, pool: Pool) -> None:
    """The queries that ask "unfinished?" (journal.unfinished) must still match the
    partial indexes whose predicate asks the same: the planner proves a partial index
    usable only from a predicate it can match."""
    await backlog(journal, pool, 20_000)
    await journal.enqueue([NewEntry("l", "k", {"n": n}, dedup_key=f"d{n}") for n in range(2_000)])
    async with pool.connection() as conn:
        await conn.execute("analyze journal.entries")
    head = await plan_of(pool, "is_head", {"lane": "l", "key": "k5", "id": 10**9})
    assert uses(head, "entries_key_unfinished"), head
    blocked = await plan_of(pool, "blocked_keys", {"lane": "l", "limit": 100})
    assert uses(blocked, "entries_key_unfinished"), blocked
    dedup = await plan_of(
        pool,
        "enqueue",
        {
            "lanes": ["l"],
            "keys": [None],
            "kinds": ["k"],
            "payloads": ["{}"],
            "not_befores": [None],
            "dedup_keys": ["d1"],
            "created_by": "t",
        },
    )
    assert uses(dedup, "entries_dedup"), dedup


async def test_finished_lookups_use_the_finished_index(journal: Journal, pool: Pool) -> None:
    await backlog(journal, pool, 20_000)
    lanes = await plan_of(pool, "finished_lanes", {})
    assert uses(lanes, "entries_finished"), lanes
    assert not any(n["Node Type"] == "Seq Scan" for n in lanes), lanes
    purge = await plan_of(pool, "purge", {"lane": "done", "retention_s": 0, "limit": 100})
    assert uses(purge, "entries_finished"), purge


def test_the_final_states_are_said_once() -> None:
    """journal.finished says which states are final; nothing else spells the list out
    but the one index whose comment says why (entries_finished)."""
    sql = resources.files("bossa.journal").joinpath("sql")
    queries = sql.joinpath("queries.sql").read_text()
    schema = sql.joinpath("schema.sql").read_text()
    for text in (queries, schema):
        assert "in ('waiting', 'ready', 'taken', 'parked')" not in text
    assert "in ('done', 'discarded')" not in queries
    assert schema.count("in ('done', 'discarded')") == 2  # journal.finished, entries_finished
