"""HTTP routes of the operator's own data: the catalogue (TMF620), customers (TMF629), the
terms of billing accounts (TMF666; opening one and its books stay `POST /ledger/accounts`
and `GET /ledger/accounts/{account}`) and contracts (TMF637). Each route declares its
permission, parses a typed body, calls one service function and answers a typed model.
Listings page by key: `after` the last key seen, at most `limit` rows; `next` is the key
to pass for the following page. Audits record the caller's credential, never a name
from the body. docs/catalogue-and-customers.md."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from bossa.access import Permission
from bossa.access.api import PrincipalDep, guarded
from bossa.customers import service
from bossa.customers.models import (
    CODE_PATTERN,
    DEFAULT_PAGE,
    MAX_PAGE,
    AccountView,
    ContractChange,
    ContractRequest,
    ContractStatus,
    ContractView,
    CustomerRequest,
    CustomerStatus,
    CustomerUpdate,
    CustomerView,
    Page,
    PriceRequest,
    PriceView,
    ProductChange,
    ProductRequest,
    ProductStatus,
    ProductUpdate,
    ProductView,
    TermsChange,
)
from bossa.ledger import AccountStatus, AccountUpdate
from bossa.runtime import Runtime

__all__ = ["router"]

router = APIRouter(tags=["customers"])

_KEY = {"pattern": r"^[^\x00-\x20\x7f]+$"}


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
ProductCode = Annotated[
    str, Path(min_length=1, max_length=32, pattern=CODE_PATTERN, description="The product")
]
CustomerId = Annotated[
    str, Path(min_length=1, max_length=64, json_schema_extra=_KEY, description="CUST_ID")
]
AccountId = Annotated[
    str, Path(min_length=1, max_length=64, json_schema_extra=_KEY, description="The account")
]
SaId = Annotated[
    str, Path(min_length=1, max_length=64, json_schema_extra=_KEY, description="SA_ID")
]
After = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        json_schema_extra=_KEY,
        description="The last key of the previous page (its `next`)",
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Rows, at most {MAX_PAGE}")]
Filter = Annotated[str | None, Query(min_length=1, max_length=64, json_schema_extra=_KEY)]


# -- catalogue (TMF620 productOffering / productOfferingPrice) --------------------------------


@router.post("/catalogue/products", status_code=201, **guarded(Permission.CATALOGUE_WRITE))
async def create_product(
    body: ProductRequest, rt: RuntimeDep, principal: PrincipalDep
) -> ProductView:
    """A new product with its first prices (at most one of each kind); 409 if the code
    exists."""
    return await service.create_product(rt.pool, body, actor=principal.actor)


@router.get("/catalogue/products", **guarded(Permission.CUSTOMERS_READ))
async def list_products(
    rt: RuntimeDep,
    status: ProductStatus | None = None,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[ProductView]:
    """Products by code, each with every version of its prices."""
    return await service.list_products(rt.pool, status=status, after=after, limit=limit)


@router.get("/catalogue/products/{code}", **guarded(Permission.CUSTOMERS_READ))
async def show_product(code: ProductCode, rt: RuntimeDep) -> ProductView:
    return await service.product(rt.pool, code)


@router.patch("/catalogue/products/{code}", **guarded(Permission.CATALOGUE_WRITE))
async def update_product(
    code: ProductCode, body: ProductUpdate, rt: RuntimeDep, principal: PrincipalDep
) -> ProductView:
    """Rename or describe a product; its prices change only by a price change."""
    return await service.update_product(rt.pool, code, body, actor=principal.actor)


@router.post("/catalogue/products/{code}/retire", **guarded(Permission.CATALOGUE_WRITE))
async def retire_product(code: ProductCode, rt: RuntimeDep, principal: PrincipalDep) -> ProductView:
    """Retire a product: it takes no new contracts; its contracts run on."""
    return await service.retire_product(rt.pool, code, actor=principal.actor)


@router.get("/catalogue/products/{code}/prices", **guarded(Permission.CUSTOMERS_READ))
async def list_prices(code: ProductCode, rt: RuntimeDep) -> list[PriceView]:
    """Every version of the product's prices, by kind and start."""
    return (await service.product(rt.pool, code)).prices


@router.post(
    "/catalogue/products/{code}/prices", status_code=201, **guarded(Permission.CATALOGUE_WRITE)
)
async def change_price(
    code: ProductCode, body: PriceRequest, rt: RuntimeDep, principal: PrincipalDep
) -> ProductView:
    """A price change from `valid_from`: the open version of its kind closes on that day
    and the new one applies from it; earlier days keep the old price."""
    return await service.change_price(rt.pool, code, body, actor=principal.actor)


# -- customers (TMF629) ------------------------------------------------------------------------


@router.post("/customers", status_code=201, **guarded(Permission.CUSTOMERS_WRITE))
async def create_customer(
    body: CustomerRequest, rt: RuntimeDep, principal: PrincipalDep
) -> CustomerView:
    """A new customer; 409 if the CUST_ID exists."""
    return await service.create_customer(rt.pool, body, actor=principal.actor)


@router.get("/customers", **guarded(Permission.CUSTOMERS_READ))
async def list_customers(
    rt: RuntimeDep,
    status: CustomerStatus | None = None,
    msisdn: Filter = None,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[CustomerView]:
    """Customers by CUST_ID, optionally of one status or MSISDN."""
    return await service.list_customers(
        rt.pool, status=status, msisdn=msisdn, after=after, limit=limit
    )


@router.get("/customers/{customer}", **guarded(Permission.CUSTOMERS_READ))
async def show_customer(customer: CustomerId, rt: RuntimeDep) -> CustomerView:
    return await service.customer(rt.pool, customer)


@router.patch("/customers/{customer}", **guarded(Permission.CUSTOMERS_WRITE))
async def update_customer(
    customer: CustomerId, body: CustomerUpdate, rt: RuntimeDep, principal: PrincipalDep
) -> CustomerView:
    """Change a customer's name or contact; `msisdn: null` or `email: null` clears it."""
    return await service.update_customer(rt.pool, customer, body, actor=principal.actor)


@router.post("/customers/{customer}/close", **guarded(Permission.CUSTOMERS_WRITE))
async def close_customer(
    customer: CustomerId, rt: RuntimeDep, principal: PrincipalDep
) -> CustomerView:
    """Close a customer with no live contract and no open account (409 otherwise)."""
    return await service.close_customer(rt.pool, customer, actor=principal.actor)


# -- billing accounts' terms (TMF666 billingAccount) ------------------------------------------


@router.get("/ledger/accounts", **guarded(Permission.BILLING_READ))
async def list_accounts(
    rt: RuntimeDep,
    customer: Filter = None,
    status: AccountStatus | None = None,
    bill_cycle: Annotated[
        str | None, Query(min_length=1, max_length=32, pattern=r"^[^\x00-\x1f\x7f]+$")
    ] = None,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[AccountView]:
    """Billing accounts by id, optionally of one customer, status or bill cycle."""
    return await service.list_accounts(
        rt.pool, customer=customer, status=status, cycle=bill_cycle, after=after, limit=limit
    )


@router.patch("/ledger/accounts/{account}", **guarded(Permission.ACCOUNTS_WRITE))
async def update_account(
    account: AccountId, body: AccountUpdate, rt: RuntimeDep, principal: PrincipalDep
) -> AccountView:
    """Change an account's bill cycle, grace days, credit limit or dunning profile
    (`credit_limit: null` removes the limit); its currency and customer never change."""
    return await service.update_account(rt.pool, account, body, actor=principal.actor)


@router.post("/ledger/accounts/{account}/close", **guarded(Permission.ACCOUNTS_WRITE))
async def close_account(account: AccountId, rt: RuntimeDep, principal: PrincipalDep) -> AccountView:
    """Close an account that bills no live contract and holds no money (409 otherwise)."""
    return await service.close_account(rt.pool, account, actor=principal.actor)


# -- contracts (TMF637 product inventory) -------------------------------------------------------


@router.post("/contracts", status_code=201, **guarded(Permission.CUSTOMERS_WRITE))
async def create_contract(
    body: ContractRequest, rt: RuntimeDep, principal: PrincipalDep
) -> ContractView:
    """A new contract, provisioned with an order 4201 when the product has a plan for it
    (`order`; otherwise `provisioning` says why none was made)."""
    return await service.create_contract(rt.journal, rt.deliverer, body, actor=principal.actor)


@router.get("/contracts", **guarded(Permission.CUSTOMERS_READ))
async def list_contracts(
    rt: RuntimeDep,
    customer: Filter = None,
    account: Filter = None,
    product: Annotated[str | None, Query(min_length=1, max_length=32, pattern=CODE_PATTERN)] = None,
    status: ContractStatus | None = None,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[ContractView]:
    """Contracts by SA_ID, optionally of one customer, account, product or status."""
    return await service.list_contracts(
        rt.pool,
        customer=customer,
        account=account,
        product=product,
        status=status,
        after=after,
        limit=limit,
    )


@router.get("/contracts/{sa_id}", **guarded(Permission.CUSTOMERS_READ))
async def show_contract(sa_id: SaId, rt: RuntimeDep) -> ContractView:
    return await service.contract(rt.pool, sa_id)


@router.patch("/contracts/{sa_id}", **guarded(Permission.CUSTOMERS_WRITE))
async def change_account(
    sa_id: SaId, body: TermsChange, rt: RuntimeDep, principal: PrincipalDep
) -> ContractView:
    """Bill the contract to another open account of its customer (no order)."""
    return await service.change_contract_account(rt.pool, sa_id, body, actor=principal.actor)


@router.post("/contracts/{sa_id}/product", **guarded(Permission.CUSTOMERS_WRITE))
async def change_product(
    sa_id: SaId, body: ProductChange, rt: RuntimeDep, principal: PrincipalDep
) -> ContractView:
    """Move the contract to another product (order 4202)."""
    return await service.change_product(
        rt.journal, rt.deliverer, sa_id, body, actor=principal.actor
    )


@router.post("/contracts/{sa_id}/suspend", **guarded(Permission.CUSTOMERS_WRITE))
async def suspend(
    sa_id: SaId, body: ContractChange, rt: RuntimeDep, principal: PrincipalDep
) -> ContractView:
    """Suspend an active contract (order 4204)."""
    return await service.suspend_contract(
        rt.journal, rt.deliverer, sa_id, body, actor=principal.actor
    )


@router.post("/contracts/{sa_id}/resume", **guarded(Permission.CUSTOMERS_WRITE))
async def resume(
    sa_id: SaId, body: ContractChange, rt: RuntimeDep, principal: PrincipalDep
) -> ContractView:
    """Resume a suspended contract (order 4205)."""
    return await service.resume_contract(
        rt.journal, rt.deliverer, sa_id, body, actor=principal.actor
    )


@router.post("/contracts/{sa_id}/terminate", **guarded(Permission.CUSTOMERS_WRITE))
async def terminate(
    sa_id: SaId, body: ContractChange, rt: RuntimeDep, principal: PrincipalDep
) -> ContractView:
    """End the contract at `end_date` (exclusive; today when left out), order 4203."""
    return await service.terminate_contract(
        rt.journal, rt.deliverer, sa_id, body, actor=principal.actor
    )
