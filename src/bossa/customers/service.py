"""The operator's own data, one function per use case: the catalogue (products and their
versioned prices), customers, their billing accounts' terms, and contracts through their
lifecycle (new, change of product, suspend, resume, terminate).

Two kinds of function. Those other modules call (`product_exists`, `customer_exists`,
`contracts_of_customer(s)`, `contracts_of_account`, `set_contract_status`) take the caller's
connection and join its transaction: billing suspends a contract inside its own. The
operator's use cases take the pool and own their transaction.

A contract's lifecycle change and its provisioning order commit together: the change is
recorded and the order accepted (`provisioning.accept`, which records the order and
routes each division's command) in one transaction, and the direct calls to the servers
are made after it commits (`provisioning.deliver_direct`), exactly as `provisioning.submit`
does; a process that dies in between leaves the commands to the backup daemons. A product
with no provisioning plan for the change gets no order: the change is recorded, the
answer says why no order was made, and a warning is logged and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from bossa import ledger
from bossa.customers import metrics, store
from bossa.customers.models import (
    AccountView,
    Contract,
    ContractChange,
    ContractRequest,
    ContractStatus,
    ContractView,
    CustomerRequest,
    CustomerStatus,
    CustomerUpdate,
    CustomerView,
    Lifecycle,
    Page,
    PriceKind,
    PriceRequest,
    PriceView,
    ProductChange,
    ProductRequest,
    ProductStatus,
    ProductUpdate,
    ProductView,
    TermsChange,
    check_key,
    contract_status,
    page_limit,
)
from bossa.db import Conn, Pool, user_errors
from bossa.errors import Conflict, InvalidInput, NotFound
from bossa.logs import get_logger

if TYPE_CHECKING:
    from bossa.journal import Journal
    from bossa.provisioning import Accepted, Deliverer

__all__ = [
    "change_contract_account",
    "change_price",
    "change_product",
    "close_account",
    "close_customer",
    "contract",
    "contracts_of_account",
    "contracts_of_customer",
    "contracts_of_customers",
    "create_contract",
    "create_customer",
    "create_product",
    "customer",
    "customer_exists",
    "list_accounts",
    "list_contracts",
    "list_customers",
    "list_products",
    "open_account",
    "product",
    "product_exists",
    "resume_contract",
    "retire_product",
    "set_contract_status",
    "suspend_contract",
    "terminate_contract",
    "update_account",
    "update_customer",
    "update_product",
]

log = get_logger("bossa.customers")


# -- what other modules ask (join the caller's transaction) --------------------------------


async def product_exists(conn: Conn, code: str) -> bool:
    return await store.product_exists(conn, code)


async def customer_exists(conn: Conn, customer_id: str) -> bool:
    return await store.customer_exists(conn, customer_id)


async def contracts_of_customer(conn: Conn, customer_id: str) -> list[Contract]:
    """The customer's contracts, terminated ones included (by SA_ID); none for an
    unknown customer."""
    return await store.contracts_of_customer(conn, customer_id)


async def contracts_of_customers(conn: Conn, customer_ids: list[str]) -> dict[str, list[Contract]]:
    """Several customers' contracts in one query (by SA_ID); an unknown customer has no
    entry."""
    return await store.contracts_of_customers(conn, customer_ids)


async def contracts_of_account(conn: Conn, account_id: str) -> list[Contract]:
    """The contracts billed to the account, terminated ones included (by SA_ID)."""
    return await store.contracts_of_account(conn, account_id)


async def set_contract_status(
    conn: Conn,
    sa_id: str,
    status: ContractStatus | str,
    *,
    actor: str,
    reason: str | None = None,
) -> None:
    """Set a contract's service state, recording who did it and why; NotFound for an
    unknown SA_ID."""
    found = await store.set_contract_status(
        conn, sa_id, contract_status(status), actor=actor, reason=reason
    )
    if not found:
        raise NotFound(f"no contract {sa_id}", field="sa_id")
    # Billing suspends and restores contracts here (dunning, a payment): the pipeline
    # hears of it as of a suspension or resumption by hand.
    await _publish(conn, None, sa_id, "status_changed")


# -- helpers ------------------------------------------------------------------------------


def _page(items: list[Any], key: str, limit: int) -> dict[str, Any]:
    """A page: `next` is the last key when the page is full (there may be more)."""
    last = getattr(items[-1], key) if items and len(items) == limit else None
    return {"items": items, "next": last}


def _after(after: str | None) -> str | None:
    return None if after is None else check_key(after, "after")


async def _price_views(conn: Conn, rows: list[dict[str, Any]]) -> list[PriceView]:
    exponents: dict[str, int] = {}
    views = []
    for r in rows:
        currency = r["currency"].strip()
        if currency not in exponents:
            exponents[currency] = await ledger.currency_exponent(conn, currency)
        views.append(
            PriceView(
                id=r["id"],
                product_code=r["product_code"],
                kind=r["kind"],
                period=r["period"],
                amount=ledger.format_minor(r["amount"], exponents[currency]),
                amount_minor=r["amount"],
                currency=currency,
                valid_from=r["valid_from"],
                valid_to=r["valid_to"],
                created_at=r["created_at"],
                created_by=r["created_by"],
            )
        )
    return views


async def _product_views(conn: Conn, rows: list[dict[str, Any]]) -> list[ProductView]:
    prices = await _price_views(conn, await store.prices_of(conn, [r["code"] for r in rows]))
    by_code: dict[str, list[PriceView]] = {}
    for price in prices:
        by_code.setdefault(price.product_code, []).append(price)
    return [ProductView(**r, prices=by_code.get(r["code"], [])) for r in rows]


async def _product_row(conn: Conn, code: str, *, lock: bool = False) -> dict[str, Any]:
    found = await store.product(conn, check_key(code, "product"), lock=lock)
    if found is None:
        raise NotFound(f"no product {code}", field="product")
    return found


async def _product_view(conn: Conn, code: str) -> ProductView:
    return (await _product_views(conn, [await _product_row(conn, code)]))[0]


async def _minor(conn: Conn, amount: object, currency: str) -> int:
    exponent = await ledger.currency_exponent(conn, currency)
    return ledger.to_minor_or_zero(amount, exponent, field="amount", currency=currency)


# -- the catalogue (TMF620) -----------------------------------------------------------------


async def create_product(pool: Pool, request: ProductRequest, *, actor: str) -> ProductView:
    """A new product with its first prices; Conflict when the code exists."""
    kinds = [p.kind for p in request.prices]
    if len(kinds) != len(set(kinds)):
        raise InvalidInput(
            "give at most one price of each kind; later versions are price changes",
            field="prices",
        )
    async with pool.connection() as conn, conn.transaction():
        with user_errors():
            created = await store.create_product(
                conn, request.code, request.name, request.description, actor=actor
            )
        if not created:
            raise Conflict(f"product {request.code} exists already", field="code")
        for price in request.prices:
            await _add_price(conn, request.code, price, actor=actor)
        return await _product_view(conn, request.code)


async def _add_price(conn: Conn, code: str, price: PriceRequest, *, actor: str) -> None:
    currency = price.currency.upper()
    amount = await _minor(conn, price.amount, currency)
    with user_errors():
        await store.add_price(
            conn,
            code,
            kind=price.kind.value,
            period=None if price.period is None else price.period.value,
            amount=amount,
            currency=currency,
            valid_from=price.valid_from,
            actor=actor,
        )


async def product(pool: Pool, code: str) -> ProductView:
    async with pool.connection() as conn:
        return await _product_view(conn, code)


async def list_products(
    pool: Pool, *, status: ProductStatus | None = None, after: str | None = None, limit: int
) -> Page[ProductView]:
    async with pool.connection() as conn:
        rows = await store.list_products(
            conn,
            status=None if status is None else status.value,
            after=_after(after),
            limit=page_limit(limit),
        )
        views = await _product_views(conn, rows)
    return Page[ProductView].model_validate(_page(views, "code", limit))


async def update_product(
    pool: Pool, code: str, change: ProductUpdate, *, actor: str
) -> ProductView:
    async with pool.connection() as conn, conn.transaction():
        await _product_row(conn, code, lock=True)
        await store.update_product(
            conn, code, name=change.name, description=change.description, actor=actor
        )
        return await _product_view(conn, code)


async def retire_product(pool: Pool, code: str, *, actor: str) -> ProductView:
    """A retired product takes no new contracts; those it has run on. Retiring a retired
    product answers it again."""
    async with pool.connection() as conn, conn.transaction():
        row = await _product_row(conn, code, lock=True)
        if row["status"] != ProductStatus.RETIRED.value:
            await store.set_product_status(conn, code, ProductStatus.RETIRED.value, actor=actor)
        return await _product_view(conn, code)


async def change_price(pool: Pool, code: str, price: PriceRequest, *, actor: str) -> ProductView:
    """A price change from `price.valid_from` (D): the version of its kind open on D is
    closed at D and the new one opens from D, so days before D keep the old price. The
    first price of a kind simply opens. D must come after the latest version's start (a
    version is never shortened to nothing or rewritten); bills already issued are not
    re-billed (docs/catalogue-and-customers.md)."""
    async with pool.connection() as conn, conn.transaction():
        await _product_row(conn, code, lock=True)
        latest = await store.open_price(conn, code, price.kind.value)
        if latest is not None:
            if price.valid_from <= latest["valid_from"]:
                raise Conflict(
                    f"the latest {price.kind.value} price of {code} applies from "
                    f"{latest['valid_from']}; a change applies from a later day",
                    field="valid_from",
                )
            if latest["valid_to"] is None:
                await store.close_price(conn, latest["id"], price.valid_from)
            elif price.valid_from < latest["valid_to"]:
                raise Conflict(
                    f"the latest {price.kind.value} price of {code} applies until "
                    f"{latest['valid_to']}; a new one starts on or after it",
                    field="valid_from",
                )
        await _add_price(conn, code, price, actor=actor)
        return await _product_view(conn, code)


# -- customers (TMF629) ---------------------------------------------------------------------


def _customer_view(row: dict[str, Any]) -> CustomerView:
    return CustomerView.model_validate(row)


async def _customer_row(conn: Conn, customer_id: str, *, lock: bool = False) -> dict[str, Any]:
    found = await store.customer(conn, check_key(customer_id, "customer"), lock=lock)
    if found is None:
        raise NotFound(f"no customer {customer_id}", field="customer")
    return found


async def create_customer(pool: Pool, request: CustomerRequest, *, actor: str) -> CustomerView:
    async with pool.connection() as conn, conn.transaction():
        with user_errors():
            created = await store.create_customer(
                conn, request.id, request.name, request.msisdn, request.email, actor=actor
            )
        if not created:
            raise Conflict(f"customer {request.id} exists already", field="id")
        return _customer_view(await _customer_row(conn, request.id))


async def customer(pool: Pool, customer_id: str) -> CustomerView:
    async with pool.connection() as conn:
        return _customer_view(await _customer_row(conn, customer_id))


async def list_customers(
    pool: Pool,
    *,
    status: CustomerStatus | None = None,
    msisdn: str | None = None,
    after: str | None = None,
    limit: int,
) -> Page[CustomerView]:
    async with pool.connection() as conn:
        rows = await store.list_customers(
            conn,
            status=None if status is None else status.value,
            msisdn=None if msisdn is None else check_key(msisdn, "msisdn"),
            after=_after(after),
            limit=page_limit(limit),
        )
    return Page[CustomerView].model_validate(_page([_customer_view(r) for r in rows], "id", limit))


async def update_customer(
    pool: Pool, customer_id: str, change: CustomerUpdate, *, actor: str
) -> CustomerView:
    async with pool.connection() as conn, conn.transaction():
        row = await _customer_row(conn, customer_id, lock=True)
        if row["status"] == CustomerStatus.CLOSED.value:
            raise Conflict(f"customer {customer_id} is closed", field="customer")
        with user_errors():
            await store.update_customer(
                conn,
                customer_id,
                name=change.name,
                set_msisdn="msisdn" in change.model_fields_set,
                msisdn=change.msisdn,
                set_email="email" in change.model_fields_set,
                email=change.email,
                actor=actor,
            )
        return _customer_view(await _customer_row(conn, customer_id))


async def close_customer(pool: Pool, customer_id: str, *, actor: str) -> CustomerView:
    """Close a customer who has no live contract and no open account; closing a closed
    customer answers it again."""
    async with pool.connection() as conn, conn.transaction():
        row = await _customer_row(conn, customer_id, lock=True)
        if row["status"] == CustomerStatus.CLOSED.value:
            return _customer_view(row)
        if live := await store.live_contracts(conn, customer_id):
            raise Conflict(
                f"customer {customer_id} has {live} contract(s) not terminated; "
                "terminate them first",
                field="customer",
            )
        open_accounts = [
            a.id
            for a in await ledger.list_accounts(conn, customer=customer_id, limit=10)
            if a.status is not ledger.AccountStatus.CLOSED
        ]
        if open_accounts:
            raise Conflict(
                f"customer {customer_id} has accounts not closed ({', '.join(open_accounts)}); "
                "close them first",
                field="customer",
            )
        await store.set_customer_status(conn, customer_id, CustomerStatus.CLOSED.value, actor=actor)
        return _customer_view(await _customer_row(conn, customer_id))


# -- billing accounts' terms (TMF666; the accounts are the ledger's) -------------------------


def _account_view(account: ledger.Account) -> AccountView:
    limit = account.credit_limit
    return AccountView(
        id=account.id,
        customer_id=account.customer_id,
        currency=account.currency,
        status=account.status.value,
        bill_cycle=account.bill_cycle,
        grace_days=account.grace_days,
        credit_limit=None if limit is None else ledger.format_minor(limit, account.exponent),
        dunning_profile=account.dunning_profile,
    )


async def open_account(pool: Pool, request: ledger.AccountRequest, *, actor: str) -> AccountView:
    """Open a billing account with all its terms (the ledger's `open_account`) and answer
    them; opening one that exists changes nothing and answers it as it is."""
    async with pool.connection() as conn, conn.transaction():
        await ledger.open_account(conn, request, actor=actor)
        return _account_view(await ledger.account(conn, request.account))


async def list_accounts(
    pool: Pool,
    *,
    customer: str | None = None,
    status: ledger.AccountStatus | None = None,
    cycle: str | None = None,
    after: str | None = None,
    limit: int,
) -> Page[AccountView]:
    async with pool.connection() as conn:
        found = await ledger.list_accounts(
            conn,
            customer=None if customer is None else check_key(customer, "customer"),
            status=status,
            cycle=None if cycle is None else ledger.check_text(cycle, "bill_cycle"),
            after=_after(after),
            limit=page_limit(limit),
        )
    return Page[AccountView].model_validate(_page([_account_view(a) for a in found], "id", limit))


async def update_account(
    pool: Pool, account_id: str, change: ledger.AccountUpdate, *, actor: str
) -> AccountView:
    async with pool.connection() as conn, conn.transaction():
        return _account_view(
            await ledger.update_account(conn, check_key(account_id, "account"), change, actor=actor)
        )


async def close_account(pool: Pool, account_id: str, *, actor: str) -> AccountView:
    async with pool.connection() as conn, conn.transaction():
        return _account_view(
            await ledger.close_account(conn, check_key(account_id, "account"), actor=actor)
        )


# -- contracts (TMF637 product inventory) -----------------------------------------------------


def _contract_view(
    row: dict[str, Any], order: dict[str, Any] | None = None, why: str | None = None
) -> ContractView:
    return ContractView.model_validate({**row, "order": order, "provisioning": why})


async def _contract_row(conn: Conn, sa_id: str, *, lock: bool = False) -> dict[str, Any]:
    found = await store.contract(conn, check_key(sa_id, "sa_id"), lock=lock)
    if found is None:
        raise NotFound(f"no contract {sa_id}", field="sa_id")
    return found


async def contract(pool: Pool, sa_id: str) -> ContractView:
    async with pool.connection() as conn:
        return _contract_view(await _contract_row(conn, sa_id))


async def list_contracts(
    pool: Pool,
    *,
    customer: str | None = None,
    account: str | None = None,
    product: str | None = None,
    status: ContractStatus | None = None,
    after: str | None = None,
    limit: int,
) -> Page[ContractView]:
    async with pool.connection() as conn:
        rows = await store.list_contracts(
            conn,
            customer=None if customer is None else check_key(customer, "customer"),
            account=None if account is None else check_key(account, "account"),
            product=None if product is None else check_key(product, "product"),
            status=None if status is None else status.value,
            after=_after(after),
            limit=page_limit(limit),
        )
    views = [_contract_view(r) for r in rows]
    return Page[ContractView].model_validate(_page(views, "sa_id", limit))


async def _billable_on(conn: Conn, product: str, account: ledger.Account, day: date) -> None:
    """The account can be billed the product's prices: each price that applies on `day`
    is in the account's currency."""
    for kind in PriceKind:
        price = await store.price_on(conn, product, kind.value, day)
        if price is not None and price["currency"].strip() != account.currency:
            raise InvalidInput(
                f"product {product} is priced in {price['currency'].strip()} on {day}; "
                f"account {account.id} bills in {account.currency}",
                field="account",
            )


async def _account_for(conn: Conn, account_id: str, customer_id: str) -> ledger.Account:
    account = await ledger.account(conn, check_key(account_id, "account"), lock=True)
    if account.customer_id != customer_id:
        raise InvalidInput(
            f"account {account_id} is customer {account.customer_id}'s, not {customer_id}'s",
            field="account",
        )
    if account.status is ledger.AccountStatus.CLOSED:
        raise Conflict(f"account {account_id} is closed", field="account")
    return account


async def _active_product(conn: Conn, code: str) -> None:
    row = await _product_row(conn, code)
    if row["status"] != ProductStatus.ACTIVE.value:
        raise Conflict(f"product {code} is retired: it takes no new contracts", field="product")


async def _accept(
    conn: Conn,
    journal: Journal,
    deliverer: Deliverer,
    row: dict[str, Any],
    change: Lifecycle,
    *,
    product: str,
    bind_data: dict[str, Any],
    actor: str,
) -> tuple[Accepted | None, str | None]:
    """Accept the change's provisioning order in the caller's transaction, or say why
    there is none (the product has no plan for it)."""
    # Imported here: provisioning's service imports customers (product_exists).
    from bossa import provisioning

    if change.value not in await provisioning.plan_codes(conn, product):
        why = (
            f"product {product} has no provisioning plan for INTF_CODE {change.value}: "
            "the change is recorded, no order was made"
        )
        metrics.CHANGES.labels(change.name.lower(), "none").inc()
        log.warning("contract change without an order", sa_id=row["sa_id"], reason=why)
        return None, why
    request = provisioning.OrderRequest.parse(
        {
            "product": product,
            "sa_id": row["sa_id"],
            "intf_code": change.value,
            "cust_id": row["customer_id"],
            "bind_data": bind_data,
        }
    )
    accepted = await provisioning.accept(
        conn,
        journal,
        request,
        channel="customers",
        idempotency_key=None,
        settings=deliverer.settings,
        actor=actor,
    )
    metrics.CHANGES.labels(change.name.lower(), "ordered").inc()
    return accepted, None


async def _deliver(
    journal: Journal, deliverer: Deliverer, accepted: Accepted | None
) -> dict[str, Any] | None:
    if accepted is None:
        return None
    from bossa import provisioning

    order = await provisioning.deliver_direct(journal, deliverer, accepted)
    return order.model_dump(mode="json")


async def _publish(conn: Conn, journal: Journal | None, sa_id: str, change: str) -> None:
    """The change's business event for the rating pipeline, in this transaction (S1)."""
    from bossa import sync  # sync reads contracts through customers' published views

    await sync.contract_changed(conn, journal, sa_id, sync.EventType(change))


async def create_contract(
    journal: Journal, deliverer: Deliverer, request: ContractRequest, *, actor: str
) -> ContractView:
    """A new contract of an active customer, for an active product, billed to one of the
    customer's open accounts in the product's currency; provisioned with an order 4201
    where the product has a plan for it."""
    start = request.start_date or date.today()
    async with journal.pool.connection() as conn, conn.transaction():
        owner = await _customer_row(conn, request.customer, lock=True)
        if owner["status"] != CustomerStatus.ACTIVE.value:
            raise Conflict(f"customer {request.customer} is closed", field="customer")
        await _active_product(conn, request.product)
        account = await _account_for(conn, request.account, request.customer)
        await _billable_on(conn, request.product, account, start)
        with user_errors():
            created = await store.create_contract(
                conn,
                request.sa_id,
                customer=request.customer,
                account=request.account,
                product=request.product,
                start_date=start,
                actor=actor,
            )
        if not created:
            raise Conflict(f"contract {request.sa_id} exists already", field="sa_id")
        row = await _contract_row(conn, request.sa_id)
        await _publish(conn, journal, request.sa_id, "product_purchased")
        accepted, why = await _accept(
            conn,
            journal,
            deliverer,
            row,
            Lifecycle.NEW,
            product=request.product,
            bind_data=request.bind_data,
            actor=actor,
        )
    return _contract_view(row, await _deliver(journal, deliverer, accepted), why)


async def _status_change(
    journal: Journal,
    deliverer: Deliverer,
    sa_id: str,
    change: ContractChange,
    *,
    lifecycle: Lifecycle,
    allowed_from: Sequence[ContractStatus],
    actor: str,
) -> ContractView:
    async with journal.pool.connection() as conn, conn.transaction():
        row = await _contract_row(conn, sa_id, lock=True)
        if row["status"] not in {s.value for s in allowed_from}:
            raise Conflict(
                f"contract {sa_id} is {row['status']}; {lifecycle.name.lower()} applies to "
                + " or ".join(s.value for s in allowed_from)
                + " contracts",
                field="sa_id",
            )
        if lifecycle is Lifecycle.TERMINATE:
            today = date.today()
            end = change.end_date or max(today, row["start_date"])
            if not row["start_date"] <= end <= max(today, row["start_date"]):
                raise InvalidInput(
                    f"must lie between the contract's start ({row['start_date']}) and today",
                    field="end_date",
                )
            await store.terminate_contract(
                conn, sa_id, end_date=end, reason=change.reason, actor=actor
            )
        else:
            if change.end_date is not None:
                raise InvalidInput("only a termination takes an end date", field="end_date")
            status = (
                ContractStatus.SUSPENDED
                if lifecycle is Lifecycle.SUSPEND
                else ContractStatus.ACTIVE
            )
            await store.set_contract_status(conn, sa_id, status, actor=actor, reason=change.reason)
        row = await _contract_row(conn, sa_id)
        cancelled = lifecycle is Lifecycle.TERMINATE
        await _publish(conn, journal, sa_id, "product_cancelled" if cancelled else "status_changed")
        accepted, why = await _accept(
            conn,
            journal,
            deliverer,
            row,
            lifecycle,
            product=row["product_code"],
            bind_data=change.bind_data,
            actor=actor,
        )
    return _contract_view(row, await _deliver(journal, deliverer, accepted), why)


async def suspend_contract(
    journal: Journal, deliverer: Deliverer, sa_id: str, change: ContractChange, *, actor: str
) -> ContractView:
    """Suspend an active contract (order 4204)."""
    return await _status_change(
        journal,
        deliverer,
        sa_id,
        change,
        lifecycle=Lifecycle.SUSPEND,
        allowed_from=[ContractStatus.ACTIVE],
        actor=actor,
    )


async def resume_contract(
    journal: Journal, deliverer: Deliverer, sa_id: str, change: ContractChange, *, actor: str
) -> ContractView:
    """Resume a suspended contract (order 4205)."""
    return await _status_change(
        journal,
        deliverer,
        sa_id,
        change,
        lifecycle=Lifecycle.RESUME,
        allowed_from=[ContractStatus.SUSPENDED],
        actor=actor,
    )


async def terminate_contract(
    journal: Journal, deliverer: Deliverer, sa_id: str, change: ContractChange, *, actor: str
) -> ContractView:
    """End a contract at `end_date` (exclusive; today when left out), order 4203. The end
    lies between its start and today: a termination is not scheduled ahead."""
    return await _status_change(
        journal,
        deliverer,
        sa_id,
        change,
        lifecycle=Lifecycle.TERMINATE,
        allowed_from=[ContractStatus.ACTIVE, ContractStatus.SUSPENDED],
        actor=actor,
    )


async def change_product(
    journal: Journal, deliverer: Deliverer, sa_id: str, change: ProductChange, *, actor: str
) -> ContractView:
    """Move a live contract to another active product priced in its account's currency
    (order 4202 for the new product)."""
    async with journal.pool.connection() as conn, conn.transaction():
        row = await _contract_row(conn, sa_id, lock=True)
        if row["status"] == ContractStatus.TERMINATED.value:
            raise Conflict(f"contract {sa_id} is terminated", field="sa_id")
        if row["product_code"] == change.product:
            raise Conflict(f"contract {sa_id} holds {change.product} already", field="product")
        await _active_product(conn, change.product)
        if row["account_id"] is not None:
            account = await _account_for(conn, row["account_id"], row["customer_id"])
            await _billable_on(conn, change.product, account, date.today())
        await store.change_contract(conn, sa_id, product=change.product, account=None, actor=actor)
        row = await _contract_row(conn, sa_id)
        await _publish(conn, journal, sa_id, "product_changed")
        accepted, why = await _accept(
            conn,
            journal,
            deliverer,
            row,
            Lifecycle.CHANGE,
            product=change.product,
            bind_data=change.bind_data,
            actor=actor,
        )
    return _contract_view(row, await _deliver(journal, deliverer, accepted), why)


async def change_contract_account(
    pool: Pool, sa_id: str, change: TermsChange, *, actor: str
) -> ContractView:
    """Bill a contract to another open account of its customer, in its product's currency.
    Nothing is provisioned: the service does not change."""
    async with pool.connection() as conn, conn.transaction():
        row = await _contract_row(conn, sa_id, lock=True)
        if row["status"] == ContractStatus.TERMINATED.value:
            raise Conflict(f"contract {sa_id} is terminated", field="sa_id")
        account = await _account_for(conn, change.account, row["customer_id"])
        await _billable_on(conn, row["product_code"], account, date.today())
        await store.change_contract(conn, sa_id, product=None, account=change.account, actor=actor)
        return _contract_view(await _contract_row(conn, sa_id))
