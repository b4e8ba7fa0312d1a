"""The plans of the statements a database function really runs, read with auto_explain
(loaded into the test's own session, `log_nested_statements` on, the plans sent to the
client as notices): plan tests check the function's own SQL, never a copy of it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from bossa.db import Conn


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += nodes(child)
    return found


async def nested_plans(conn: Conn, call: Callable[[Conn], Awaitable[Any]]) -> list[dict[str, Any]]:
    """Run `call(conn)` with auto_explain on; returns each statement's plan as auto_explain
    gives it ({"Query Text": ..., "Plan": ...}), the nested ones included."""
    plans: list[dict[str, Any]] = []

    def keep(notice: psycopg.errors.Diagnostic) -> None:
        text = notice.message_primary or ""
        if "plan:" in text:
            plans.append(json.loads(text.split("plan:", 1)[1]))

    await conn.execute("load 'auto_explain'")
    for setting, value in (
        ("auto_explain.log_min_duration", "0"),
        ("auto_explain.log_nested_statements", "on"),
        ("auto_explain.log_format", "json"),
        ("auto_explain.log_level", "notice"),
        ("client_min_messages", "notice"),
    ):
        await conn.execute("select set_config(%s, %s, false)", (setting, value))
    conn.add_notice_handler(keep)
    try:
        await call(conn)
    finally:
        conn.remove_notice_handler(keep)
        await conn.execute("select set_config('auto_explain.log_min_duration', '-1', false)")
    return plans


def plan_of(plans: list[dict[str, Any]], containing: str) -> list[dict[str, Any]]:
    """The nodes of the one plan whose statement contains `containing`."""
    found = [p for p in plans if containing in p["Query Text"]]
    assert found, f"no statement containing {containing!r} ran: {[p['Query Text'] for p in plans]}"
    return nodes(found[-1]["Plan"])


def uses(every: list[dict[str, Any]], index: str) -> bool:
    return any(n.get("Index Name") == index for n in every)
