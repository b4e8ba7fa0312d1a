"""`bossa catalogue|customers|accounts|contracts|sample ...`: the operator's own data from
the command line, the same use cases as the API (docs/catalogue-and-customers.md). Each
command parses its options, calls one service function and renders the result: a
listing as a table (plain when not a terminal) with the `--after` of the next page, one
resource as JSON. Audits record the CLI's actor (`bossa.access.cli_principal`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import BaseModel

from bossa.access import cli_principal
from bossa.clitools import date_arg, json_arg, with_runtime
from bossa.customers import service
from bossa.customers.models import (
    DEFAULT_PAGE,
    MAX_PAGE,
    ContractChange,
    ContractRequest,
    ContractStatus,
    CustomerRequest,
    CustomerStatus,
    CustomerUpdate,
    Page,
    PriceRequest,
    ProductChange,
    ProductRequest,
    ProductStatus,
    ProductUpdate,
    TermsChange,
)
from bossa.customers.sample import load_sample_operator
from bossa.errors import InvalidInput
from bossa.ledger import AccountRequest, AccountStatus, AccountUpdate, parse_model
from bossa.terminal import out, print_json, table

__all__ = ["accounts_app", "catalogue_app", "contracts_app", "customers_app", "sample_app"]

catalogue_app = typer.Typer(
    help="Products and their versioned prices (TMF620).", no_args_is_help=True
)
customers_app = typer.Typer(help="Customers (TMF629).", no_args_is_help=True)
accounts_app = typer.Typer(
    help="Billing accounts' terms (TMF666); their books: bossa ledger show.",
    no_args_is_help=True,
)
contracts_app = typer.Typer(
    help="Contracts (SA_ID, TMF637) and their lifecycle, each change a provisioning order.",
    no_args_is_help=True,
)
sample_app = typer.Typer(help="The tour's sample operator.", no_args_is_help=True)

After = Annotated[str | None, typer.Option("--after", help="The last key of the previous page")]
Limit = Annotated[int, typer.Option("--limit", min=1, max=MAX_PAGE, help="Rows per page")]
Reason = Annotated[str | None, typer.Option("--reason", help="Why (recorded with who and when)")]
Binds = Annotated[
    str | None, typer.Option("--bind", help="The provisioning order's bind data, as JSON")
]


def _actor() -> str:
    return cli_principal().actor


def _show(model: BaseModel) -> None:
    print_json(model.model_dump(mode="json"))


def _listing(page: Page[Any], columns: list[str], title: str) -> None:
    rows = [item.model_dump(mode="json") for item in page.items]
    table(rows, columns, title=title)
    if page.next is not None:
        out.print(f"more: --after {page.next}", markup=False, highlight=False)


def _binds(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    found = json_arg(text, "bind")
    if not isinstance(found, dict):
        raise InvalidInput("must be a JSON object of names and values", field="bind")
    return found


# -- catalogue ----------------------------------------------------------------------------------


def _price(
    kind: str, amount: str, currency: str, period: str | None, valid_from: str
) -> dict[str, Any]:
    return {
        "kind": kind,
        "period": period,
        "amount": amount,
        "currency": currency,
        "valid_from": date_arg(valid_from, "valid_from"),
    }


@catalogue_app.command("add")
def product_add(
    code: str,
    name: str,
    description: Annotated[str, typer.Option(help="What it is")] = "",
    price: Annotated[
        str | None, typer.Option(help="Its recurring price in the currency, e.g. 25000")
    ] = None,
    currency: Annotated[str, typer.Option(help="ISO 4217 code")] = "KRW",
    period: Annotated[str, typer.Option(help="monthly, quarterly or yearly")] = "monthly",
    one_off: Annotated[
        str | None, typer.Option("--one-off", help="A one-off fee in the currency")
    ] = None,
    valid_from: Annotated[
        str, typer.Option(help="The first day its prices apply (YYYY-MM-DD)")
    ] = "1900-01-01",
) -> None:
    """A new product, with its recurring price and one-off fee if given."""
    prices = []
    if price is not None:
        prices.append(_price("recurring", price, currency, period, valid_from))
    if one_off is not None:
        prices.append(_price("one_off", one_off, currency, None, valid_from))
    request = parse_model(
        ProductRequest,
        {"code": code, "name": name, "description": description, "prices": prices},
    )
    actor = _actor()
    _show(with_runtime(lambda rt: service.create_product(rt.pool, request, actor=actor)))


@catalogue_app.command("list")
def product_list(
    status: Annotated[ProductStatus | None, typer.Option()] = None,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
) -> None:
    """Products by code."""
    page = with_runtime(
        lambda rt: service.list_products(rt.pool, status=status, after=after, limit=limit)
    )
    _listing(page, ["code", "name", "status"], "products")


@catalogue_app.command("show")
def product_show(code: str) -> None:
    """A product with every version of its prices."""
    _show(with_runtime(lambda rt: service.product(rt.pool, code)))


@catalogue_app.command("update")
def product_update(
    code: str,
    name: Annotated[str | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Rename or describe a product."""
    change = parse_model(ProductUpdate, {"name": name, "description": description})
    actor = _actor()
    _show(with_runtime(lambda rt: service.update_product(rt.pool, code, change, actor=actor)))


@catalogue_app.command("retire")
def product_retire(code: str) -> None:
    """Retire a product: no new contracts; its contracts run on."""
    actor = _actor()
    _show(with_runtime(lambda rt: service.retire_product(rt.pool, code, actor=actor)))


@catalogue_app.command("price")
def product_price(
    code: str,
    amount: str,
    valid_from: Annotated[str, typer.Option(help="The first day the new price applies")],
    kind: Annotated[str, typer.Option(help="recurring or one_off")] = "recurring",
    period: Annotated[
        str | None, typer.Option(help="monthly, quarterly or yearly (recurring)")
    ] = None,
    currency: Annotated[str, typer.Option()] = "KRW",
) -> None:
    """A price change from a day: the open version closes there, the new one applies
    from it."""
    if kind == "recurring" and period is None:
        period = "monthly"
    request = parse_model(PriceRequest, _price(kind, amount, currency, period, valid_from))
    actor = _actor()
    _show(with_runtime(lambda rt: service.change_price(rt.pool, code, request, actor=actor)))


# -- customers ----------------------------------------------------------------------------------


@customers_app.command("add")
def customer_add(
    customer: str,
    name: str,
    msisdn: Annotated[str | None, typer.Option()] = None,
    email: Annotated[str | None, typer.Option()] = None,
) -> None:
    """A new customer (CUST_ID)."""
    request = parse_model(
        CustomerRequest, {"id": customer, "name": name, "msisdn": msisdn, "email": email}
    )
    actor = _actor()
    _show(with_runtime(lambda rt: service.create_customer(rt.pool, request, actor=actor)))


@customers_app.command("list")
def customer_list(
    status: Annotated[CustomerStatus | None, typer.Option()] = None,
    msisdn: Annotated[str | None, typer.Option()] = None,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
) -> None:
    """Customers by CUST_ID."""
    page = with_runtime(
        lambda rt: service.list_customers(
            rt.pool, status=status, msisdn=msisdn, after=after, limit=limit
        )
    )
    _listing(page, ["id", "name", "msisdn", "email", "status"], "customers")


@customers_app.command("show")
def customer_show(customer: str) -> None:
    _show(with_runtime(lambda rt: service.customer(rt.pool, customer)))


@customers_app.command("update")
def customer_update(
    customer: str,
    name: Annotated[str | None, typer.Option()] = None,
    msisdn: Annotated[str | None, typer.Option(help="'' clears it")] = None,
    email: Annotated[str | None, typer.Option(help="'' clears it")] = None,
) -> None:
    """Change a customer's name or contact."""
    data: dict[str, Any] = {"name": name}
    for field, value in (("msisdn", msisdn), ("email", email)):
        if value is not None:
            data[field] = value or None
    change = parse_model(CustomerUpdate, data)
    actor = _actor()
    _show(with_runtime(lambda rt: service.update_customer(rt.pool, customer, change, actor=actor)))


@customers_app.command("close")
def customer_close(customer: str) -> None:
    """Close a customer with no live contract and no open account."""
    actor = _actor()
    _show(with_runtime(lambda rt: service.close_customer(rt.pool, customer, actor=actor)))


# -- accounts -----------------------------------------------------------------------------------


@accounts_app.command("open")
def account_open(
    account: str,
    customer: str,
    currency: Annotated[str, typer.Option(help="ISO 4217 code")] = "KRW",
    cycle: Annotated[str, typer.Option(help="Bill cycle")] = "MONTHLY",
    grace_days: Annotated[
        int, typer.Option(min=0, max=3650, help="Days past a bill's due date before dunning")
    ] = 14,
    credit_limit: Annotated[str | None, typer.Option(help="In the currency")] = None,
    dunning_profile: Annotated[str, typer.Option()] = "standard",
) -> None:
    """Open a billing account for a customer (the same as `bossa ledger open`, with every
    term); opening one that exists changes nothing."""
    request = AccountRequest.parse(
        {
            "account": account,
            "customer": customer,
            "currency": currency,
            "bill_cycle": cycle,
            "grace_days": grace_days,
            "credit_limit": credit_limit,
            "dunning_profile": dunning_profile,
        }
    )
    actor = _actor()
    _show(with_runtime(lambda rt: service.open_account(rt.pool, request, actor=actor)))


@accounts_app.command("list")
def account_list(
    customer: Annotated[str | None, typer.Option()] = None,
    status: Annotated[AccountStatus | None, typer.Option()] = None,
    cycle: Annotated[str | None, typer.Option()] = None,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
) -> None:
    """Billing accounts by id."""
    page = with_runtime(
        lambda rt: service.list_accounts(
            rt.pool, customer=customer, status=status, cycle=cycle, after=after, limit=limit
        )
    )
    columns = ["id", "customer_id", "currency", "status", "bill_cycle", "credit_limit"]
    _listing(page, columns, "accounts")


@accounts_app.command("update")
def account_update(
    account: str,
    cycle: Annotated[str | None, typer.Option()] = None,
    grace_days: Annotated[int | None, typer.Option(min=0, max=3650)] = None,
    credit_limit: Annotated[
        str | None, typer.Option(help="In the currency; 'none' removes the limit")
    ] = None,
    dunning_profile: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Change an account's terms."""
    data: dict[str, Any] = {
        "bill_cycle": cycle,
        "grace_days": grace_days,
        "dunning_profile": dunning_profile,
    }
    if credit_limit is not None:
        data["credit_limit"] = None if credit_limit.lower() == "none" else credit_limit
    change = parse_model(AccountUpdate, data)
    actor = _actor()
    _show(with_runtime(lambda rt: service.update_account(rt.pool, account, change, actor=actor)))


@accounts_app.command("close")
def account_close(account: str) -> None:
    """Close an account that bills no live contract and holds no money."""
    actor = _actor()
    _show(with_runtime(lambda rt: service.close_account(rt.pool, account, actor=actor)))


# -- contracts ----------------------------------------------------------------------------------


@contracts_app.command("add")
def contract_add(
    sa_id: str,
    customer: str,
    account: str,
    product: str,
    start: Annotated[str | None, typer.Option(help="First day billed (YYYY-MM-DD)")] = None,
    bind: Binds = None,
) -> None:
    """A new contract, provisioned (order 4201) when its product has a plan."""
    request = parse_model(
        ContractRequest,
        {
            "sa_id": sa_id,
            "customer": customer,
            "account": account,
            "product": product,
            "start_date": None if start is None else date_arg(start, "start"),
            "bind_data": _binds(bind),
        },
    )
    actor = _actor()
    _show(
        with_runtime(
            lambda rt: service.create_contract(rt.journal, rt.deliverer, request, actor=actor)
        )
    )


@contracts_app.command("list")
def contract_list(
    customer: Annotated[str | None, typer.Option()] = None,
    account: Annotated[str | None, typer.Option()] = None,
    product: Annotated[str | None, typer.Option()] = None,
    status: Annotated[ContractStatus | None, typer.Option()] = None,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
) -> None:
    """Contracts by SA_ID."""
    page = with_runtime(
        lambda rt: service.list_contracts(
            rt.pool,
            customer=customer,
            account=account,
            product=product,
            status=status,
            after=after,
            limit=limit,
        )
    )
    columns = ["sa_id", "customer_id", "account_id", "product_code", "status", "start_date"]
    _listing(page, [*columns, "end_date"], "contracts")


@contracts_app.command("show")
def contract_show(sa_id: str) -> None:
    _show(with_runtime(lambda rt: service.contract(rt.pool, sa_id)))


def _change(reason: str | None, bind: str | None, end: str | None = None) -> ContractChange:
    return parse_model(
        ContractChange,
        {
            "reason": reason,
            "bind_data": _binds(bind),
            "end_date": None if end is None else date_arg(end, "end"),
        },
    )


@contracts_app.command("suspend")
def contract_suspend(sa_id: str, reason: Reason = None, bind: Binds = None) -> None:
    """Suspend an active contract (order 4204)."""
    change, actor = _change(reason, bind), _actor()
    _show(
        with_runtime(
            lambda rt: service.suspend_contract(
                rt.journal, rt.deliverer, sa_id, change, actor=actor
            )
        )
    )


@contracts_app.command("resume")
def contract_resume(sa_id: str, reason: Reason = None, bind: Binds = None) -> None:
    """Resume a suspended contract (order 4205)."""
    change, actor = _change(reason, bind), _actor()
    _show(
        with_runtime(
            lambda rt: service.resume_contract(rt.journal, rt.deliverer, sa_id, change, actor=actor)
        )
    )


@contracts_app.command("terminate")
def contract_terminate(
    sa_id: str,
    reason: Reason = None,
    end: Annotated[str | None, typer.Option(help="Its end, exclusive (default today)")] = None,
    bind: Binds = None,
) -> None:
    """End a contract (order 4203)."""
    change, actor = _change(reason, bind, end), _actor()
    _show(
        with_runtime(
            lambda rt: service.terminate_contract(
                rt.journal, rt.deliverer, sa_id, change, actor=actor
            )
        )
    )


@contracts_app.command("change-product")
def contract_change_product(
    sa_id: str, product: str, reason: Reason = None, bind: Binds = None
) -> None:
    """Move a contract to another product (order 4202)."""
    change = parse_model(
        ProductChange, {"product": product, "reason": reason, "bind_data": _binds(bind)}
    )
    actor = _actor()
    _show(
        with_runtime(
            lambda rt: service.change_product(rt.journal, rt.deliverer, sa_id, change, actor=actor)
        )
    )


@contracts_app.command("move")
def contract_move(sa_id: str, account: str) -> None:
    """Bill a contract to another account of its customer (no order)."""
    change = parse_model(TermsChange, {"account": account})
    actor = _actor()
    _show(
        with_runtime(
            lambda rt: service.change_contract_account(rt.pool, sa_id, change, actor=actor)
        )
    )


# -- the sample ---------------------------------------------------------------------------------


@sample_app.command("load")
def sample_load() -> None:
    """Put the tour's sample operator (3 products, 4 customers, their accounts A-1001..
    A-1004, 5 contracts) into this database; loading it again adds nothing."""
    actor = _actor()
    loaded = with_runtime(lambda rt: load_sample_operator(rt.pool, actor=actor))
    out.print(
        f"sample operator: added {loaded.products} products, {loaded.customers} customers, "
        f"{loaded.accounts} accounts, {loaded.contracts} contracts",
        markup=False,
        highlight=False,
    )
