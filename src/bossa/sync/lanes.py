"""Sync's lane and its daemon, the listener (S5, S6, S8).

`sync.pipeline.<instance>` (kind account-sync, keyed by customer): declared for 'sync' by
the module's migration; the contract service enqueues on it in the transaction of each
change, whether or not a listener runs (S5: the journal is the persistent queue).

The listener is a journal `Worker` with a batch handler: each take is a batch of
account-sync events of distinct customers (each customer's oldest unfinished one, so
per-account order holds across batches and restarts). A batch is applied twice over:

1. a trial, in a transaction that is always rolled back, finds the event that cannot be
   applied, if any. Then the whole batch is undone (S8): that event is held (parked,
   with its error) and the others go back READY without an attempt counted; the
   listener takes nothing more while an event is held, until an operator fixes the
   cause and retries it (`bossa journal retry`) or discards it. Then the batch is
   delivered again.
2. for real, in the ack's own transaction (`after_ack`): the account data changes and
   the events become PROCESSED in one commit. A listener killed at any moment has
   either committed both or neither, so an event is applied once, never twice.

The trial doubles the database work of applying, which is small next to the take and
the ack; what it buys is that a bad event holds the lane with its reason instead of
failing the ack's transaction, which would take the whole listener down and redeliver
only after the lease.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime

import psycopg

from bossa.db import Conn
from bossa.errors import UserError
from bossa.journal import Entry, Failure, Journal, Worker
from bossa.logs import get_logger
from bossa.sync import metrics, service
from bossa.sync.models import ACCOUNT_SYNC_KIND, AccountEvent
from bossa.sync.settings import SyncSettings

__all__ = ["listener"]

log = get_logger("bossa.sync.lanes")

#: Seconds between two questions to the database whether an event of the lane is held.
HELD_CHECK_S = 1.0


class _Rollback(Exception):
    """Ends the trial's transaction: it must never commit."""


def _failure(entry: Entry, exc: Exception) -> Failure:
    code = exc.field if isinstance(exc, UserError) and exc.field else type(exc).__name__
    return Failure(entry.id, f"apply:{code}"[:200], str(exc)[:4000] or repr(exc), final=True)


def listener(journal: Journal, settings: SyncSettings, *, listen_url: str | None = None) -> Worker:
    """The listener of the settings' pipeline instance (`bossa sync listen`)."""
    lane = settings.lane
    pool = journal.pool
    was_held = False
    #: When the database was last asked whether an event is held (monotonic), and the
    #: answer. Asked at most once a second: the published view casts the state to text,
    #: so the question is a scan of the lane (docs: "Known limits"). A hold this
    #: listener makes itself is known at once.
    checked_at = -1.0
    held_now = False

    async def trial(entries: list[Entry]) -> dict[int, Failure | None]:
        outcome: dict[int, Failure | None] = {e.id: None for e in entries}
        bad: tuple[Entry, Exception] | None = None
        async with pool.connection() as conn:
            with contextlib.suppress(_Rollback):
                async with conn.transaction():
                    for entry in entries:
                        try:
                            await service.apply(conn, [AccountEvent.from_entry(entry.payload)])
                        except (UserError, psycopg.DataError, psycopg.IntegrityError) as exc:
                            bad = (entry, exc)
                            break
                    raise _Rollback
        if bad is None:
            return outcome
        failed, error = bad
        log.warning(
            "business event cannot be applied: batch rolled back, listener holds until it"
            " is fixed (bossa sync report)",
            lane=lane,
            entry=failed.id,
            key=failed.key,
            error=str(error)[:300],
        )
        nonlocal held_now
        held_now = True
        for entry in entries:
            outcome[entry.id] = (
                _failure(entry, error)
                if entry.id == failed.id
                else Failure(
                    entry.id,
                    "batch_rolled_back",
                    f"entry {failed.id} of its batch could not be applied",
                    counted=False,
                )
            )
        return outcome

    async def commit(conn: Conn, entries: list[Entry]) -> None:
        events = [AccountEvent.from_entry(e.payload) for e in entries]
        await service.apply(conn, events)
        now = datetime.now(UTC)
        for event in events:
            metrics.DELAY.observe(max(0.0, (now - event.occurred_at).total_seconds()))

    async def gate() -> bool:
        nonlocal was_held, checked_at, held_now
        if held_now or time.monotonic() - checked_at >= HELD_CHECK_S:
            held_now = await service.held(pool, lane)
            checked_at = time.monotonic()
        is_held = held_now
        metrics.HELD.labels(lane).set(int(is_held))
        if is_held and not was_held:
            log.warning("listener holds: an event waits for an operator", lane=lane)
        elif was_held and not is_held:
            log.warning("listener resumes: no event is held any more", lane=lane)
        was_held = is_held
        return not is_held

    return Worker(
        journal,
        lane,
        {ACCOUNT_SYNC_KIND: lambda entry: None},
        listen_url=listen_url,
        batch_size=settings.batch,
        # Strict queue order across customers within a batch is not needed (each
        # customer's events stay in order); one taker keeps batches from racing.
        concurrency=1,
        batch_handler=trial,
        after_ack=commit,
        gate=gate,
    )
