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
from bossa.errors import Conflict, InvalidInput, NotFound
from bossa.ledger import store
from bossa.ledger.models import (
    Account,
    AccountRequest,
    AccountStatus,
    AccountUpdate,
    Book,
    Recipe,
    to_minor_or_zero,
)

__all__ = [
    "account",
    "balances",
    "check",
    "close_account",
    "currency_exponent",
    "list_accounts",
    "open_account",
    "post",
    "set_account_status",
    "update_account",
]


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
    exponent = await store.currency_exponent(conn, currency)
    assert exponent is not None  # checked just above, in this transaction
    credit_limit = (
        None
        if request.credit_limit is None
        else to_minor_or_zero(
            request.credit_limit, exponent, field="credit_limit", currency=currency
        )
    )
    with user_errors():
        created = await store.create_account(
            conn,
            request.account,
            request.customer,
            currency,
            cycle=request.bill_cycle,
            grace_days=request.grace_days,
            credit_limit=credit_limit,
            profile=request.dunning_profile,
            actor=actor,
        )
    if created:
        await _sync_event(
            conn,
            "customers.account_opened",
            request.customer,
            {"account": request.account, "currency": currency, "cycle": request.bill_cycle},
        )
    return created


async def _sync_event(conn: Conn, name: str, customer: str, data: dict[str, Any]) -> None:
    """The account's business event for the rating pipeline, in this transaction (S1).
    Named `customers.*`: the operator opens and closes accounts through customers."""
    from bossa import sync  # sync's modules read the ledger: imported when used

    await sync.publish(conn, None, [sync.InternalEvent(name=name, customer_id=customer, data=data)])


async def currency_exponent(conn: Conn, currency: str) -> int:
    """How many decimals the currency has (KRW 0, USD 2, KWD 3); InvalidInput naming
    `currency` when the ledger does not know it."""
    exponent = await store.currency_exponent(conn, currency) if len(currency) == 3 else None
    if exponent is None:
        raise InvalidInput(
            f"unknown currency {currency!r} (an ISO 4217 code in ledger.currencies)",
            field="currency",
        )
    return exponent


async def list_accounts(
    conn: Conn,
    *,
    customer: str | None = None,
    status: AccountStatus | None = None,
    cycle: str | None = None,
    after: str | None = None,
    limit: int,
) -> list[Account]:
    """A page of accounts by id, those after `after`, at most `limit`."""
    return await store.list_accounts(
        conn,
        customer=customer,
        status=None if status is None else status.value,
        cycle=cycle,
        after=after,
        limit=limit,
    )


async def update_account(
    conn: Conn, account_id: str, change: AccountUpdate, *, actor: str
) -> Account:
    """Change an account's terms (those `change` names); NotFound for an unknown account,
    Conflict for a closed one."""
    found = await account(conn, account_id, lock=True)
    if found.status is AccountStatus.CLOSED:
        raise Conflict(f"account {account_id} is closed", field="account")
    set_limit = "credit_limit" in change.model_fields_set
    credit_limit = (
        None
        if change.credit_limit is None
        else to_minor_or_zero(
            change.credit_limit, found.exponent, field="credit_limit", currency=found.currency
        )
    )
    with user_errors():
        await store.update_account(
            conn,
            account_id,
            cycle=change.bill_cycle,
            grace_days=change.grace_days,
            set_limit=set_limit,
            credit_limit=credit_limit,
            profile=change.dunning_profile,
            actor=actor,
        )
    return await account(conn, account_id)


async def close_account(conn: Conn, account_id: str, *, actor: str) -> Account:
    """Close an account that is done with: it must bill nothing more (no contract of it
    still active or suspended) and hold nothing (no amount owed, no prepaid funds).
    Closing a closed account answers it again."""
    found = await account(conn, account_id, lock=True)
    if found.status is AccountStatus.CLOSED:
        return found
    live = [
        c.sa_id
        for c in await customers.contracts_of_account(conn, account_id)
        if c.status is not customers.ContractStatus.TERMINATED
    ]
    if live:
        raise Conflict(
            f"account {account_id} still bills contracts {', '.join(live[:5])}"
            + (" ..." if len(live) > 5 else "")
            + "; terminate them first",
            field="account",
        )
    books = await balances(conn, account_id)
    if books[Book.RECEIVABLE.value] or books[Book.PREPAID.value]:
        raise Conflict(
            f"account {account_id} still owes or holds money (receivable "
            f"{books[Book.RECEIVABLE.value]}, prepaid {books[Book.PREPAID.value]} minor "
            "units); settle it first",
            field="account",
        )
    await store.set_account_status(conn, account_id, AccountStatus.CLOSED, actor=actor)
    await _sync_event(conn, "customers.account_closed", found.customer_id, {"account": account_id})
    return await account(conn, account_id)


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
