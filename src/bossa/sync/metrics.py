"""Prometheus metrics of sync: events published and applied, the READY backlog (S13
counts only READY events), and the delay from a change to its application."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["APPLIED", "DELAY", "HELD", "PUBLISHED", "READY"]

PUBLISHED = Counter(
    "bossa_sync_events_published_total", "Business events enqueued, by type", ["type"]
)
APPLIED = Counter(
    "bossa_sync_events_applied_total",
    "Business events applied to the pipeline's account data, by type and outcome",
    ["type", "outcome"],
)
READY = Gauge("bossa_sync_ready_events", "Business events READY (waiting) on the lane", ["lane"])
HELD = Gauge(
    "bossa_sync_held", "1 while the listener holds: an event failed and waits for a fix", ["lane"]
)
DELAY = Histogram(
    "bossa_sync_apply_delay_seconds",
    "From a change's commit to its event being applied",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600),
)
