"""Prometheus metrics of provisioning's order path (counters in the process that counts)."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["DIRECT_ACKS_REFUSED", "ORDERS_RECOVERED"]

ORDERS_RECOVERED = Counter(
    "bossa_provisioning_orders_recovered",
    "Orders left accepted by a process that died before recording its direct calls,"
    " completed by a backup daemon's sweep from the journal's outcome",
)
DIRECT_ACKS_REFUSED = Counter(
    "bossa_provisioning_direct_acks_refused",
    "Direct deliveries whose claim had passed to a backup daemon when the ack was sent"
    " (not logged as direct; the backup daemon's redelivery is deduplicated at the target)",
    ["division"],
)
