"""The named queries of alerts (sql/queries.sql), as functions that take a connection."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import psycopg

from bossa.alerts.models import MissedCall, message_id_keys
from bossa.db import Conn
from bossa.sql import load_queries

__all__ = ["QUERIES"]

QUERIES = load_queries("bossa.alerts", "sql/queries.sql")
Cursor = psycopg.AsyncCursor[dict[str, Any]]


async def _one(conn: Conn, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
    return await (await conn.execute(QUERIES[name], params)).fetchone()


async def _all(conn: Conn, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return await (await conn.execute(QUERIES[name], params)).fetchall()


async def health(conn: Conn) -> bool:
    row = await _one(conn, "health", {})
    return bool(row and row["ok"] == 1)


async def insert_missed_call(
    conn: Conn, call: MissedCall, *, spooled: bool = False, notice_id: int | None = None
) -> bool:
    """False when the call (its id or its intake reference) is recorded already."""
    params = {
        "id": call.id,
        "call_ref": call.call_ref,
        "caller": call.caller,
        "callee": call.callee,
        "reason": call.reason.value,
        "called_at": call.called_at,
        "via": call.via,
        "spooled": spooled,
        "notice_id": notice_id,
    }
    return await _one(conn, "insert_missed_call", params) is not None


async def add_pending(conn: Conn, call: MissedCall, window_s: float) -> None:
    await conn.execute(
        QUERIES["add_pending"],
        {
            "callee": call.callee,
            "caller": call.caller,
            "called_at": call.called_at,
            "window_s": window_s,
        },
    )


async def take_due(conn: Conn, limit: int) -> list[dict[str, Any]]:
    return await _all(conn, "take_due", {"limit": limit})


async def registry(conn: Conn) -> dict[str, str]:
    return {str(r["msisdn"]): str(r["lang"]) for r in await _all(conn, "registry", {})}


async def add_subscriber(conn: Conn, msisdn: str, lang: str, actor: str) -> dict[str, Any]:
    row = await _one(conn, "add_subscriber", {"msisdn": msisdn, "lang": lang, "actor": actor})
    assert row is not None
    return row


async def remove_subscriber(conn: Conn, msisdn: str) -> bool:
    return await _one(conn, "remove_subscriber", {"msisdn": msisdn}) is not None


async def trial_ranges(conn: Conn) -> list[str]:
    return [str(r["prefix"]) for r in await _all(conn, "trial_ranges", {})]


async def add_trial_range(conn: Conn, prefix: str, actor: str) -> None:
    await conn.execute(QUERIES["add_trial_range"], {"prefix": prefix, "actor": actor})


async def remove_trial_range(conn: Conn, prefix: str) -> bool:
    return await _one(conn, "remove_trial_range", {"prefix": prefix}) is not None


async def trial_quota(conn: Conn) -> dict[str, Any]:
    row = await _one(conn, "trial_quota", {})
    assert row is not None
    return row


async def set_trial_quota(conn: Conn, quota: int, actor: str) -> None:
    await conn.execute(QUERIES["set_trial_quota"], {"quota": quota, "actor": actor})


async def join_trial(conn: Conn, msisdn: str) -> bool:
    await conn.execute(QUERIES["lock_trial"])
    return await _one(conn, "join_trial", {"msisdn": msisdn}) is not None


async def insert_notice(
    conn: Conn,
    *,
    kind: int,
    callee: str,
    caller: str,
    calls: int,
    last_at: datetime,
    text: str,
    created_at: datetime | None = None,
) -> int:
    row = await _one(
        conn,
        "insert_notice",
        {
            "kind": kind,
            "callee": callee,
            "caller": caller,
            "calls": calls,
            "last_at": last_at,
            "text": text,
            "created_at": created_at,
        },
    )
    assert row is not None
    return int(row["id"])


async def link_calls_by_id(conn: Conn, notice_id: int, ids: list[uuid.UUID]) -> None:
    await conn.execute(QUERIES["link_calls_by_id"], {"notice_id": notice_id, "ids": ids})


async def mark_submitted(conn: Conn, notice_id: int, ids: list[str], keys: list[str]) -> None:
    await conn.execute(QUERIES["mark_submitted"], {"notice_id": notice_id, "ids": ids})
    async with conn.cursor() as cur:
        await cur.executemany(
            QUERIES["add_smsc_key"], [{"key": key, "notice_id": notice_id} for key in keys]
        )


async def mark_submitted_many(conn: Conn, submitted: list[tuple[int, list[str]]]) -> None:
    """(notice id, message ids) each: two statements for a whole batch."""
    if not submitted:
        return
    rows = [{"notice_id": notice_id, "ids": ids} for notice_id, ids in submitted]
    await conn.execute(QUERIES["mark_submitted_many"], {"rows": json.dumps(rows)})
    keys = [
        (key, notice_id)
        for notice_id, ids in submitted
        for key in sorted({k for message_id in ids for k in message_id_keys(message_id)})
    ]
    await conn.execute(
        QUERIES["add_smsc_keys"],
        {"keys": [k for k, _ in keys], "notice_ids": [n for _, n in keys]},
    )


async def mark_delivered_many(conn: Conn, delivered: list[tuple[int, str]]) -> set[int]:
    """(notice id, receipt stat) each; the notice ids that exist."""
    if not delivered:
        return set()
    rows = await _all(
        conn,
        "mark_delivered_many",
        {"notice_ids": [n for n, _ in delivered], "stats": [s for _, s in delivered]},
    )
    return {int(r["id"]) for r in rows}


async def notice_by_keys(conn: Conn, keys: list[str]) -> int | None:
    row = await _one(conn, "notice_by_keys", {"keys": keys})
    return None if row is None else int(row["notice_id"])


async def mark_delivered(conn: Conn, notice_id: int, stat: str) -> bool:
    return await _one(conn, "mark_delivered", {"notice_id": notice_id, "stat": stat}) is not None


async def add_offer(conn: Conn, callee: str, code: str, notice_id: int, hours: int) -> bool:
    params = {"callee": callee, "code": code, "notice_id": notice_id, "hours": hours}
    return await _one(conn, "add_offer", params) is not None


async def open_offers(conn: Conn, callee: str) -> list[dict[str, Any]]:
    return await _all(conn, "open_offers", {"callee": callee})


async def use_offer(conn: Conn, callee: str, code: str) -> None:
    await conn.execute(QUERIES["use_offer"], {"callee": callee, "code": code})


async def count_attempt(conn: Conn, callee: str, attempts: int) -> None:
    await conn.execute(QUERIES["count_attempt"], {"callee": callee})
    await conn.execute(QUERIES["close_exhausted"], {"callee": callee, "attempts": attempts})


async def calls_of(conn: Conn, callee: str, limit: int) -> list[dict[str, Any]]:
    return await _all(conn, "calls_of", {"callee": callee, "limit": limit})


async def notices_of(conn: Conn, callee: str, limit: int) -> list[dict[str, Any]]:
    return await _all(conn, "notices_of", {"callee": callee, "limit": limit})


async def insert_outage_notice(
    conn: Conn,
    *,
    callee: str,
    caller: str,
    calls: int,
    last_at: datetime,
    text: str,
    created_at: datetime,
    message_ids: list[str],
    ref: uuid.UUID,
) -> int:
    """The notice's id, whether inserted now or by an earlier replay."""
    row = await _one(
        conn,
        "insert_outage_notice",
        {
            "callee": callee,
            "caller": caller,
            "calls": calls,
            "last_at": last_at,
            "text": text,
            "created_at": created_at,
            "ids": message_ids,
            "ref": ref,
        },
    )
    assert row is not None
    return int(row["id"])


async def insert_missed_calls(conn: Conn, calls: list[MissedCall]) -> list[dict[str, Any]]:
    """The rows inserted (id, caller, callee, called_at); calls recorded already are not."""
    return await (await start_insert_missed_calls(conn, calls)).fetchall()


async def start_insert_missed_calls(conn: Conn, calls: list[MissedCall]) -> Cursor:
    """`insert_missed_calls` sent (in pipeline mode, not yet waited for): fetch its rows
    from the cursor."""
    return await conn.execute(
        QUERIES["insert_missed_calls"],
        {
            "ids": [c.id for c in calls],
            "refs": [c.call_ref for c in calls],
            "callers": [c.caller for c in calls],
            "callees": [c.callee for c in calls],
            "reasons": [c.reason.value for c in calls],
            "ats": [c.called_at for c in calls],
            "vias": [c.via for c in calls],
        },
    )


async def add_pending_many(conn: Conn, rows: list[dict[str, Any]], window_s: float) -> None:
    await conn.execute(
        QUERIES["add_pending_many"],
        {
            "callees": [r["callee"] for r in rows],
            "callers": [r["caller"] for r in rows],
            "ats": [r["called_at"] for r in rows],
            "window_s": window_s,
        },
    )


async def subscriber_langs(conn: Conn, msisdns: list[str]) -> dict[str, str]:
    return await langs_of(await start_subscriber_langs(conn, msisdns))


async def start_subscriber_langs(conn: Conn, msisdns: list[str]) -> Cursor:
    return await conn.execute(QUERIES["subscriber_langs"], {"msisdns": msisdns})


async def langs_of(cursor: Cursor) -> dict[str, str]:
    return {str(r["msisdn"]): str(r["lang"]) for r in await cursor.fetchall()}


async def insert_notices(
    conn: Conn, notices: list[tuple[int, str, str, int, datetime, str]]
) -> dict[tuple[str, str], int]:
    """(kind, callee, caller, calls, last_at, text) each; the ids by (callee, caller)."""
    if not notices:
        return {}
    rows = await _all(
        conn,
        "insert_notices",
        {
            "kinds": [n[0] for n in notices],
            "callees": [n[1] for n in notices],
            "callers": [n[2] for n in notices],
            "calls": [n[3] for n in notices],
            "last_ats": [n[4] for n in notices],
            "texts": [n[5] for n in notices],
        },
    )
    return {(str(r["callee"]), str(r["caller"])): int(r["id"]) for r in rows}


async def link_calls_many(conn: Conn, links: list[tuple[int, str, str]]) -> None:
    """(notice id, callee, caller) each."""
    if links:
        await conn.execute(
            QUERIES["link_calls_many"],
            {
                "ids": [link[0] for link in links],
                "callees": [link[1] for link in links],
                "callers": [link[2] for link in links],
            },
        )


async def insert_spooled_calls(conn: Conn, calls: list[MissedCall]) -> list[dict[str, Any]]:
    """The rows inserted (id, caller, callee, called_at); calls recorded already are not."""
    return await _all(
        conn,
        "insert_spooled_calls",
        {
            "ids": [c.id for c in calls],
            "refs": [c.call_ref for c in calls],
            "callers": [c.caller for c in calls],
            "callees": [c.callee for c in calls],
            "reasons": [c.reason.value for c in calls],
            "ats": [c.called_at for c in calls],
            "vias": [c.via for c in calls],
        },
    )


async def insert_outage_notices(conn: Conn, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Messages 1 from the spool (refs unique); every notice id by its spool ref."""
    if not rows:
        return {}
    found = await _all(conn, "insert_outage_notices", {"rows": json.dumps(rows, default=str)})
    return {str(r["spool_ref"]): int(r["id"]) for r in found}


async def link_calls_to_notices(conn: Conn, links: list[tuple[uuid.UUID, int]]) -> None:
    if links:
        await conn.execute(
            QUERIES["link_calls_to_notices"],
            {"ids": [i for i, _ in links], "notice_ids": [n for _, n in links]},
        )


async def notices_by_receipt_keys(conn: Conn, keys: list[list[str]]) -> dict[int, int]:
    """For each receipt (by its position in `keys`) the notice its first known key names."""
    flat = [(n, key, pos) for n, ks in enumerate(keys) for pos, key in enumerate(ks)]
    if not flat:
        return {}
    rows = await _all(
        conn,
        "notices_by_receipt_keys",
        {"ns": [f[0] for f in flat], "keys": [f[1] for f in flat], "pos": [f[2] for f in flat]},
    )
    return {int(r["n"]): int(r["notice_id"]) for r in rows}
