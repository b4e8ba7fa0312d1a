"""The listener's and the pipeline's frequent questions about a lane ("any event held?",
"how many READY?") must go through the journal's partial indexes, never scan the finished
entries the journal keeps: they are asked on every batch and every S13 check, and a
journal holding millions of processed events made each one a sequential scan."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bossa.db import Pool
from bossa.journal import Journal, NewEntry
from bossa.sync.store import QUERIES

LANE = "sync.pipeline.1"


async def plan_nodes(pool: Pool, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(f"explain (format json) {query}".encode(), params)
        ).fetchone()
    assert row is not None
    plan = row["QUERY PLAN"]
    top = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
    found, todo = [], [top]
    while todo:
        node = todo.pop()
        found.append(node)
        todo += node.get("Plans", [])
    return found


@pytest.mark.parametrize("name", ["held", "ready_count", "ready_by_lane"])
async def test_lane_questions_use_the_journal_indexes(
    journal: Journal, pool: Pool, name: str
) -> None:
    # A lane after a day of work: 200,000 processed events, a few dozen waiting.
    await journal.enqueue([NewEntry(LANE, "e", {"n": n}, key=f"A{n % 20}") for n in range(60)])
    async with pool.connection() as conn:
        await conn.execute(
            "insert into journal.entries (lane, key, kind, payload, state, finished_at, created_by)"
            " select %s, 'B' || g %% 1000, 'e', '{}', 'done', now(), 'test'"
            " from generate_series(1, 200000) g",
            (LANE,),
        )
        await conn.execute("analyze journal.entries")
    nodes = await plan_nodes(pool, QUERIES[name], {"lane": LANE})
    scans = [n for n in nodes if n.get("Relation Name") == "entries"]
    assert scans, nodes
    assert all(n["Node Type"] != "Seq Scan" for n in scans), scans
    assert {n.get("Index Name") for n in scans} <= {"entries_ready", "entries_key_unfinished"}
