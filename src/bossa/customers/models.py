"""What customers holds, as plain values: customers, their contracts (SA_ID) and the
products those contracts hold. No I/O: the store returns these, other modules read them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bossa.errors import InvalidInput

__all__ = ["Contract", "ContractStatus", "Customer", "Product", "contract_status"]


class ContractStatus(StrEnum):
    """A contract's service state: billing's dunning suspends it, a payment restores it."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


def contract_status(value: str | ContractStatus) -> ContractStatus:
    try:
        return ContractStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in ContractStatus)
        raise InvalidInput(
            f"{value!r} is not a contract status ({known})", field="status"
        ) from None


@dataclass(frozen=True)
class Product:
    code: str
    name: str
    #: Minor units of `currency`.
    monthly_fee: int
    currency: str


@dataclass(frozen=True)
class Customer:
    id: str  # CUST_ID
    name: str
    msisdn: str | None


@dataclass(frozen=True)
class Contract:
    sa_id: str  # SA_ID: the contract, the seeds' ordering key
    customer_id: str
    product_code: str
    status: ContractStatus
