"""Prometheus metrics of rating: records rated, suspended and malformed, and the suspense
backlog read from PostgreSQL at scrape time."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from bossa.db import Pool
from bossa.rating import store
from bossa.rating.models import BatchReport

__all__ = ["observe", "refresh"]

RECORDS = Counter("bossa_rating_records_total", "Usage records by outcome", ["outcome"])
CHARGE = Counter("bossa_rating_charge_minor_total", "Charges rated, in minor units")
SUSPENDED = Gauge("bossa_rating_suspended_records", "Usage records waiting in suspense")


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
    SUSPENDED.set(int(row["suspended"]))
