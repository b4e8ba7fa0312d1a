"""Billing's named queries (sql/queries.sql), as functions that take a connection. The
only code that runs them; none opens a connection or a transaction."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from psycopg.types.json import Jsonb

from bossa.billing.models import Arrears, Funds, PaymentKind
from bossa.db import Conn
from bossa.sql import load_queries

__all__ = [
    "QUERIES",
    "add_window",
    "arrears",
    "bill_chunk",
    "billed_count",
    "cancel_run",
    "current_window",
    "cycle_has_accounts",
    "gauges",
    "lock_books",
    "lock_books_shared",
    "mark_settled",
    "mark_settling",
    "open_run",
    "overdue_accounts",
    "overlapping_run",
    "payment_by_key",
    "payment_context",
    "planned_window",
    "progress",
    "reconcile",
    "record_payment",
    "record_restore",
    "restore_sent",
    "restores",
    "run",
    "run_for_update",
    "run_totals",
    "settle_batch",
    "stage",
    "staged_totals",
    "start_run",
]

QUERIES = load_queries("bossa.billing", "sql/queries.sql")

Row = dict[str, Any]


async def _one(conn: Conn, name: str, params: dict[str, Any] | None = None) -> Row | None:
    return await (await conn.execute(QUERIES[name], params)).fetchone()


async def _all(conn: Conn, name: str, params: dict[str, Any] | None = None) -> list[Row]:
    return await (await conn.execute(QUERIES[name], params)).fetchall()


async def lock_books_shared(conn: Conn) -> None:
    await conn.execute(QUERIES["lock_books_shared"])


async def lock_books(conn: Conn) -> None:
    await conn.execute(QUERIES["lock_books"])


async def open_run(conn: Conn) -> Row | None:
    return await _one(conn, "open_run")


async def payment_context(conn: Conn, account_id: str, *, today: date) -> tuple[int | None, Funds]:
    """(the run holding the books or None, the account's books, staged items and what it
    owes on bills not yet past due on `today`), read in one statement."""
    row = await _one(conn, "payment_context", {"account": account_id, "today": today})
    assert row is not None
    funds = Funds(
        prepaid=int(row["prepaid"]),
        receivable=int(row["receivable"]),
        cash=int(row["cash"]),
        staged_deposits=int(row["staged_deposits"]),
        staged_writeoffs=int(row["staged_writeoffs"]),
        not_yet_due=int(row["not_yet_due"]),
    )
    return row["run_id"], funds


async def arrears(conn: Conn, account_id: str, *, today: date) -> Arrears:
    """The account's arrears on `today` (unlocked: for showing them)."""
    row = await _one(conn, "arrears", {"account": account_id, "today": today})
    assert row is not None
    return Arrears(
        receivable=int(row["receivable"]),
        not_yet_due=int(row["not_yet_due"]),
        staged_writeoffs=int(row["staged_writeoffs"]),
    )


async def run(conn: Conn, run_id: int) -> Row | None:
    return await _one(conn, "run", {"run": run_id})


async def run_for_update(conn: Conn, run_id: int) -> Row | None:
    """The run, locked until the caller's transaction ends (after the chunks under way)."""
    return await _one(conn, "run_for_update", {"run": run_id})


async def current_window(conn: Conn, cycle: str) -> Row | None:
    return await _one(conn, "current_window", {"cycle": cycle})


async def overlapping_run(conn: Conn, cycle: str, start: date, end: date) -> Row | None:
    return await _one(
        conn, "overlapping_run", {"cycle": cycle, "period_start": start, "period_end": end}
    )


async def cancel_run(conn: Conn, run_id: int, *, actor: str) -> bool:
    """Stop a run no account of which was billed and drop its snapshot and account list;
    False when it is not running or billed some account already."""
    row = await _one(conn, "mark_cancelling", {"run": run_id, "actor": actor})
    if row is None:
        return False
    await conn.execute(QUERIES["drop_run_accounts"], {"run": run_id})
    await conn.execute(QUERIES["drop_snapshot"], {"run": run_id})
    return True


async def planned_window(conn: Conn) -> Row | None:
    return await _one(conn, "planned_window")


async def add_window(conn: Conn, cycle: str, start: datetime, end: datetime, *, actor: str) -> int:
    row = await _one(
        conn, "add_window", {"cycle": cycle, "start": start, "end": end, "actor": actor}
    )
    assert row is not None
    return int(row["id"])


async def cycle_has_accounts(conn: Conn, cycle: str) -> bool:
    row = await _one(conn, "cycle_has_accounts", {"cycle": cycle})
    return bool(row and row["found"])


async def start_run(
    conn: Conn,
    *,
    cycle: str,
    period_start: date,
    period_end: date,
    due_days: int,
    planned_end: datetime | None,
    actor: str,
) -> int:
    """Open the run, snapshot the cycle's books and list its accounts; returns its id."""
    row = await _one(
        conn,
        "start_run",
        {
            "cycle": cycle,
            "period_start": period_start,
            "period_end": period_end,
            "due_days": due_days,
            "planned_end": planned_end,
            "actor": actor,
        },
    )
    assert row is not None
    run_id = int(row["id"])
    await conn.execute(QUERIES["snapshot"], {"run": run_id, "cycle": cycle})
    cursor = await conn.execute(QUERIES["run_accounts"], {"run": run_id, "cycle": cycle})
    await conn.execute(QUERIES["set_total"], {"run": run_id, "total": cursor.rowcount})
    return run_id


async def bill_chunk(
    conn: Conn, run_id: int, limit: int, *, actor: str
) -> tuple[int, list[dict[str, Any]]]:
    """The accounts billed by the chunk and the fees it charged (account, customer,
    currency, amount_minor, run_id, cycle, period_start, period_end), in its transaction."""
    row = await _one(conn, "bill_chunk", {"run": run_id, "limit": limit, "actor": actor})
    if row is None:
        return 0, []
    return int(row["billed"]), list(row["fees"] or [])


async def progress(conn: Conn, run_id: int) -> Row | None:
    """A run's progress inputs (see the query); None for an unknown run."""
    return await _one(conn, "progress", {"run": run_id})


async def billed_count(conn: Conn, run_id: int) -> int:
    """Accounts of the run billed so far."""
    row = await _one(conn, "billed_count", {"run": run_id})
    assert row is not None
    return int(row["billed"])


async def mark_settling(conn: Conn, run_id: int) -> bool:
    """True when this call ended the run's billing (B5)."""
    return await _one(conn, "mark_settling", {"run": run_id}) is not None


async def mark_settled(conn: Conn, run_id: int) -> None:
    await conn.execute(QUERIES["mark_settled"], {"run": run_id})


async def settle_batch(conn: Conn, cutoff: datetime, limit: int, *, actor: str) -> int:
    row = await _one(conn, "settle_batch", {"cutoff": cutoff, "limit": limit, "actor": actor})
    return int(row["applied"]) if row else 0


async def stage(
    conn: Conn,
    kind: PaymentKind,
    *,
    run_id: int,
    account_id: str,
    amount: int,
    key: str | None,
    actor: str,
) -> Row:
    """B2: a deposit or a write-off instruction taken during a run; its id and time."""
    name = "stage_deposit" if kind is PaymentKind.DEPOSIT else "stage_writeoff"
    params = {"run": run_id, "account": account_id, "amount": amount, "key": key, "actor": actor}
    row = await _one(conn, name, params)
    assert row is not None
    return row


async def staged_totals(conn: Conn, account_id: str) -> tuple[int, int]:
    """(deposits, write-offs) staged for the account and not yet settled."""
    row = await _one(conn, "staged_totals", {"account": account_id})
    assert row is not None
    return int(row["deposits"]), int(row["writeoffs"])


async def payment_by_key(conn: Conn, key: str) -> Row | None:
    return await _one(conn, "payment_by_key", {"key": key})


async def record_payment(
    conn: Conn,
    *,
    key: str,
    fingerprint: str,
    account_id: str,
    kind: PaymentKind,
    amount: int,
    outcome: dict[str, Any],
) -> None:
    await conn.execute(
        QUERIES["record_payment"],
        {
            "key": key,
            "hash": fingerprint,
            "account": account_id,
            "kind": kind.value,
            "amount": amount,
            "outcome": Jsonb(outcome),
        },
    )


async def overdue_accounts(
    conn: Conn, *, today: date, limit: int, account: str | None = None
) -> list[Row]:
    """Accounts dunning suspends (or only `account`, if it is one of them), each with its
    currency and arrears (minor units)."""
    return await _all(
        conn, "overdue_accounts", {"today": today, "limit": limit, "account": account}
    )


async def record_restore(conn: Conn, *, payment: str, sa_id: str, account_id: str) -> None:
    await conn.execute(
        QUERIES["record_restore"], {"payment": payment, "sa_id": sa_id, "account": account_id}
    )


async def restore_sent(conn: Conn, *, payment: str, sa_id: str) -> None:
    await conn.execute(QUERIES["restore_sent"], {"payment": payment, "sa_id": sa_id})


async def restores(conn: Conn, account_id: str, *, limit: int) -> list[Row]:
    return await _all(conn, "restores", {"account": account_id, "limit": limit})


async def reconcile(conn: Conn, run_id: int, *, limit: int) -> list[Row]:
    return await _all(conn, "reconcile", {"run": run_id, "limit": limit})


async def run_totals(conn: Conn, run_id: int) -> Row:
    row = await _one(conn, "run_totals", {"run": run_id})
    assert row is not None
    return row


async def gauges(conn: Conn) -> Row:
    row = await _one(conn, "gauges")
    assert row is not None
    return row
