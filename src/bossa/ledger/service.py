"""What the ledger does for the other modules: open an account, post a movement, read
balances, set an account's service state, check the invariants.

Every function takes the caller's connection and joins its transaction: billing takes a
payment, posts it and queues a restore in one transaction of its own, and the ledger
never opens one of its own underneath.
"""

from __future__ import annotations

from typing import Any

from bossa import customers
from bossa.db import Conn, user_errors
from bossa.errors import InvalidInput, NotFound
from bossa.ledger import store
from bossa.ledger.models import Account, AccountRequest, AccountStatus, Book, Recipe

__all__ = ["account", "balances", "check", "open_account", "post", "set_account_status"]


async def open_account(conn: Conn, request: AccountRequest, *, actor: str) -> bool:
    """Open a billing account; False when it exists already (a replay changes nothing)."""
    if not request.account:
        raise InvalidInput("must not be empty", field="account")
    currency = request.currency.upper()
    if not await customers.customer_exists(conn, request.customer):
        raise NotFound(f"no customer {request.customer}", field="customer")
    if not await store.currency_exists(conn, currency):
        raise InvalidInput(
            f"unknown currency {request.currency!r} (an ISO 4217 code in ledger.currencies)",
            field="currency",
        )
    with user_errors():
        return await store.create_account(
            conn,
            request.account,
            request.customer,
            currency,
            cycle=request.bill_cycle,
            grace_days=request.grace_days,
            actor=actor,
        )


async def account(conn: Conn, account_id: str, *, lock: bool = False) -> Account:
    """The account; NotFound naming it when there is none. `lock` serialises payments on it
    until the caller's transaction ends."""
    found = await store.account(conn, account_id, lock=lock)
    if found is None:
        raise NotFound(f"no account {account_id}", field="account")
    return found


async def balances(conn: Conn, account_id: str) -> dict[str, int]:
    """Every book of the account, zero where nothing was ever posted."""
    found = {book.value: 0 for book in Book}
    found.update(await store.balances(conn, account_id))
    return found


async def post(
    conn: Conn,
    account_id: str,
    recipe: Recipe,
    amount: int,
    *,
    actor: str,
    key: str | None = None,
    reference: str | None = None,
) -> int:
    """Post `amount` (minor units) with the movement's recipe; returns the transaction id."""
    return await store.post(
        conn, account_id, recipe, amount, actor=actor, key=key, reference=reference
    )


async def set_account_status(
    conn: Conn, account_id: str, status: AccountStatus, *, actor: str
) -> None:
    if not await store.set_account_status(conn, account_id, status, actor=actor):
        raise NotFound(f"no account {account_id}", field="account")


async def check(conn: Conn) -> dict[str, list[dict[str, Any]]]:
    """The ledger's invariants: balanced transactions, balances equal to postings."""
    return {
        "unbalanced_transactions": await store.check_transactions(conn),
        "balances_off": await store.check_balances(conn),
    }
