"""Prometheus metrics of the journal: what workers do, and what the tables hold.

Worker counters live in the worker's process (expose them with `--metrics-port`); the
table gauges are read from PostgreSQL at scrape time by the API's /metrics (`refresh`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from bossa.db import Pool
from bossa.journal import store

__all__ = [
    "ACKED",
    "DATABASE_DOWN",
    "DATABASE_UNREACHABLE",
    "ENTRIES",
    "FAILED",
    "LEASE_EXPIRED",
    "OLDEST",
    "PARKED",
    "RELEASED",
    "STALE_ACKS",
    "START_LATENCY",
    "TAKEN",
    "THROUGHPUT",
    "refresh",
]

# A daemon's view of the database (journal workers, the rating inbox, the sync listener
# and pipeline): what an operator alerts on before the daemon gives up and exits.
DATABASE_UNREACHABLE = Counter(
    "bossa_journal_database_unreachable",
    "Steps a daemon could not run because the database did not answer",
    ["daemon"],
)
DATABASE_DOWN = Gauge(
    "bossa_journal_database_down", "1 while a daemon finds the database away", ["daemon"]
)
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
START_WAITS = Counter(
    "bossa_journal_start_waits",
    "Times a starting worker found its database unreachable and waited for it",
    ["lane"],
)
START_LATENCY = Histogram(
    "bossa_journal_start_latency_seconds",
    "From enqueue commit to handler start",
    ["lane"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

ENTRIES = Gauge("bossa_journal_entries", "Journal entries by lane and state", ["lane", "state"])
OLDEST = Gauge(
    "bossa_journal_oldest_age_seconds",
    "Age of the oldest entry by lane and state (pending age for unfinished states)",
    ["lane", "state"],
)
THROUGHPUT = Gauge(
    "bossa_journal_finished_per_second",
    "Entries finished per second over the last minute",
    ["lane"],
)


async def refresh(pool: Pool) -> None:
    """Read the table gauges now (the API's /metrics calls this on every scrape)."""
    async with pool.connection() as conn:
        report = await store.counts(conn, window_s=60.0)
    ENTRIES.clear()
    OLDEST.clear()
    THROUGHPUT.clear()
    for row in report.by_state:
        ENTRIES.labels(row.lane, row.state).set(row.entries)
        OLDEST.labels(row.lane, row.state).set(float(row.oldest_age_s or 0))
    for lane, rate in report.throughput_per_s.items():
        THROUGHPUT.labels(lane).set(rate)
