"""Prometheus gauges of billing, read from PostgreSQL at scrape time (through the store)."""

from __future__ import annotations

from prometheus_client import Gauge

from bossa.billing import store
from bossa.db import Pool

__all__ = ["refresh"]

RUN_OPEN = Gauge("bossa_billing_run_open", "1 while a bill run holds the books (payments staged)")
RUN_PROGRESS = Gauge("bossa_billing_run_progress_ratio", "Share of the open run's accounts billed")
STAGED = Gauge("bossa_billing_staged_items", "Staged items not yet settled", ["kind"])
LAG = Gauge("bossa_billing_settlement_lag_seconds", "Age of the oldest unsettled staged item")


async def refresh(pool: Pool) -> None:
    async with pool.connection() as conn:
        row = await store.gauges(conn)
    RUN_OPEN.set(1 if row["open_run"] is not None else 0)
    RUN_PROGRESS.set(float(row["progress"] or 0))
    STAGED.labels("deposit").set(int(row["staged_deposits"]))
    STAGED.labels("writeoff").set(int(row["staged_writeoffs"]))
    LAG.set(float(row["settlement_lag_s"] or 0))
