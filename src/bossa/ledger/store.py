"""The ledger's named queries (sql/queries.sql), as functions that take a connection.

Every change to the books goes through `ledger.post`, a SQL function that refuses
postings that do not sum to zero and moves `ledger.balances` in the same transaction,
so the invariants (`check_*`) hold at every commit.
"""

from __future__ import annotations

from typing import Any

from bossa.db import Conn
from bossa.ledger.models import Account, AccountStatus, Recipe
from bossa.sql import load_queries

__all__ = [
    "QUERIES",
    "account",
    "balances",
    "check_balances",
    "check_transactions",
    "create_account",
    "currency_exists",
    "currency_exponent",
    "list_accounts",
    "post",
    "set_account_status",
    "update_account",
]

QUERIES = load_queries("bossa.ledger", "sql/queries.sql")


async def account(conn: Conn, account_id: str, *, lock: bool = False) -> Account | None:
    query = QUERIES["account_locked" if lock else "account"]
    row = await (await conn.execute(query, {"account": account_id})).fetchone()
    if row is None:
        return None
    return _account(row)


def _account(row: dict[str, Any]) -> Account:
    return Account(
        row["id"],
        row["customer_id"],
        row["currency"],
        row["exponent"],
        AccountStatus(row["status"]),
        row["grace_days"],
        row["bill_cycle"],
        row["credit_limit"],
        row["dunning_profile"],
    )


async def list_accounts(
    conn: Conn,
    *,
    customer: str | None,
    status: str | None,
    cycle: str | None,
    after: str | None,
    limit: int,
) -> list[Account]:
    params = {
        "customer": customer,
        "status": status,
        "cycle": cycle,
        "after": after,
        "limit": limit,
    }
    rows = await (await conn.execute(QUERIES["list_accounts"], params)).fetchall()
    return [_account(row) for row in rows]


async def update_account(
    conn: Conn,
    account_id: str,
    *,
    cycle: str | None,
    grace_days: int | None,
    set_limit: bool,
    credit_limit: int | None,
    profile: str | None,
    actor: str,
) -> bool:
    """False when there is no such account."""
    params = {
        "account": account_id,
        "cycle": cycle,
        "grace_days": grace_days,
        "set_limit": set_limit,
        "credit_limit": credit_limit,
        "profile": profile,
        "actor": actor,
    }
    row = await (await conn.execute(QUERIES["update_account"], params)).fetchone()
    return row is not None


async def currency_exponent(conn: Conn, currency: str) -> int | None:
    row = await (
        await conn.execute(QUERIES["currency_exponent"], {"currency": currency})
    ).fetchone()
    return None if row is None else int(row["exponent"])


async def currency_exists(conn: Conn, currency: str) -> bool:
    row = await (await conn.execute(QUERIES["currency_exists"], {"currency": currency})).fetchone()
    return bool(row and row["found"])


async def create_account(
    conn: Conn,
    account_id: str,
    customer_id: str,
    currency: str,
    *,
    cycle: str,
    grace_days: int,
    credit_limit: int | None,
    profile: str,
    actor: str,
) -> bool:
    """False when the account exists already."""
    row = await (
        await conn.execute(
            QUERIES["create_account"],
            {
                "account": account_id,
                "customer": customer_id,
                "currency": currency,
                "cycle": cycle,
                "grace_days": grace_days,
                "credit_limit": credit_limit,
                "profile": profile,
                "actor": actor,
            },
        )
    ).fetchone()
    return row is not None


async def set_account_status(
    conn: Conn, account_id: str, status: AccountStatus, *, actor: str
) -> bool:
    """False when there is no such account."""
    row = await (
        await conn.execute(
            QUERIES["set_account_status"],
            {"account": account_id, "status": status.value, "actor": actor},
        )
    ).fetchone()
    return row is not None


async def post(
    conn: Conn,
    account_id: str,
    recipe: Recipe,
    amount: int,
    *,
    actor: str,
    key: str | None,
    reference: str | None,
) -> int:
    books, amounts = recipe.postings(amount)
    row = await (
        await conn.execute(
            QUERIES["post"],
            {
                "account": account_id,
                "kind": recipe.kind,
                "amount": amount,
                "books": books,
                "amounts": amounts,
                "key": key,
                "reference": reference,
                "actor": actor,
            },
        )
    ).fetchone()
    assert row is not None
    return int(row["id"])


async def balances(conn: Conn, account_id: str) -> dict[str, int]:
    rows = await (await conn.execute(QUERIES["balances"], {"account": account_id})).fetchall()
    return {row["book"]: int(row["amount"]) for row in rows}


async def check_transactions(conn: Conn) -> list[dict[str, Any]]:
    return await (await conn.execute(QUERIES["check_transactions"])).fetchall()


async def check_balances(conn: Conn) -> list[dict[str, Any]]:
    return await (await conn.execute(QUERIES["check_balances"])).fetchall()
