"""The journal: bossa's durable PostgreSQL queue, under all five systems.

Accept the business now, hand the side effect to the journal in the same transaction,
deliver it later, in order per key, with its effect applied once. See docs/journal.md.
"""

from bossa.journal.models import Claim, Enqueued, Entry, EntryState, NewEntry, Taken
from bossa.journal.settings import JournalSettings, LanePolicy
from bossa.journal.store import FailResult, Failure, Journal
from bossa.journal.worker import BatchHandler, Handler, HandlerError, Worker, WorkerStats

__all__ = [
    "BatchHandler",
    "Claim",
    "Enqueued",
    "Entry",
    "EntryState",
    "FailResult",
    "Failure",
    "Handler",
    "HandlerError",
    "Journal",
    "JournalSettings",
    "LanePolicy",
    "NewEntry",
    "Taken",
    "Worker",
    "WorkerStats",
]
