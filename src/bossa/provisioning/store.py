"""Every named query of provisioning (sql/queries.sql), as functions that take the
caller's connection and return typed rows.

The only code that loads and runs provisioning's SQL; it never opens a connection or a
transaction (the service does). It names provisioning's own relations and the journal's
published `journal.lane_entries` (through the view `provisioning.commands`) and
`journal.declare_lane`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from bossa.db import Conn
from bossa.errors import Conflict
from bossa.provisioning.models import (
    BufferRow,
    Delivery,
    Division,
    DivisionChange,
    DivisionRecord,
    LogRow,
    Order,
    OrderRequest,
    PlanCommand,
    PlanKey,
    PlanVersion,
    Route,
    ServerType,
    placeholders,
    split_url_password,
)
from bossa.sql import load_queries

__all__ = [
    "QUERIES",
    "buffer",
    "command_exists",
    "complete_order",
    "complete_stranded_orders",
    "current_plan_command",
    "declare_lane",
    "division",
    "division_has_plans",
    "division_states",
    "divisions",
    "ensure_receive_table",
    "finish_receipt",
    "insert_division",
    "insert_order",
    "insert_plan_command",
    "insert_plan_version",
    "known_down",
    "log_backup_deliveries",
    "log_deliveries",
    "log_for",
    "mark_down",
    "mark_up",
    "next_wo_no",
    "order_by_key",
    "order_by_wo_no",
    "plan",
    "plan_intf_codes",
    "plan_versions",
    "plans",
    "set_plan_command",
    "take_receipts",
    "update_division",
    "upsert_service_record",
]

QUERIES = load_queries("bossa.provisioning", "sql/queries.sql")


async def _one(conn: Conn, name: str, params: dict[str, Any] | None = None) -> Any:
    return await (await conn.execute(QUERIES[name], params)).fetchone()


async def _all(conn: Conn, name: str, params: dict[str, Any] | None = None) -> list[Any]:
    return await (await conn.execute(QUERIES[name], params)).fetchall()


# -- divisions -------------------------------------------------------------------------


def _division(row: dict[str, Any]) -> DivisionRecord:
    credentials = {str(k): str(v) for k, v in (row["credentials"] or {}).items()}
    # A row from before issue 11 may hold its password in SERVER_URL: it is taken out
    # here, so no listing shows it, and the adapter finds it where it looks.
    url, password = split_url_password(row["server_url"])
    if password is not None:
        credentials.setdefault("password", password)
    return DivisionRecord(
        division=Division(
            name=row["division"],
            server_type=ServerType(row["server_type"]),
            server_ip=row["server_ip"],
            server_port=row["server_port"],
            server_url=url,
            server_name=row["server_name"],
            server_used=row["server_used"],
            credentials=credentials,
            timeout_s=row["timeout_ms"] / 1000.0,
        ),
        timeout_ms=row["timeout_ms"],
        down_until=row["down_until"],
        last_error=row["last_error"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


async def division(conn: Conn, name: str) -> DivisionRecord | None:
    row = await _one(conn, "division", {"division": name})
    return None if row is None else _division(row)


async def divisions(conn: Conn) -> list[DivisionRecord]:
    return [_division(row) for row in await _all(conn, "divisions")]


async def insert_division(conn: Conn, name: str, server_type: ServerType, actor: str) -> bool:
    """False when the division exists already."""
    row = await _one(
        conn,
        "insert_division",
        {"division": name, "server_type": server_type.value, "actor": actor},
    )
    return row is not None


async def update_division(conn: Conn, name: str, change: DivisionChange, actor: str) -> bool:
    """False when there is no such division."""
    params: dict[str, Any] = dict.fromkeys(DivisionChange.model_fields)
    params.update(change.values())

    if params["credentials"] is not None:
        params["credentials"] = Jsonb(params["credentials"])
    row = await _one(conn, "update_division", {**params, "division": name, "actor": actor})
    return row is not None


#: journal.declare_lane's SQLSTATE for a lane another module owns.
_LANE_OWNED = "BJ001"


async def declare_lane(conn: Conn, lane: str, actor: str) -> None:
    """Declare a division's lane as provisioning's; Conflict when another module (or an
    operator's generic entries) holds that name already."""
    try:
        await conn.execute(QUERIES["declare_lane"], {"lane": lane, "actor": actor})
    except psycopg.Error as exc:
        if exc.sqlstate != _LANE_OWNED:
            raise
        holder = exc.diag.message_hint or "another module"
        raise Conflict(
            f"its lane {lane} belongs to {holder}; choose another division name",
            field="division",
        ) from None


async def known_down(conn: Conn, name: str) -> bool:
    row = await _one(conn, "known_down", {"division": name})
    return bool(row and row["down"])


async def division_states(conn: Conn) -> list[tuple[str, bool]]:
    """Every division and whether it is known to be down now."""
    rows = await (await conn.execute(QUERIES["division_states"])).fetchall()
    return [(str(row["division"]), bool(row["down"])) for row in rows]


async def mark_down(conn: Conn, name: str, *, error: str, hold_s: float) -> None:
    await conn.execute(QUERIES["mark_down"], {"division": name, "error": error, "hold_s": hold_s})


async def mark_up(conn: Conn, name: str) -> None:
    await conn.execute(QUERIES["mark_up"], {"division": name})


async def division_has_plans(conn: Conn, name: str) -> bool:
    row = await _one(conn, "division_has_plans", {"division": name})
    return bool(row["found"])


# -- plans -----------------------------------------------------------------------------


def _plan_version(row: dict[str, Any]) -> PlanVersion:
    return PlanVersion(
        key=PlanKey(row["product_code"], row["intf_code"], row["division"], row["version"]),
        server_type=ServerType(row["server_type"]),
        command=row["command"],
        bind_method=row["bind_method"],
    )


async def current_plan_command(
    conn: Conn, *, product: str, intf_code: str, division: str
) -> dict[str, Any] | None:
    """The current version, position, command and BIND_METHOD, locked; None if none."""
    params = {"product": product, "intf_code": intf_code, "division": division}
    row: dict[str, Any] | None = await _one(conn, "current_plan_command", params)
    return row


async def insert_plan_command(
    conn: Conn, *, product: str, intf_code: str, division: str, position: int, actor: str
) -> bool:
    """False when a concurrent twin added it first."""
    row = await _one(
        conn,
        "insert_plan_command",
        {
            "product": product,
            "intf_code": intf_code,
            "division": division,
            "position": position,
            "actor": actor,
        },
    )
    return row is not None


async def insert_plan_version(
    conn: Conn, key: PlanKey, *, command: Any, bind_method: bool, actor: str
) -> None:
    await conn.execute(
        QUERIES["insert_plan_version"],
        {
            "product": key.product,
            "intf_code": key.intf_code,
            "division": key.division,
            "version": key.version,
            "command": Jsonb(command),
            "bind_method": bind_method,
            "actor": actor,
        },
    )


async def set_plan_command(conn: Conn, key: PlanKey, *, position: int, actor: str) -> None:
    await conn.execute(
        QUERIES["set_plan_command"],
        {
            "product": key.product,
            "intf_code": key.intf_code,
            "division": key.division,
            "version": key.version,
            "position": position,
            "actor": actor,
        },
    )


async def plan(conn: Conn, product: str, intf_code: str) -> list[PlanCommand]:
    rows = await _all(conn, "plan", {"product": product, "intf_code": intf_code})
    return [
        PlanCommand(
            plan=_plan_version(r),
            needs=frozenset(placeholders(ServerType(r["server_type"]), r["command"])),
        )
        for r in rows
    ]


async def plan_versions(conn: Conn, keys: Sequence[PlanKey]) -> dict[PlanKey, PlanVersion]:
    """The versions named, by key (a key with no version is absent from the answer)."""
    if not keys:
        return {}
    rows = await _all(
        conn,
        "plan_versions",
        {
            "products": [k.product for k in keys],
            "intf_codes": [k.intf_code for k in keys],
            "divisions": [k.division for k in keys],
            "versions": [k.version for k in keys],
        },
    )
    found = [_plan_version(row) for row in rows]
    return {v.key: v for v in found}


async def plan_intf_codes(conn: Conn, product: str) -> list[str]:
    return [r["intf_code"] for r in await _all(conn, "plan_intf_codes", {"product": product})]


async def plans(conn: Conn, *, product: str | None = None) -> list[dict[str, Any]]:
    """Plan commands at their current versions, of one product or all."""
    return await _all(conn, "plans", {"product": product})


#: From PostgreSQL 17 on, a partition shares its parent's identity column.
_PARTITION_IDENTITY = 170_000


async def ensure_receive_table(conn: Conn, product: str) -> None:
    """P1: the product's receive table, a partition of provisioning.receipts. Feeders
    insert into the partition itself; before PostgreSQL 17 a partition does not fill the
    parent's identity column, so there its `id` defaults to the identity's sequence."""
    name = sql.Identifier(f"receipts_{product.lower()}")
    await conn.execute(
        sql.SQL(
            "create table if not exists provisioning.{} partition of provisioning.receipts "
            "for values in ({})"
        ).format(name, sql.Literal(product))
    )
    if conn.info.server_version < _PARTITION_IDENTITY:
        await conn.execute(
            sql.SQL(
                "alter table provisioning.{} alter column id set default"
                " nextval(pg_get_serial_sequence('provisioning.receipts', 'id'))"
            ).format(name)
        )


# -- orders ----------------------------------------------------------------------------


def _order(row: dict[str, Any]) -> Order:
    return Order.model_validate({**row, "product": row["product_code"], "divisions": row["result"]})


async def order_by_key(conn: Conn, key: str) -> tuple[Order, str] | None:
    """The order first sent with this idempotency key, and its request's fingerprint."""
    row = await _one(conn, "order_by_key", {"key": key})
    return None if row is None else (_order(row), row["request_hash"])


async def order_by_wo_no(conn: Conn, wo_no: str) -> Order | None:
    row = await _one(conn, "order_by_wo_no", {"wo_no": wo_no})
    return None if row is None else _order(row)


async def next_wo_no(conn: Conn) -> str:
    row = await _one(conn, "next_wo_no")
    return str(row["wo_no"])


async def insert_order(
    conn: Conn,
    request: OrderRequest,
    *,
    wo_no: str,
    idempotency_key: str | None,
    fingerprint: str,
    channel: str,
    actor: str,
) -> bool:
    """False when the work order number or the idempotency key is taken already."""
    row = await _one(
        conn,
        "insert_order",
        {
            "wo_no": wo_no,
            "idempotency_key": idempotency_key,
            "request_hash": fingerprint,
            "product": request.product,
            "sa_id": request.sa_id,
            "cust_id": request.cust_id,
            "intf_code": request.intf_code.value,
            "bind_data": Jsonb(request.bind_data),
            "channel": channel,
            "actor": actor,
        },
    )
    return row is not None


async def upsert_service_record(conn: Conn, request: OrderRequest, *, wo_no: str) -> None:
    await conn.execute(
        QUERIES["upsert_service_record"],
        {
            "sa_id": request.sa_id,
            "cust_id": request.cust_id,
            "product": request.product,
            "status": request.intf_code.status_after,
            "attributes": Jsonb(request.bind_data),
            "wo_no": wo_no,
        },
    )


async def complete_order(conn: Conn, wo_no: str, result: dict[str, Route]) -> Order:
    row = await _one(conn, "complete_order", {"wo_no": wo_no, "result": Jsonb(result)})
    return _order(row)


async def complete_stranded_orders(conn: Conn, *, after_s: float, limit: int) -> list[str]:
    """Complete orders their process left accepted (see the query); returns their WO_NOs."""
    rows = await _all(conn, "complete_stranded_orders", {"after_s": after_s, "limit": limit})
    return [str(row["wo_no"]) for row in rows]


# -- receive tables --------------------------------------------------------------------


async def take_receipts(conn: Conn, product: str, limit: int) -> list[dict[str, Any]]:
    return await _all(conn, "take_receipts", {"product": product, "limit": limit})


async def finish_receipt(
    conn: Conn, product: str, receipt_id: int, *, status: str, error: str | None, wo_no: str | None
) -> None:
    await conn.execute(
        QUERIES["finish_receipt"],
        {"status": status, "error": error, "wo_no": wo_no, "product": product, "id": receipt_id},
    )


# -- the log and the buffers -----------------------------------------------------------


async def log_deliveries(conn: Conn, deliveries: Sequence[Delivery]) -> None:
    """P11, the one writer of the log, for direct and backup deliveries alike."""
    if not deliveries:
        return
    await conn.execute(
        QUERIES["log_deliveries"],
        {
            "entry_ids": [d.entry_id for d in deliveries],
            "divisions": [d.command.division for d in deliveries],
            "sa_ids": [d.command.sa_id for d in deliveries],
            "wo_nos": [d.command.wo_no for d in deliveries],
            "intf_codes": [d.command.intf_code for d in deliveries],
            "modes": [d.mode.value for d in deliveries],
            "attempts": [d.attempts for d in deliveries],
        },
        prepare=True,
    )


async def log_backup_deliveries(conn: Conn, entry_ids: Sequence[int]) -> None:
    """P11 for commands a backup daemon delivered, from their journal entries."""
    if not entry_ids:
        return
    await conn.execute(
        QUERIES["log_backup_deliveries"], {"entry_ids": list(entry_ids)}, prepare=True
    )


async def log_for(conn: Conn, *, sa_id: str | None, wo_no: str | None, limit: int) -> list[LogRow]:
    rows = await _all(conn, "log_for", {"sa_id": sa_id, "wo_no": wo_no, "limit": limit})
    return [LogRow.model_validate(row) for row in rows]


async def buffer(
    conn: Conn,
    lane: str,
    *,
    state: str | None,
    older_than_s: float | None,
    errcode: str | None = None,
    sa_id: str | None = None,
    limit: int,
) -> list[BufferRow]:
    rows = await _all(
        conn,
        "buffer",
        {
            "lane": lane,
            "state": state,
            "older_than_s": older_than_s,
            "errcode": errcode,
            "sa_id": sa_id,
            "limit": limit,
        },
    )
    return [BufferRow.model_validate(row) for row in rows]


async def command_exists(conn: Conn, entry_id: int) -> bool:
    row = await _one(conn, "command_exists", {"id": entry_id})
    return bool(row["found"])
