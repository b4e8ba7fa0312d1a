"""The named queries of customers (sql/queries.sql), as functions that take a connection.

The async functions serve the service, inside its transactions or the caller's. The
sample's loader is synchronous because its callers (the tour, test fixtures, the
benchmarks) hold a plain psycopg connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from bossa.customers.models import Contract, ContractStatus
from bossa.db import Conn
from bossa.sql import load_queries

__all__ = [
    "QUERIES",
    "add_price",
    "add_sample",
    "change_contract",
    "close_price",
    "contract",
    "contract_listing",
    "contracts_of_account",
    "contracts_of_customer",
    "contracts_of_customers",
    "create_contract",
    "create_customer",
    "create_product",
    "customer",
    "customer_exists",
    "list_contracts",
    "list_customers",
    "list_products",
    "live_contracts",
    "open_price",
    "price_on",
    "prices_of",
    "product",
    "product_exists",
    "set_contract_status",
    "set_customer_status",
    "set_product_status",
    "terminate_contract",
    "update_customer",
    "update_product",
]

QUERIES = load_queries("bossa.customers", "sql/queries.sql")

SyncConn = psycopg.Connection[tuple[object, ...]]
Row = dict[str, Any]


async def _one(conn: Conn, name: str, params: dict[str, Any]) -> Row | None:
    row: Row | None = await (await conn.execute(QUERIES[name], params)).fetchone()
    return row


async def _all(conn: Conn, name: str, params: dict[str, Any]) -> list[Row]:
    rows: list[Row] = await (await conn.execute(QUERIES[name], params)).fetchall()
    return rows


async def product_exists(conn: Conn, code: str) -> bool:
    row = await _one(conn, "product_exists", {"code": code})
    return bool(row and row["found"])


async def customer_exists(conn: Conn, customer_id: str) -> bool:
    row = await _one(conn, "customer_exists", {"id": customer_id})
    return bool(row and row["found"])


def _contract(r: Row) -> Contract:
    return Contract(
        r["sa_id"],
        r["customer_id"],
        r["product_code"],
        ContractStatus(r["status"]),
        r["account_id"],
    )


async def contracts_of_customer(conn: Conn, customer_id: str) -> list[Contract]:
    return [
        _contract(r) for r in await _all(conn, "contracts_of_customer", {"customer": customer_id})
    ]


async def contracts_of_customers(conn: Conn, customer_ids: list[str]) -> dict[str, list[Contract]]:
    found: dict[str, list[Contract]] = {}
    for r in await _all(conn, "contracts_of_customers", {"customers": customer_ids}):
        found.setdefault(r["customer_id"], []).append(_contract(r))
    return found


async def contracts_of_account(conn: Conn, account_id: str) -> list[Contract]:
    return [_contract(r) for r in await _all(conn, "contracts_of_account", {"account": account_id})]


async def set_contract_status(
    conn: Conn, sa_id: str, status: ContractStatus, *, actor: str, reason: str | None = None
) -> bool:
    """False when there is no such contract."""
    params = {"sa_id": sa_id, "status": status.value, "actor": actor, "reason": reason}
    return await _one(conn, "set_contract_status", params) is not None


# -- catalogue ------------------------------------------------------------------------------


async def create_product(conn: Conn, code: str, name: str, description: str, *, actor: str) -> bool:
    """False when the code exists already."""
    params = {"code": code, "name": name, "description": description, "actor": actor}
    return await _one(conn, "create_product", params) is not None


async def product(conn: Conn, code: str, *, lock: bool = False) -> Row | None:
    return await _one(conn, "product_locked" if lock else "product", {"code": code})


async def list_products(
    conn: Conn, *, status: str | None, after: str | None, limit: int
) -> list[Row]:
    return await _all(conn, "list_products", {"status": status, "after": after, "limit": limit})


async def update_product(
    conn: Conn, code: str, *, name: str | None, description: str | None, actor: str
) -> bool:
    params = {"code": code, "name": name, "description": description, "actor": actor}
    return await _one(conn, "update_product", params) is not None


async def set_product_status(conn: Conn, code: str, status: str, *, actor: str) -> bool:
    params = {"code": code, "status": status, "actor": actor}
    return await _one(conn, "set_product_status", params) is not None


async def prices_of(conn: Conn, codes: Sequence[str]) -> list[Row]:
    return await _all(conn, "prices_of_products", {"codes": list(codes)})


async def open_price(conn: Conn, code: str, kind: str) -> Row | None:
    """The latest version of the product's price of this kind."""
    return await _one(conn, "open_price", {"code": code, "kind": kind})


async def price_on(conn: Conn, code: str, kind: str, day: date) -> Row | None:
    return await _one(conn, "price_on", {"code": code, "kind": kind, "day": day})


async def close_price(conn: Conn, price_id: int, day: date) -> bool:
    return await _one(conn, "close_price", {"id": price_id, "day": day}) is not None


async def add_price(
    conn: Conn,
    code: str,
    *,
    kind: str,
    period: str | None,
    amount: int,
    currency: str,
    valid_from: date,
    valid_to: date | None = None,
    actor: str,
) -> int:
    row = await _one(
        conn,
        "add_price",
        {
            "code": code,
            "kind": kind,
            "period": period,
            "amount": amount,
            "currency": currency,
            "valid_from": valid_from,
            "valid_to": valid_to,
            "actor": actor,
        },
    )
    assert row is not None
    return int(row["id"])


# -- customers ------------------------------------------------------------------------------


async def create_customer(
    conn: Conn, customer_id: str, name: str, msisdn: str | None, email: str | None, *, actor: str
) -> bool:
    params = {"id": customer_id, "name": name, "msisdn": msisdn, "email": email, "actor": actor}
    return await _one(conn, "create_customer", params) is not None


async def customer(conn: Conn, customer_id: str, *, lock: bool = False) -> Row | None:
    return await _one(conn, "customer_locked" if lock else "customer", {"id": customer_id})


async def list_customers(
    conn: Conn, *, status: str | None, msisdn: str | None, after: str | None, limit: int
) -> list[Row]:
    params = {"status": status, "msisdn": msisdn, "after": after, "limit": limit}
    return await _all(conn, "list_customers", params)


async def update_customer(
    conn: Conn,
    customer_id: str,
    *,
    name: str | None,
    set_msisdn: bool,
    msisdn: str | None,
    set_email: bool,
    email: str | None,
    actor: str,
) -> bool:
    params = {
        "id": customer_id,
        "name": name,
        "set_msisdn": set_msisdn,
        "msisdn": msisdn,
        "set_email": set_email,
        "email": email,
        "actor": actor,
    }
    return await _one(conn, "update_customer", params) is not None


async def set_customer_status(conn: Conn, customer_id: str, status: str, *, actor: str) -> bool:
    params = {"id": customer_id, "status": status, "actor": actor}
    return await _one(conn, "set_customer_status", params) is not None


async def live_contracts(conn: Conn, customer_id: str) -> int:
    row = await _one(conn, "live_contracts_of_customer", {"customer": customer_id})
    return 0 if row is None else int(row["live"])


# -- contracts ------------------------------------------------------------------------------


async def create_contract(
    conn: Conn,
    sa_id: str,
    *,
    customer: str,
    account: str,
    product: str,
    start_date: date,
    actor: str,
) -> bool:
    params = {
        "sa_id": sa_id,
        "customer": customer,
        "account": account,
        "product": product,
        "start_date": start_date,
        "actor": actor,
    }
    return await _one(conn, "create_contract", params) is not None


async def contract(conn: Conn, sa_id: str, *, lock: bool = False) -> Row | None:
    return await _one(conn, "contract_locked" if lock else "contract", {"sa_id": sa_id})


async def list_contracts(
    conn: Conn,
    *,
    customer: str | None,
    account: str | None,
    product: str | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> list[Row]:
    params = {
        "customer": customer,
        "account": account,
        "product": product,
        "status": status,
        "after": after,
        "limit": limit,
    }
    return await _all(conn, "list_contracts", params)


async def terminate_contract(
    conn: Conn, sa_id: str, *, end_date: date, reason: str | None, actor: str
) -> bool:
    params = {"sa_id": sa_id, "end_date": end_date, "reason": reason, "actor": actor}
    return await _one(conn, "terminate_contract", params) is not None


async def change_contract(
    conn: Conn, sa_id: str, *, product: str | None, account: str | None, actor: str
) -> bool:
    params = {"sa_id": sa_id, "product": product, "account": account, "actor": actor}
    return await _one(conn, "change_contract", params) is not None


# -- the sample -----------------------------------------------------------------------------


def add_sample(
    conn: SyncConn,
    products: Sequence[tuple[str, str, int, str]],
    customers: Sequence[tuple[str, str, str]],
    accounts: Sequence[tuple[str, str]],
    contracts: Sequence[tuple[str, str, str, str, date]],
) -> None:
    with conn.cursor() as cur:
        cur.executemany(QUERIES["add_product"], products)
        cur.executemany(QUERIES["add_customer"], customers)
        cur.execute(
            QUERIES["add_sample_accounts"], ([a for a, _ in accounts], [c for _, c in accounts])
        )
        cur.executemany(QUERIES["add_contract"], contracts)


def contract_listing(conn: SyncConn) -> list[tuple[str, str, str, str, str]]:
    """(SA_ID, CUST_ID, customer, product code, product name) of every contract."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(QUERIES["contract_listing"]).fetchall()
    return [(str(a), str(b), str(c), str(d), str(e)) for a, b, c, d, e in rows]
