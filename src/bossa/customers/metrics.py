"""Prometheus counters of customers: what an operator watches is contract changes that
went out without a provisioning order (a product without a plan for the change)."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["CHANGES"]

CHANGES = Counter(
    "bossa_customers_contract_changes_total",
    "Contract lifecycle changes, by change and whether a provisioning order was made "
    "(order=none: the product has no plan for it)",
    ["change", "order"],
)
