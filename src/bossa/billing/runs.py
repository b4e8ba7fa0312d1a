"""Bill runs (B1, B4, B5, B6): open with a snapshot, bill every account once in
parallel chunks, detect the real end, settle what was staged in the order it was taken,
and reconcile the books with the snapshot.

Every step is resumable: a worker killed mid-chunk leaves its accounts unbilled (the
chunk is one transaction); settlement killed mid-way resumes with the items not yet
settled (each item is one transaction, marked in it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from psycopg import errors as pg_errors

from bossa.billing.queries import QUERIES
from bossa.db import Conn, Pool
from bossa.errors import Conflict, NotFound

__all__ = ["bill", "reconcile", "settle", "start_run"]

Progress = Callable[[int, int], None]
_CATCH_UP_ROUNDS = 3
_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


async def start_run(
    pool: Pool,
    *,
    cycle: str,
    period_start: date,
    period_end: date,
    due_days: int = 20,
    planned_end: datetime | None = None,
    actor: str,
) -> int:
    """Open a run: from this commit on, payments are staged (B2)."""
    try:
        async with pool.connection() as conn, conn.transaction():
            await conn.execute(QUERIES["lock_books"])
            row = await (
                await conn.execute(
                    QUERIES["start_run"],
                    {
                        "cycle": cycle,
                        "period_start": period_start,
                        "period_end": period_end,
                        "due_days": due_days,
                        "planned_end": planned_end,
                        "actor": actor,
                    },
                )
            ).fetchone()
            assert row is not None
            run_id = int(row["id"])
            await conn.execute(QUERIES["snapshot"], {"run": run_id, "cycle": cycle})
            cursor = await conn.execute(QUERIES["run_accounts"], {"run": run_id, "cycle": cycle})
            await conn.execute(QUERIES["set_total"], {"run": run_id, "total": cursor.rowcount})
    except pg_errors.UniqueViolation as exc:
        async with pool.connection() as conn:
            open_run = await (await conn.execute(QUERIES["open_run"])).fetchone()
        if exc.diag.constraint_name == "runs_one_open" and open_run:
            raise Conflict(
                f"bill run {open_run['id']} is still {open_run['status']}", field="cycle"
            ) from exc
        raise Conflict(
            f"the {cycle} cycle was already billed for {period_start}", field="period"
        ) from exc
    return run_id


async def _run(conn: Conn, run_id: int) -> dict[str, Any]:
    row = await (await conn.execute(QUERIES["run"], {"run": run_id})).fetchone()
    if row is None:
        raise NotFound(f"no bill run {run_id}", field="run")
    return row


async def bill(
    pool: Pool,
    run_id: int,
    *,
    workers: int = 1,
    chunk: int = 500,
    actor: str = "billing",
    progress: Progress | None = None,
) -> int:
    """Bill the run's pending accounts with parallel workers; when none is left, the run is
    over (B5) and settlement may begin. Returns the accounts billed by this call."""
    async with pool.connection() as conn:
        await _run(conn, run_id)
    billed = 0

    async def worker() -> None:
        nonlocal billed
        while True:
            async with pool.connection() as conn:
                row = await (
                    await conn.execute(
                        QUERIES["bill_chunk"], {"run": run_id, "limit": chunk, "actor": actor}
                    )
                ).fetchone()
            done = int(row["billed"]) if row else 0
            if done == 0:
                return
            billed += done
            if progress:
                async with pool.connection() as conn:
                    p = await (await conn.execute(QUERIES["progress"], {"run": run_id})).fetchone()
                assert p is not None
                progress(int(p["billed"]), int(p["total"]))

    await asyncio.gather(*(worker() for _ in range(workers)))
    async with pool.connection() as conn:
        await conn.execute(QUERIES["mark_settling"], {"run": run_id})
    return billed


async def settle(pool: Pool, run_id: int, *, batch: int = 200, actor: str = "billing") -> int:
    """B4: apply the staged deposits and write-offs in the order they were taken, each
    once; then end staging. Returns the items applied by this call."""
    async with pool.connection() as conn:
        run = await _run(conn, run_id)
    if run["status"] == "settled":
        return 0
    if run["status"] != "settling":
        raise Conflict(f"bill run {run_id} is still billing accounts", field="run")
    applied = 0
    # Catch up in rounds, each up to what was staged when it began, so that a steady
    # stream of payments cannot keep settlement going forever: each round is shorter.
    for _ in range(_CATCH_UP_ROUNDS):
        cutoff = datetime.now(UTC)
        applied_now = 0
        while True:
            done = await _settle_some(pool, batch, actor, cutoff=cutoff)
            applied_now += done
            if done < batch:
                break
        applied += applied_now
        if applied_now < batch:
            break
    # Under the exclusive lock no payment is being staged: apply the last few, end staging.
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(QUERIES["lock_books"])
        applied += await _settle_some(pool, 1_000_000, actor, conn=conn, cutoff=None)
        await conn.execute(QUERIES["mark_settled"], {"run": run_id})
    return applied


async def _settle_some(
    pool: Pool, limit: int, actor: str, *, cutoff: datetime | None, conn: Conn | None = None
) -> int:
    if conn is None:
        async with pool.connection() as own:
            return await _settle_some(pool, limit, actor, cutoff=cutoff, conn=own)
    params = {"limit": limit, "cutoff": cutoff or _FAR_FUTURE, "actor": actor}
    row = await (await conn.execute(QUERIES["settle_batch"], params)).fetchone()
    return int(row["applied"]) if row else 0


async def reconcile(pool: Pool, run_id: int, *, limit: int = 1000) -> dict[str, Any]:
    """B6: snapshot + the run's charges + the settled staged items = the final books,
    per account and in total; every difference listed (none expected)."""
    async with pool.connection() as conn:
        run = await _run(conn, run_id)
        if run["status"] != "settled":
            raise Conflict(
                f"bill run {run_id} is {run['status']}: reconcile after settlement", field="run"
            )
        differences = await (
            await conn.execute(QUERIES["reconcile"], {"run": run_id, "limit": limit})
        ).fetchall()
        totals = await (await conn.execute(QUERIES["run_totals"], {"run": run_id})).fetchone()
    assert totals is not None
    return {
        "run": run_id,
        "status": run["status"],
        "reconciled": not differences,
        "differences": differences,
        "totals": totals,
        "started_at": run["started_at"],
        "billed_at": run["billed_at"],
        "settled_at": run["settled_at"],
    }
