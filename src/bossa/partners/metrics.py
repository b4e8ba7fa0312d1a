"""What an operator watches of the partner platform: runs, refusals, legacy calls, the
billing processor's records, rejects, files written and sent, transfer failures; and
gauges read from PostgreSQL at scrape time (billing logs waiting, files unsent, the age
of the oldest run not yet in a file the legacy billing system confirmed)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from bossa.db import Pool
from bossa.partners import store

__all__ = [
    "FILES_SENT",
    "FILES_WRITTEN",
    "INFRA",
    "LEGACY",
    "LEGACY_SECONDS",
    "RECORDS",
    "REFUSED",
    "REJECTS",
    "RUNS",
    "RUN_SECONDS",
    "TRANSFER_FAILURES",
    "refresh",
]

RUNS = Counter(
    "bossa_partners_runs_total", "Template runs, by template and outcome", ["template", "state"]
)
RUN_SECONDS = Histogram(
    "bossa_partners_run_seconds",
    "Time to execute a template run and commit its result and billing log",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
INFRA = Counter(
    "bossa_partners_infra_objects_total",
    "Biz objects run for legacy systems (infra channel), by object and outcome",
    ["object", "state"],
)
REFUSED = Counter(
    "bossa_partners_refused_total", "Runs refused before running, by reason", ["reason"]
)
LEGACY = Counter(
    "bossa_partners_legacy_calls_total",
    "Legacy system calls, by system and outcome",
    ["system", "outcome"],
)
LEGACY_SECONDS = Histogram(
    "bossa_partners_legacy_call_seconds", "Legacy system call time", ["system"]
)
RECORDS = Counter("bossa_partners_billing_records_total", "Billing logs rated into records")
REJECTS = Counter("bossa_partners_billing_rejects_total", "Billing logs refused to the error file")
FILES_WRITTEN = Counter("bossa_partners_mdr_files_written_total", "MDR files written")
FILES_SENT = Counter(
    "bossa_partners_mdr_files_sent_total", "MDR files confirmed on the SFTP server"
)
TRANSFER_FAILURES = Counter(
    "bossa_partners_mdr_transfer_failures_total", "MDR transfer rounds that failed"
)
LOGS_WAITING = Gauge("bossa_partners_billing_logs_waiting", "Billing logs not yet collected")
LOGS_PARKED = Gauge("bossa_partners_billing_logs_parked", "Billing logs parked by the journal")
RECORDS_UNFILED = Gauge("bossa_partners_records_unfiled", "Billing records not yet in an MDR file")
FILES_UNSENT = Gauge("bossa_partners_mdr_files_unsent", "MDR files written, not yet confirmed")
OLDEST_UNBILLED = Gauge(
    "bossa_partners_oldest_unbilled_seconds",
    "Age of the oldest billed run not yet in a confirmed MDR file",
)


async def refresh(pool: Pool) -> None:
    async with pool.connection() as conn:
        row = await store.gauges(conn)
    LOGS_WAITING.set(int(row["logs_waiting"]))
    LOGS_PARKED.set(int(row["logs_parked"]))
    RECORDS_UNFILED.set(int(row["records_unfiled"]))
    FILES_UNSENT.set(int(row["files_unsent"]))
    OLDEST_UNBILLED.set(float(row["oldest_unbilled_s"] or 0.0))
