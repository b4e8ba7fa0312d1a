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
