"""Prometheus metrics of missed-call alerts, kept in the `bossa alerts serve` process and
served on its own status port (/metrics beside /readyz), since that process goes on while
the database is down."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CALLS",
    "DATABASE_UP",
    "INTAKE_REJECTED",
    "LATENCY",
    "LINKS",
    "NOTICES",
    "RECEIPTS",
    "RECONNECTS",
    "REPLAYED",
    "SIP_RETRANSMISSIONS",
    "SPOOL_DEPTH",
    "SPOOL_FSYNCS",
    "SUBMITS",
    "UPLINKS",
]

CALLS = Counter("bossa_alerts_calls", "Missed calls recorded", ["via", "database"])
INTAKE_REJECTED = Counter(
    "bossa_alerts_intake_rejected", "Intake requests refused (malformed, no callee, ...)", ["why"]
)
SIP_RETRANSMISSIONS = Counter(
    "bossa_alerts_sip_retransmissions", "Retransmitted SIP requests absorbed by a transaction"
)
NOTICES = Counter("bossa_alerts_notices", "SMS notices decided, by message kind", ["kind"])
SUBMITS = Counter(
    "bossa_alerts_submits",
    "submit_sm parts, by outcome (sent, accepted, throttled, rejected)",
    ["outcome"],
)
RECEIPTS = Counter("bossa_alerts_receipts", "Delivery receipts received")
UPLINKS = Counter("bossa_alerts_uplinks", "Uplink replies, by outcome", ["outcome"])
LINKS = Gauge("bossa_alerts_smpp_links", "SMPP binds currently bound")
RECONNECTS = Counter("bossa_alerts_smpp_reconnects", "SMPP reconnection attempts")
DATABASE_UP = Gauge("bossa_alerts_database_up", "1 while the database monitor says up")
SPOOL_DEPTH = Gauge(
    "bossa_alerts_spool_depth", "Missed calls spooled on disk, not yet in the database"
)
SPOOL_FSYNCS = Counter(
    "bossa_alerts_spool_fsyncs",
    "Spool flushes to disk (one fsync for every record appended while the last one ran)",
)
REPLAYED = Counter("bossa_alerts_replayed", "Spooled missed calls written to the database")
LATENCY = Histogram(
    "bossa_alerts_intake_seconds",
    "From a missed call's arrival to its SMS accepted by the SMSC",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60),
)
