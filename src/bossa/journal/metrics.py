"""Prometheus metrics of the journal: what workers do, and what the tables hold.

Worker counters live in the worker's process (expose them with `--metrics-port`); the
table gauges are read from PostgreSQL at scrape time by the API's /metrics.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = [
    "ACKED",
    "FAILED",
    "LEASE_EXPIRED",
    "PARKED",
    "RELEASED",
    "STALE_ACKS",
    "START_LATENCY",
    "TAKEN",
]

TAKEN = Counter("bossa_journal_taken", "Entries taken by workers", ["lane"])
ACKED = Counter("bossa_journal_acked", "Entries acked (done) by workers", ["lane"])
FAILED = Counter("bossa_journal_failed", "Handler failures (retried or parked)", ["lane"])
PARKED = Counter("bossa_journal_parked", "Entries parked after their last attempt", ["lane"])
RELEASED = Counter("bossa_journal_released", "Entries given back by stopping workers", ["lane"])
LEASE_EXPIRED = Counter(
    "bossa_journal_lease_expired", "Leases that ran out and were handed out again", ["lane"]
)
STALE_ACKS = Counter(
    "bossa_journal_stale_acks",
    "Acks refused because the lease had passed to another worker",
    ["lane"],
)
START_LATENCY = Histogram(
    "bossa_journal_start_latency_seconds",
    "From enqueue commit to handler start",
    ["lane"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
