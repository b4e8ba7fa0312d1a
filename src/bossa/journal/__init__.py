"""The journal: bossa's durable PostgreSQL queue, under all five systems.

Accept the business now, hand the side effect to the journal in the same transaction,
deliver it later, in order per key, with its effect applied once. See docs/journal.md.

The public face: `Journal` (enqueue, claim, take, ack, fail, and the lane registry:
`declare_lane`, `lane`, `lanes`), the generic `Worker` every daemon runs, the models
they exchange, and `bossa.journal.service` for the operator's use cases. Other modules'
SQL reads entries only through the published view `journal.lane_entries` and declares
lanes with `journal.declare_lane(lane, owner)`.
"""

from bossa.journal.models import (
    GENERIC_OWNER,
    BulkAction,
    BulkFilter,
    BulkResult,
    Claim,
    Enqueued,
    Entry,
    EntryFilter,
    EntryState,
    Lane,
    NewEntry,
    Taken,
)
from bossa.journal.settings import JournalSettings, LanePolicy
from bossa.journal.store import FailResult, Failure, Journal
from bossa.journal.worker import (
    BatchHandler,
    DatabaseLost,
    Handler,
    HandlerError,
    Outage,
    Worker,
    WorkerStats,
)

__all__ = [
    "GENERIC_OWNER",
    "BatchHandler",
    "BulkAction",
    "BulkFilter",
    "BulkResult",
    "Claim",
    "DatabaseLost",
    "Enqueued",
    "Entry",
    "EntryFilter",
    "EntryState",
    "FailResult",
    "Failure",
    "Handler",
    "HandlerError",
    "Journal",
    "JournalSettings",
    "Lane",
    "LanePolicy",
    "NewEntry",
    "Outage",
    "Taken",
    "Worker",
    "WorkerStats",
]
