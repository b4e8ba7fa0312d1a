"""Prometheus metrics of rating: records rated, suspended and malformed, and the suspense
backlog read from PostgreSQL at scrape time."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from bossa.db import Pool
from bossa.rating import store
from bossa.rating.models import BatchReport, SuspenseReason

__all__ = ["observe", "refresh"]

RECORDS = Counter("bossa_rating_records_total", "Usage records by outcome", ["outcome"])
CHARGE = Counter("bossa_rating_charge_minor_total", "Charges rated, in minor units")
SUSPENDED = Gauge("bossa_rating_suspended_records", "Usage records waiting in suspense")
SUSPENDED_BY_REASON = Gauge(
    "bossa_rating_suspended_by_reason",
    "Usage records waiting in suspense, by reason (read at scrape time)",
    ["reason"],
)
RECYCLED = Counter(
    "bossa_rating_recycled_total", "Suspended records recycled, by outcome", ["outcome"]
)
RERATED = Counter("bossa_rating_rerated_total", "Rated records rated again by a rerate")


def observe(report: BatchReport) -> None:
    if report.repeated:
        return
    RECORDS.labels("rated").inc(report.rated)
    RECORDS.labels("suspended").inc(report.suspended)
    RECORDS.labels("malformed").inc(report.malformed)
    CHARGE.inc(report.charge or 0)


async def refresh(pool: Pool) -> None:
    async with pool.connection() as conn:
        row = await store.gauges(conn)
        counts = await store.suspense_counts(conn)
    SUSPENDED.set(int(row["suspended"]))
    # Every reason is set, 0 included, so a reason that empties reads 0, not its last value.
    for reason in SuspenseReason:
        SUSPENDED_BY_REASON.labels(reason.value).set(counts.get(reason.value, 0))
