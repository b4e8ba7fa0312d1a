"""Prometheus metrics of provisioning: what deliveries and divisions do.

Counters live in the process that delivers (a backup or order daemon, the API for direct
delivery; a daemon exposes them with the journal's `--metrics-port`); the gauge of
divisions known to be down is read from PostgreSQL at scrape time by the API's /metrics
(`refresh`), so it holds whichever process found the division down.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from bossa.db import Pool
from bossa.provisioning import store

__all__ = [
    "DIRECT_ACKS_REFUSED",
    "DIVISION_DOWN",
    "DIVISION_TRANSITIONS",
    "FAILURES",
    "ORDERS_RECOVERED",
    "PARKED",
    "PROBES",
    "refresh",
]

FAILURES = Counter(
    "bossa_provisioning_delivery_failures",
    "Commands not delivered, by division, error code and cause (refused: the server "
    "answered with an error, counted as an attempt; unreachable: not counted)",
    ["division", "code", "cause"],
)
PARKED = Counter(
    "bossa_provisioning_parked",
    "Commands parked after their last attempt (or refused for good), by division and code",
    ["division", "code"],
)
DIVISION_TRANSITIONS = Counter(
    "bossa_provisioning_division_transitions",
    "Divisions found down (unreachable) or answering again, as this process saw them",
    ["division", "to"],
)
PROBES = Counter(
    "bossa_provisioning_probes",
    "Protocol checks of a division that is down, by outcome (up, down)",
    ["division", "outcome"],
)
DIVISION_DOWN = Gauge(
    "bossa_provisioning_division_down",
    "1 while a division is known to be down (its down-hold has not run out), else 0",
    ["division"],
)

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


async def refresh(pool: Pool) -> None:
    """Read the division gauge now (the API's /metrics calls this on every scrape)."""
    async with pool.connection() as conn:
        rows = await store.division_states(conn)
    DIVISION_DOWN.clear()
    for division, down in rows:
        DIVISION_DOWN.labels(division).set(1 if down else 0)
