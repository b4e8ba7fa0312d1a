"""Prometheus metrics of sync: events published, dropped, held back and processed, the
READY backlog per lane (S13 counts only READY events) and the outbox, read from
PostgreSQL at scrape time (`refresh`), and the delay from a change to its application."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from bossa.db import Pool
from bossa.sync import store

__all__ = [
    "APPLIED",
    "DELAY",
    "DROPPED",
    "HELD",
    "LISTENER_ACTIVE",
    "MODE",
    "MODE_SWITCHES",
    "OUTBOX",
    "OUTBOXED",
    "PROCESSED",
    "PUBLISHED",
    "PUBLISHER_CONNECTED",
    "READY",
    "refresh",
]

PUBLISHED = Counter(
    "bossa_sync_events_published_total", "Business events enqueued, by type", ["type"]
)
DROPPED = Counter(
    "bossa_sync_events_dropped_total",
    "Internal events the policy hook dropped before publishing (S2), by name",
    ["event"],
)
OUTBOXED = Counter(
    "bossa_sync_events_outboxed_total",
    "Business events kept in the outbox because the publisher was disconnected (S4)",
)
APPLIED = Counter(
    "bossa_sync_events_applied_total",
    "Business events applied to the pipeline's account data, by type and outcome",
    ["type", "outcome"],
)
PROCESSED = Counter(
    "bossa_sync_events_processed_total",
    "Business events marked PROCESSED by the listener, by lane and type (events/s is its rate)",
    ["lane", "type"],
)
READY = Gauge(
    "bossa_sync_ready_events", "Business events READY (waiting) on the lane, at scrape", ["lane"]
)
OUTBOX = Gauge(
    "bossa_sync_outbox_events",
    "Business events waiting in the outbox for the publisher to be connected, at scrape",
)
PUBLISHER_CONNECTED = Gauge(
    "bossa_sync_publisher_connected", "1 while the publisher enqueues on the lanes (S4)"
)
LISTENER_ACTIVE = Gauge(
    "bossa_sync_listener_active",
    "1 while this process's listener is connected and processing (S9, S11)",
    ["lane"],
)
HELD = Gauge(
    "bossa_sync_held", "1 while the listener holds: an event failed and waits for a fix", ["lane"]
)
MODE = Gauge(
    "bossa_sync_pipeline_mode",
    "S13: 1 for the interleaving pipeline's current mode (cdrs or events), 0 for the other",
    ["lane", "mode"],
)
MODE_SWITCHES = Counter(
    "bossa_sync_mode_switches_total",
    "S13: the interleaving pipeline's switches between rating CDRs and events, by reason",
    ["lane", "reason"],
)
DELAY = Histogram(
    "bossa_sync_apply_delay_seconds",
    "From a change's commit to its event being applied",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600),
)


async def refresh(pool: Pool) -> None:
    """Read the table gauges now (the API's /metrics calls this on every scrape)."""
    async with pool.connection() as conn:
        lanes = await store.ready_by_lane(conn)
        box = await store.outbox(conn)
        publisher = await store.publisher(conn)
    for lane, n in lanes.items():
        READY.labels(lane).set(n)
    OUTBOX.set(int(box["n"]))
    PUBLISHER_CONNECTED.set(int(bool(publisher["connected"])))
