"""The catalogue side of provisioning: divisions (P7) and provisioning plans.

A plan says, for a product and an order type (INTF_CODE), which divisions are
provisioned and with what command template. Templates are checked when they are added
(shape, placeholders), so a bad one is refused then, not at 3 a.m. in a daemon.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from bossa.db import Conn, Pool
from bossa.errors import InvalidInput, NotFound
from bossa.provisioning.adapters.base import Division, ServerType, placeholders
from bossa.sql import load_queries

__all__ = [
    "PlanCommand",
    "add_division",
    "add_plan_command",
    "ensure_receive_table",
    "get_division",
    "list_divisions",
    "plan_for",
    "update_division",
]

QUERIES = load_queries("bossa.provisioning", "sql/queries.sql")

DIVISION_FIELDS = (
    "server_ip",
    "server_port",
    "server_url",
    "server_name",
    "server_type",
    "server_used",
    "credentials",
    "timeout_ms",
)


@dataclass(frozen=True)
class PlanCommand:
    division: str
    server_type: ServerType
    command: Any
    bind_method: bool
    needs: frozenset[str]


def division_from_row(row: dict[str, Any]) -> Division:
    return Division(
        name=row["division"],
        server_type=ServerType(row["server_type"]),
        server_ip=row["server_ip"],
        server_port=row["server_port"],
        server_url=row["server_url"],
        server_name=row["server_name"],
        server_used=row["server_used"],
        credentials=dict(row["credentials"] or {}),
        timeout_s=row["timeout_ms"] / 1000.0,
    )


def _check_division(values: dict[str, Any]) -> dict[str, Any]:
    unknown = set(values) - set(DIVISION_FIELDS)
    if unknown:
        raise InvalidInput(
            f"unknown division field(s) {sorted(unknown)}; known: {', '.join(DIVISION_FIELDS)}",
            field=sorted(unknown)[0],
        )
    if "server_type" in values:
        try:
            values["server_type"] = ServerType(values["server_type"]).value
        except ValueError:
            known = ", ".join(t.value for t in ServerType)
            raise InvalidInput(f"must be one of {known}", field="server_type") from None
    if "server_port" in values and values["server_port"] is not None:
        port = values["server_port"]
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise InvalidInput("must be a number from 1 to 65535", field="server_port")
    if "credentials" in values:
        creds = values["credentials"]
        if not isinstance(creds, dict) or not all(isinstance(v, str) for v in creds.values()):
            raise InvalidInput("must be an object of strings", field="credentials")
        values["credentials"] = Jsonb(creds)
    return values


async def add_division(pool: Pool, name: str, values: dict[str, Any], *, actor: str) -> None:
    if (
        not isinstance(name, str)
        or not name
        or not name.replace("_", "").isalnum()
        or not name[0].isalpha()
        or name != name.upper()
    ):
        raise InvalidInput(
            "must be upper-case letters, digits and _ (e.g. AAA, HDS)", field="division"
        )
    if "server_type" not in values:
        raise InvalidInput("is required", field="server_type")
    values = _check_division(dict(values))
    columns = ["division", *values, "created_by", "updated_by"]
    params = {"division": name, **values, "created_by": actor, "updated_by": actor}
    statement = sql.SQL(
        "insert into provisioning.divisions ({}) values ({}) "
        "on conflict (division) do nothing returning division"
    ).format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
    )
    async with pool.connection() as conn:
        row = await (await conn.execute(statement, params)).fetchone()
    if row is None:
        raise InvalidInput(
            f"division {name} exists already; change it with `set`", field="division"
        )


async def update_division(pool: Pool, name: str, values: dict[str, Any], *, actor: str) -> None:
    values = _check_division(dict(values))
    if not values:
        raise InvalidInput("nothing to change", field="division")
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in values
    )
    statement = sql.SQL(
        "update provisioning.divisions set {}, updated_at = now(), "
        "updated_by = %(actor)s where division = %(division)s"
    ).format(assignments)
    async with pool.connection() as conn:
        cursor = await conn.execute(statement, {**values, "actor": actor, "division": name})
        if cursor.rowcount == 0:
            raise NotFound(f"no division {name}", field="division")


async def get_division(conn: Conn, name: str) -> Division:
    row = await (await conn.execute(QUERIES["division"], {"division": name})).fetchone()
    if row is None:
        raise NotFound(f"no division {name}", field="division")
    return division_from_row(row)


async def list_divisions(pool: Pool) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        rows = await (await conn.execute(QUERIES["divisions"])).fetchall()
    for row in rows:
        row["credentials"] = dict.fromkeys(row["credentials"] or {}, "***")
    return rows


async def add_plan_command(
    pool: Pool,
    product: str,
    intf_code: str,
    division: str,
    command: Any,
    *,
    position: int = 0,
    bind_method: bool = True,
    actor: str,
) -> None:
    async with pool.connection() as conn, conn.transaction():
        target = await get_division(conn, division)
        placeholders(target.server_type, command)  # refuses a template of the wrong shape
        exists = await (await conn.execute(QUERIES["product"], {"product": product})).fetchone()
        if exists is None:
            raise NotFound(f"no product {product}", field="product")
        await ensure_receive_table(conn, product)
        await conn.execute(
            QUERIES["upsert_plan_command"],
            {
                "product": product,
                "intf_code": intf_code,
                "division": division,
                "position": position,
                "command": Jsonb(command),
                "bind_method": bind_method,
                "actor": actor,
            },
        )


async def plan_for(conn: Conn, product: str, intf_code: str) -> list[PlanCommand]:
    """The plan's commands for one order type, refusing unknown products and order types."""
    if not (await (await conn.execute(QUERIES["product"], {"product": product})).fetchone()):
        raise NotFound(f"no product {product}", field="product")
    rows = await (
        await conn.execute(QUERIES["plan"], {"product": product, "intf_code": intf_code})
    ).fetchall()
    if not rows:
        codes = await (
            await conn.execute(QUERIES["plan_intf_codes"], {"product": product})
        ).fetchall()
        known = ", ".join(r["intf_code"] for r in codes) or "none"
        raise InvalidInput(
            f"product {product} has no plan for INTF_CODE {intf_code!r} (it has: {known})",
            field="intf_code",
        )
    return [
        PlanCommand(
            r["division"],
            ServerType(r["server_type"]),
            r["command"],
            r["bind_method"],
            frozenset(placeholders(ServerType(r["server_type"]), r["command"])),
        )
        for r in rows
    ]


async def ensure_receive_table(conn: Conn, product: str) -> None:
    """P1: the product's receive table, a partition of provisioning.receipts."""
    name = f"receipts_{product.lower()}"
    await conn.execute(
        sql.SQL(
            "create table if not exists provisioning.{} partition of provisioning.receipts "
            "for values in ({})"
        ).format(sql.Identifier(name), sql.Literal(product))
    )


def describe(command: Any) -> str:
    return command if isinstance(command, str) else json.dumps(command, ensure_ascii=False)
