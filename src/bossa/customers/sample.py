"""The sample operator of the tour and the docs: the seed's three products, four customers,
a KRW billing account each (A-1001..A-1004) and five contracts billed to them.

Two loaders. `load_sample_operator` (what `bossa sample load` runs) goes through the
services, in one transaction, and puts the whole operator into any database: loading it
again changes nothing, and what an operator already has under the same ids is left as it
is. The sample's contracts are recorded as existing service (as an import would), so no
provisioning order is sent for them. `load_sample` is the tour's and the test fixtures'
synchronous loader of the products, customers, accounts (with the ledger's default terms,
opened when missing: a contract names only an account that exists) and contracts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import psycopg

from bossa import ledger
from bossa.customers import store
from bossa.db import Pool

__all__ = ["ACCOUNTS", "SampleLoaded", "SampleOperator", "load_sample", "load_sample_operator"]

# The seed's examples (KR 10-1512875): ADSL broadband, WiBro wireless, SoIP VoIP.
PRODUCTS = [
    ("ADSL", "ADSL broadband 20M", 2_500_000, "KRW"),
    ("WIBRO", "WiBro wireless data", 1_900_000, "KRW"),
    ("SOIP", "SoIP internet telephony", 900_000, "KRW"),
]
CUSTOMERS = [
    ("C-1001", "Kim Min-jun", "+821012340001"),
    ("C-1002", "Lee Seo-yeon", "+821012340002"),
    ("C-1003", "Park Ji-ho", "+821012340003"),
    ("C-1004", "Choi Ha-eun", "+821012340004"),
]
CONTRACTS = [
    ("SA-5001", "C-1001", "ADSL"),
    ("SA-5002", "C-1001", "SOIP"),
    ("SA-5003", "C-1002", "WIBRO"),
    ("SA-5004", "C-1003", "ADSL"),
    ("SA-5005", "C-1004", "SOIP"),
]
#: (account, customer): each sample customer's KRW account, as the tour's billing chapter
#: opens them.
ACCOUNTS = [(f"A-{n}", f"C-{n}") for n in range(1001, 1005)]
#: The sample's prices apply from the earliest date a bill can name, so any period bills.
SINCE = date(1900, 1, 1)


@dataclass(frozen=True)
class SampleOperator:
    products: int
    customers: int
    contracts: int
    #: Every contract: (SA_ID, CUST_ID, customer, product code, product name), for the tour.
    listing: tuple[tuple[str, str, str, str, str], ...] = ()


@dataclass(frozen=True)
class SampleLoaded:
    """What `load_sample_operator` added (0 everywhere when the sample was there)."""

    products: int
    customers: int
    accounts: int
    contracts: int


def load_sample(conn: psycopg.Connection[tuple[object, ...]]) -> SampleOperator:
    """Products, customers, their sample accounts (A-1001..A-1004, KRW, the ledger's
    default terms: opened here when missing, since a contract may name only an account
    that exists) and contracts, each billed to its customer's account and running since
    SINCE, like the full loader's."""
    account_of = {customer: account for account, customer in ACCOUNTS}
    contracts = [(sa, cust, prod, account_of[cust], SINCE) for sa, cust, prod in CONTRACTS]
    with conn.transaction():
        store.add_sample(conn, PRODUCTS, CUSTOMERS, ACCOUNTS, contracts)
    return SampleOperator(
        len(PRODUCTS), len(CUSTOMERS), len(CONTRACTS), tuple(store.contract_listing(conn))
    )


async def load_sample_operator(pool: Pool, *, actor: str) -> SampleLoaded:
    """Put the whole sample operator into the database, idempotently, in one transaction."""
    added = {"products": 0, "customers": 0, "accounts": 0, "contracts": 0}
    async with pool.connection() as conn, conn.transaction():
        for code, name, fee, currency in PRODUCTS:
            if await store.create_product(conn, code, name, "", actor=actor):
                await store.add_price(
                    conn,
                    code,
                    kind="recurring",
                    period="monthly",
                    amount=fee,
                    currency=currency,
                    valid_from=SINCE,
                    actor=actor,
                )
                added["products"] += 1
        for customer_id, name, msisdn in CUSTOMERS:
            if await store.create_customer(conn, customer_id, name, msisdn, None, actor=actor):
                added["customers"] += 1
        for account_id, customer_id in ACCOUNTS:
            request = ledger.AccountRequest(
                account=account_id, customer=customer_id, currency="KRW"
            )
            if await ledger.open_account(conn, request, actor=actor):
                added["accounts"] += 1
        account_of = {customer: account for account, customer in ACCOUNTS}
        for sa_id, customer_id, product in CONTRACTS:
            created = await store.create_contract(
                conn,
                sa_id,
                customer=customer_id,
                account=account_of[customer_id],
                product=product,
                start_date=SINCE,
                actor=actor,
            )
            added["contracts"] += int(created)
    return SampleLoaded(**added)
