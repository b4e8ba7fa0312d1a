"""What other modules may ask of customers. Every function takes the caller's connection
and joins its transaction: they are called from inside billing's and provisioning's own
(a contract suspended by dunning commits with the suspend order, or not at all)."""

from __future__ import annotations

from bossa.customers import store
from bossa.customers.models import Contract, ContractStatus, contract_status
from bossa.db import Conn
from bossa.errors import NotFound

__all__ = ["contracts_of_customer", "customer_exists", "product_exists", "set_contract_status"]


async def product_exists(conn: Conn, code: str) -> bool:
    return await store.product_exists(conn, code)


async def customer_exists(conn: Conn, customer_id: str) -> bool:
    return await store.customer_exists(conn, customer_id)


async def contracts_of_customer(conn: Conn, customer_id: str) -> list[Contract]:
    """The customer's contracts, terminated ones included (by SA_ID); none for an
    unknown customer."""
    return await store.contracts_of_customer(conn, customer_id)


async def set_contract_status(
    conn: Conn, sa_id: str, status: ContractStatus | str, *, actor: str
) -> None:
    """Set a contract's service state, recording who did it; NotFound for an unknown SA_ID."""
    if not await store.set_contract_status(conn, sa_id, contract_status(status), actor=actor):
        raise NotFound(f"no contract {sa_id}", field="sa_id")
