"""Billing fixtures: the sample operator's products and customers, and accounts; and the
helpers every billing test shares: periods relative to today (a run's period has begun
and ended at most the look-back ago), a run opened inside a planned window, fresh
idempotency keys."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from bossa.billing import WindowRequest, add_window, start_run
from bossa.customers import load_sample
from bossa.customers.sample import SINCE
from bossa.db import Pool
from bossa.journal import Journal
from bossa.ledger import AccountRequest, open_account


def month(back: int, *, today: date | None = None) -> tuple[date, date]:
    """The calendar month `back` months before this one (after it, if negative): (first
    day, last day)."""
    first = (today or date.today()).replace(day=1)
    for _ in range(back):
        first = (first - timedelta(days=1)).replace(day=1)
    for _ in range(-back):
        first = (first + timedelta(days=32)).replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following - timedelta(days=1)


def key() -> str:
    """A fresh idempotency key."""
    return f"t-{uuid.uuid4()}"


async def plan_window(pool: Pool, cycle: str = "MONTHLY", hours: float = 4) -> int:
    """A bill-run window of the cycle containing now."""
    now = datetime.now(UTC)
    request = WindowRequest(
        bill_cycle=cycle,
        planned_start=now - timedelta(minutes=1),
        planned_end=now + timedelta(hours=hours),
    )
    return await add_window(pool, request, actor="t")


async def open_run(
    pool: Pool, period: tuple[date, date], *, cycle: str = "MONTHLY", **options: Any
) -> int:
    """Plan a window of the cycle containing now, and open the period's run in it."""
    await plan_window(pool, cycle)
    return await start_run(
        pool, cycle=cycle, period_start=period[0], period_end=period[1], actor="t", **options
    )


@pytest.fixture
async def accounts(journal: Journal, db_url: str) -> list[str]:
    """A KRW account per sample customer (C-1001..C-1004): A-1001..A-1004."""
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    ids = []
    async with journal.pool.connection() as conn:
        for n in range(1001, 1005):
            request = AccountRequest(account=f"A-{n}", customer=f"C-{n}", currency="KRW")
            await open_account(conn, request, actor="test")
            ids.append(f"A-{n}")
        # Each contract is billed to its customer's account, and ran long before any
        # period a test bills (the sample's fixture loader names neither).
        await conn.execute(
            "update customers.contracts c set account_id = a.id, start_date = %s"
            " from ledger.accounts a where a.customer_id = c.customer_id",
            (SINCE,),
        )
    return ids
