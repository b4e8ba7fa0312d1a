"""Gauges of what the journal tables hold, refreshed from PostgreSQL at scrape time."""

from __future__ import annotations

from prometheus_client import Gauge

from bossa.db import Pool
from bossa.journal import operator

__all__ = ["refresh"]

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
    report = await operator.counts(pool)
    ENTRIES.clear()
    OLDEST.clear()
    THROUGHPUT.clear()
    for row in report["by_state"]:
        ENTRIES.labels(row["lane"], row["state"]).set(row["entries"])
        OLDEST.labels(row["lane"], row["state"]).set(float(row["oldest_age_s"] or 0))
    for lane, rate in report["throughput_per_s"].items():
        THROUGHPUT.labels(lane).set(rate)
