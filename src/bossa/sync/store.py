"""The named queries of sync (sql/queries.sql), as functions that take a connection.

Sync has no tables: it reads contracts and customers through customers' published views
and its events through the journal's published `journal.lane_entries`."""

from __future__ import annotations

from typing import Any

from bossa.db import Conn
from bossa.sql import load_queries

__all__ = ["QUERIES"]

QUERIES = load_queries("bossa.sync", "sql/queries.sql")


async def contract_event(conn: Conn, sa_id: str) -> dict[str, Any] | None:
    return await (await conn.execute(QUERIES["contract_event"], {"sa_id": sa_id})).fetchone()


async def held(conn: Conn, lane: str) -> bool:
    row = await (await conn.execute(QUERIES["held"], {"lane": lane}, prepare=True)).fetchone()
    return bool(row and row["held"])


async def by_state(conn: Conn, lane: str) -> dict[str, int]:
    rows = await (await conn.execute(QUERIES["by_state"], {"lane": lane})).fetchall()
    return {r["state"]: int(r["n"]) for r in rows}


async def backlog(conn: Conn, lane: str, window_s: float) -> dict[str, Any]:
    row = await (
        await conn.execute(QUERIES["backlog"], {"lane": lane, "window_s": window_s})
    ).fetchone()
    assert row is not None
    return row


async def held_events(conn: Conn, lane: str, limit: int) -> list[dict[str, Any]]:
    return await (
        await conn.execute(QUERIES["held_events"], {"lane": lane, "limit": limit})
    ).fetchall()


async def _run(conn: Conn, name: str, params: dict[str, Any] | None = None) -> None:
    await conn.execute(QUERIES[name], params or {})


async def _one(conn: Conn, name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    row = await (await conn.execute(QUERIES[name], params or {})).fetchone()
    assert row is not None, name
    return row


async def publisher_lock(conn: Conn, *, exclusive: bool) -> None:
    await _run(conn, "publisher_lock" if exclusive else "publisher_lock_shared")


async def publisher(conn: Conn) -> dict[str, Any]:
    return await _one(conn, "publisher")


async def set_publisher(conn: Conn, *, connected: bool, actor: str) -> None:
    await _run(conn, "set_publisher", {"connected": connected, "actor": actor})


async def outbox_add(
    conn: Conn, lanes: list[str], keys: list[str | None], kinds: list[str], payloads: list[str]
) -> None:
    await _run(
        conn, "outbox_add", {"lanes": lanes, "keys": keys, "kinds": kinds, "payloads": payloads}
    )


async def outbox_take(conn: Conn) -> list[dict[str, Any]]:
    return await (await conn.execute(QUERIES["outbox_take"])).fetchall()


async def outbox(conn: Conn) -> dict[str, Any]:
    return await _one(conn, "outbox")


async def log_control(
    conn: Conn,
    *,
    target: str,
    instance: int | None,
    action: str,
    actor: str,
    reason: str | None,
    moved: int = 0,
) -> None:
    await _run(
        conn,
        "log_control",
        {
            "target": target,
            "instance": instance,
            "action": action,
            "actor": actor,
            "reason": reason,
            "moved": moved,
        },
    )


async def control_log(conn: Conn, limit: int) -> list[dict[str, Any]]:
    return await (await conn.execute(QUERIES["control_log"], {"limit": limit})).fetchall()


async def routes_of(conn: Conn, customers: list[str]) -> dict[str, int]:
    """The assigned instances of these customers (those assigned; one query)."""
    cursor = await conn.execute(QUERIES["routes_of"], {"customers": customers}, prepare=True)
    return {r["customer_id"]: int(r["instance"]) for r in await cursor.fetchall()}


async def set_route(conn: Conn, customer: str, instance: int, *, actor: str) -> None:
    await _run(conn, "set_route", {"customer": customer, "instance": instance, "actor": actor})


async def listener_register(conn: Conn, instance: int) -> None:
    await _run(conn, "listener_register", {"instance": instance})


async def listener(conn: Conn, instance: int) -> dict[str, Any] | None:
    return await (
        await conn.execute(QUERIES["listener"], {"instance": instance}, prepare=True)
    ).fetchone()


async def set_listener_wish(conn: Conn, instance: int, *, connected: bool, actor: str) -> None:
    await _run(
        conn,
        "set_listener_wish",
        {"instance": instance, "connected": connected, "actor": actor},
    )


async def set_listener_state(conn: Conn, instance: int, state: str) -> None:
    await _run(conn, "set_listener_state", {"instance": instance, "state": state})


async def account_announced(
    conn: Conn, *, instance: int, account: str, customer: str | None, status: str, entry: int
) -> None:
    await _run(
        conn,
        "account_announced",
        {
            "instance": instance,
            "account": account,
            "customer": customer,
            "status": status,
            "entry": entry,
        },
    )


async def account_balances(
    conn: Conn, *, instance: int, account: str, customer: str | None, balances: str, entry: int
) -> None:
    await _run(
        conn,
        "account_balances",
        {
            "instance": instance,
            "account": account,
            "customer": customer,
            "balances": balances,
            "entry": entry,
        },
    )


async def account_discounts(
    conn: Conn, *, instance: int, account: str, customer: str | None, discounts: str, entry: int
) -> None:
    await _run(
        conn,
        "account_discounts",
        {
            "instance": instance,
            "account": account,
            "customer": customer,
            "discounts": discounts,
            "entry": entry,
        },
    )


async def cycle_accounts(conn: Conn, cycle: str) -> list[str]:
    rows = await (await conn.execute(QUERIES["cycle_accounts"], {"cycle": cycle})).fetchall()
    return [row["id"] for row in rows]


async def billing_mark(
    conn: Conn, *, started: bool, instance: int, cycle: str, run: int | None, entry: int
) -> None:
    await _run(
        conn,
        "billing_started" if started else "billing_completed",
        {"instance": instance, "cycle": cycle, "run": run, "entry": entry},
    )


async def recycle_processed(
    conn: Conn, *, entry: int, instance: int, by: str | None, reason: str | None
) -> None:
    await _run(
        conn,
        "recycle_processed",
        {"entry": entry, "instance": instance, "by": by, "reason": reason},
    )


async def ready_by_lane(conn: Conn) -> dict[str, int]:
    rows = await (await conn.execute(QUERIES["ready_by_lane"])).fetchall()
    return {r["lane"]: int(r["n"]) for r in rows}


async def ready_count(conn: Conn, lane: str) -> int:
    row = await (
        await conn.execute(QUERIES["ready_count"], {"lane": lane}, prepare=True)
    ).fetchone()
    return int(row["n"]) if row else 0
