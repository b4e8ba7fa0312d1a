"""The named queries of customers (sql/queries.sql), as functions that take a connection.

The async functions serve the other modules, inside their transactions. The sample's
loader is synchronous because its callers (the tour, test fixtures, the benchmarks) hold
a plain psycopg connection.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.rows import tuple_row

from bossa.customers.models import Contract, ContractStatus
from bossa.db import Conn
from bossa.sql import load_queries

__all__ = [
    "QUERIES",
    "add_sample",
    "contract_listing",
    "contracts_of_customer",
    "customer_exists",
    "product_exists",
    "set_contract_status",
]

QUERIES = load_queries("bossa.customers", "sql/queries.sql")

SyncConn = psycopg.Connection[tuple[object, ...]]


async def product_exists(conn: Conn, code: str) -> bool:
    row = await (await conn.execute(QUERIES["product_exists"], {"code": code})).fetchone()
    return bool(row and row["found"])


async def customer_exists(conn: Conn, customer_id: str) -> bool:
    row = await (await conn.execute(QUERIES["customer_exists"], {"id": customer_id})).fetchone()
    return bool(row and row["found"])


async def contracts_of_customer(conn: Conn, customer_id: str) -> list[Contract]:
    rows = await (
        await conn.execute(QUERIES["contracts_of_customer"], {"customer": customer_id})
    ).fetchall()
    return [
        Contract(r["sa_id"], r["customer_id"], r["product_code"], ContractStatus(r["status"]))
        for r in rows
    ]


async def set_contract_status(
    conn: Conn, sa_id: str, status: ContractStatus, *, actor: str
) -> bool:
    """False when there is no such contract."""
    row = await (
        await conn.execute(
            QUERIES["set_contract_status"],
            {"sa_id": sa_id, "status": status.value, "actor": actor},
        )
    ).fetchone()
    return row is not None


def add_sample(
    conn: SyncConn,
    products: Sequence[tuple[str, str, int, str]],
    customers: Sequence[tuple[str, str, str]],
    contracts: Sequence[tuple[str, str, str]],
) -> None:
    with conn.cursor() as cur:
        cur.executemany(QUERIES["add_product"], products)
        cur.executemany(QUERIES["add_customer"], customers)
        cur.executemany(QUERIES["add_contract"], contracts)


def contract_listing(conn: SyncConn) -> list[tuple[str, str, str, str, str]]:
    """(SA_ID, CUST_ID, customer, product code, product name) of every contract."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(QUERIES["contract_listing"]).fetchall()
    return [(str(a), str(b), str(c), str(d), str(e)) for a, b, c, d, e in rows]
