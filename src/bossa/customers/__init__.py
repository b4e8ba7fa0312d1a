"""Customers, their contracts (SA_ID) and the products those contracts hold.

The parties every other system refers to: provisioning provisions a contract's products,
billing bills its account, alerts notify its subscriber. Other modules call the functions
below inside their own transactions (they take the caller's connection), and their SQL
reads only the published views `customers.product_codes` and `customers.contract_fees`.
"""

from bossa.customers.models import Contract, ContractStatus, Customer, Product
from bossa.customers.sample import SampleOperator, load_sample
from bossa.customers.service import (
    contracts_of_customer,
    customer_exists,
    product_exists,
    set_contract_status,
)

__all__ = [
    "Contract",
    "ContractStatus",
    "Customer",
    "Product",
    "SampleOperator",
    "contracts_of_customer",
    "customer_exists",
    "load_sample",
    "product_exists",
    "set_contract_status",
]
