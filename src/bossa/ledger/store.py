"""Accounts, balanced postings and balances: the online books.

Every change goes through `ledger.post`, a SQL function that refuses postings that do
not sum to zero and moves `ledger.balances` in the same transaction, so the invariants
(`check()`) hold at every commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bossa.db import Conn
from bossa.errors import InvalidInput, NotFound
from bossa.sql import load_queries

__all__ = ["QUERIES", "Account", "account", "balances", "check", "create_account", "post"]

QUERIES = load_queries("bossa.ledger", "sql/queries.sql")

# Double-entry shapes of each movement, positive = debit.
DEPOSIT = (("cash", 1), ("prepaid", -1))  # money in, owed back as service
BILL = (("receivable", 1), ("revenue", -1))  # charges billed
BILL_FROM_PREPAID = (("prepaid", 1), ("receivable", -1))  # a bill paid from prepaid funds
WRITEOFF = (("cash", 1), ("receivable", -1))  # arrears paid off


@dataclass(frozen=True)
class Account:
    id: str
    customer_id: str
    currency: str
    exponent: int
    status: str
    grace_days: int
    bill_cycle: str


async def account(conn: Conn, account_id: str, *, lock: bool = False) -> Account:
    # NO KEY UPDATE: it serialises payments on the account without waiting for the
    # key-share locks a bill-run chunk's foreign keys hold on it (bench/billing: 22 s).
    query = QUERIES["account"] + (" for no key update of a" if lock else "")
    row = await (await conn.execute(query.encode(), {"account": account_id})).fetchone()
    if row is None:
        raise NotFound(f"no account {account_id}", field="account")
    return Account(
        row["id"],
        row["customer_id"],
        row["currency"],
        row["exponent"],
        row["status"],
        row["grace_days"],
        row["bill_cycle"],
    )


async def create_account(
    conn: Conn,
    account_id: str,
    customer_id: str,
    currency: str,
    *,
    cycle: str = "MONTHLY",
    grace_days: int = 14,
    actor: str,
) -> bool:
    if not account_id:
        raise InvalidInput("must not be empty", field="account")
    known = await (
        await conn.execute(QUERIES["account_refs"], {"customer": customer_id, "currency": currency})
    ).fetchone()
    assert known is not None
    if not known["customer"]:
        raise NotFound(f"no customer {customer_id}", field="customer")
    if not known["currency"]:
        raise InvalidInput(
            f"unknown currency {currency!r} (an ISO 4217 code in ledger.currencies)",
            field="currency",
        )
    row = await (
        await conn.execute(
            QUERIES["create_account"],
            {
                "account": account_id,
                "customer": customer_id,
                "currency": currency,
                "cycle": cycle,
                "grace_days": grace_days,
                "actor": actor,
            },
        )
    ).fetchone()
    return row is not None


async def post(
    conn: Conn,
    account_id: str,
    kind: str,
    amount: int,
    shape: tuple[tuple[str, int], ...],
    *,
    actor: str,
    key: str | None = None,
    reference: str | None = None,
) -> int:
    """Post `amount` in the given double-entry shape; returns the transaction id."""
    row = await (
        await conn.execute(
            QUERIES["post"],
            {
                "account": account_id,
                "kind": kind,
                "amount": amount,
                "books": [book for book, _ in shape],
                "amounts": [sign * amount for _, sign in shape],
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
    found = {"prepaid": 0, "receivable": 0, "cash": 0, "revenue": 0}
    found.update({row["book"]: int(row["amount"]) for row in rows})
    return found


def available(books: dict[str, int]) -> int:
    """Funds the customer can spend: prepaid (a credit, so negated) less what is owed."""
    return -books["prepaid"] - books["receivable"]


async def check(conn: Conn) -> dict[str, list[dict[str, Any]]]:
    """The ledger's invariants: balanced transactions, balances equal to postings."""
    unbalanced = await (await conn.execute(QUERIES["check_transactions"])).fetchall()
    drifted = await (await conn.execute(QUERIES["check_balances"])).fetchall()
    return {"unbalanced_transactions": unbalanced, "balances_off": drifted}
