"""The operator's own data: the catalogue (products and their versioned prices),
customers, the terms of their billing accounts (the accounts are the ledger's), and
contracts (SA_ID) through their lifecycle. See docs/catalogue-and-customers.md.

The parties every other system refers to: provisioning provisions a contract's products,
billing bills its account, alerts notify its subscriber. Other modules call the functions
below that take a connection inside their own transactions, and their SQL reads only the
published views `customers.contract_terms`, `customers.price_versions` (and, until billing
reads those, `customers.product_codes` and `customers.contract_fees`).
"""

from bossa.customers.models import (
    Contract,
    ContractStatus,
    Customer,
    PriceKind,
    PricePeriod,
    Product,
)
from bossa.customers.sample import (
    SampleLoaded,
    SampleOperator,
    load_sample,
    load_sample_operator,
)
from bossa.customers.service import (
    contracts_of_account,
    contracts_of_customer,
    contracts_of_customers,
    customer_exists,
    product_exists,
    set_contract_status,
)

__all__ = [
    "Contract",
    "ContractStatus",
    "Customer",
    "PriceKind",
    "PricePeriod",
    "Product",
    "SampleLoaded",
    "SampleOperator",
    "contracts_of_account",
    "contracts_of_customer",
    "contracts_of_customers",
    "customer_exists",
    "load_sample",
    "load_sample_operator",
    "product_exists",
    "set_contract_status",
]
