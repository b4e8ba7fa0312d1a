"""The plans of taking rated records out of suspense, pinned: the batch's own rows are
found by the BRIN index on batch id (never a scan of all rated usage, which grows with
every batch), and the records a batch suspended by the btree on suspense's batch id."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bossa.db import Pool
from bossa.rating.store import QUERIES

pytestmark = pytest.mark.anyio

RATED = """
insert into rating.rated_usage (record_key, batch_id, account_id, msisdn, destination,
                                product_code, zone, started_at, duration, billed, free, charge)
select %(prefix)s || g, %(batch)s, 'A-' || (g %% 1000), '8210' || g, '1555', 'SOIP', 'national',
       timestamp '2026-03-02' + (g %% 86400) * interval '1 s', 60, 60, 0, 5
from generate_series(1, %(rows)s) g
"""
SUSPENDED = """
insert into rating.suspense (record_key, batch_id, msisdn, destination, started_at, duration,
                             reason)
select %(prefix)s || g, %(batch)s, '8210' || g, '1555', timestamp '2026-03-02', 60, 'no_tariff'
from generate_series(1, %(rows)s) g
"""


async def explain(pool: Pool, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    async with pool.connection() as conn, conn.transaction(force_rollback=True):
        # ANALYZE really deletes; the rollback keeps the data as it was.
        cursor = await conn.execute(f"explain (analyze, format json) {query}".encode(), params)
        row = await cursor.fetchone()
    assert row is not None
    plan = row["QUERY PLAN"]
    top = (plan[0] if isinstance(plan, list) else json.loads(plan)[0])["Plan"]
    return nodes(top)


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += nodes(child)
    return found


async def history(pool: Pool) -> None:
    """Ten batches of 20k rated rows and 3k suspended each (30k in suspense), then
    batch 11: 20k rated, 200 of which were in suspense, and 100 suspended."""
    async with pool.connection() as conn:
        await conn.execute(
            "insert into rating.batches (source, sha256, created_by) "
            "select 'f' || g, md5(g::text), 'test' from generate_series(1, 11) g"
        )
        for batch in range(1, 11):
            await conn.execute(RATED, {"prefix": f"r{batch}-", "batch": batch, "rows": 20_000})
            await conn.execute(SUSPENDED, {"prefix": f"s{batch}-", "batch": batch, "rows": 3_000})
        await conn.execute(RATED, {"prefix": "s1-", "batch": 11, "rows": 200})
        await conn.execute(RATED, {"prefix": "n-", "batch": 11, "rows": 19_800})
        await conn.execute(SUSPENDED, {"prefix": "r2-", "batch": 11, "rows": 100})
        await conn.commit()
        await conn.execute("analyze rating.rated_usage")
        await conn.execute("analyze rating.suspense")
        await conn.commit()


async def test_unsuspend_reads_the_batch_not_all_rated_usage(pool: Pool) -> None:
    await history(pool)
    plan = await explain(pool, QUERIES["unsuspend_rated"], {"batch": 11})
    assert any(n.get("Index Name") == "rated_usage_batch" for n in plan), plan
    assert not any(
        n["Node Type"] == "Seq Scan" and n["Relation Name"] == "rated_usage" for n in plan
    ), plan
    # It found the batch's 200 records that were in suspense, and only those.
    assert plan[0]["Plans"][0]["Actual Rows"] == 200


async def test_unsuspend_of_the_batch_suspended_walks_its_index(pool: Pool) -> None:
    await history(pool)
    plan = await explain(pool, QUERIES["unsuspend_rated_before"], {"batch": 11})
    assert any(n.get("Index Name") == "suspense_batch" for n in plan), plan
    assert not any(n["Node Type"] == "Seq Scan" for n in plan), plan
    assert plan[0]["Plans"][0]["Actual Rows"] == 100
