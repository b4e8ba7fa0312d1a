"""What an operator does with the journal (P10): look, enqueue, retry, edit, park, discard,
purge, and tune lanes. One function per use case, each owning its transaction.

Every change is audited with who, when, why and the entry before and after. A change to a
keyed entry first takes its key's lock, the same lock enqueue and ack take, so an
operator never races a worker into breaking per-key order.

Lanes are declared and owned (see docs/journal.md): a lane an operator names must have
been declared (NotFound otherwise: a typo must not make a lane), and the generic
operator doors may create entries, or rewrite their payloads, only on lanes the journal
itself owns. A provisioning command is rewritten through provisioning, which knows its
shape, never here.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bossa.db import Conn
from bossa.errors import Conflict, Forbidden, InvalidInput, NotFound
from bossa.journal import metrics, store
from bossa.journal.models import (
    GENERIC_OWNER,
    MAX_KEY_LENGTH,
    MAX_PAGE,
    BlockedKey,
    BulkAction,
    BulkFilter,
    BulkResult,
    Counts,
    Enqueued,
    EntryDetail,
    EntryFilter,
    EntryRecord,
    EntryState,
    EntrySummary,
    Lane,
    NewEntry,
    check_id,
    check_limit,
    check_text,
    encode_payload,
    lane_name,
)
from bossa.journal.settings import JournalSettings, LanePolicy
from bossa.journal.store import Journal
from bossa.journal.worker import DB_ERRORS, DatabaseLost, Handler, Worker
from bossa.logs import get_logger

log = get_logger("bossa.journal.service")

__all__ = [
    "blocked_keys",
    "bulk",
    "counts",
    "discard",
    "edit",
    "enqueue",
    "lane_policy",
    "lanes",
    "list_entries",
    "park",
    "purge",
    "retry",
    "set_lane_policy",
    "show",
    "work",
]


# -- lanes -------------------------------------------------------------------------------


async def lanes(journal: Journal, *, after: str = "", limit: int = MAX_PAGE) -> list[Lane]:
    """Declared lanes with their owner and stored overrides, by name, a page at a time
    (those named after `after`)."""
    if after:
        lane_name(after, "after")
    return await journal.lanes(after=after, limit=check_limit(limit))


async def lane_policy(journal: Journal, lane: str) -> LanePolicy:
    """A declared lane's effective policy, read now (not from the cache)."""
    lane_name(lane)
    async with journal.pool.connection() as conn:
        await store.lane_of(conn, lane)
        return await journal.policy(lane, fresh=True, conn=conn)


async def set_lane_policy(
    journal: Journal, lane: str, changes: dict[str, Any], *, actor: str
) -> LanePolicy:
    """Change a declared lane's overrides, whoever owns it (operators tune provisioning's
    retries here); an undeclared lane is refused, not made, and so is a value out of its
    setting's range (docs/journal.md), naming the setting."""
    _need_actor(actor)
    lane_name(lane)
    if not changes:
        raise InvalidInput("name at least one setting to change", field="settings")
    for name in changes:
        if "\x00" in name:
            raise InvalidInput("a setting's name must not contain NUL characters", field="settings")
    return await journal.set_policy(lane, changes, actor=actor)


async def _declared(conn: Conn, lane: str | None) -> None:
    """A lane filter names a declared lane: a typo must not answer "nothing there"."""
    if lane is not None:
        await store.lane_of(conn, lane_name(lane))


# -- entries -----------------------------------------------------------------------------


async def enqueue(journal: Journal, entry: NewEntry, *, actor: str) -> Enqueued:
    """An operator's or integrator's own entry, recorded as created by `actor`. An
    unknown lane is declared for the journal (whose `journal work` consumes it); another
    module's lane is refused, and nothing is written."""
    _need_actor(actor)
    name = lane_name(entry.lane, "entry.lane")
    async with journal.pool.connection() as conn, conn.transaction():
        found = await store.find_lane(conn, name)
        if found is None:
            await store.declare_lane(conn, name, GENERIC_OWNER, actor)
        else:
            _refuse_foreign(found, "enqueue on")
        return await journal.enqueue_one(entry, conn=conn, actor=actor)


async def list_entries(journal: Journal, where: EntryFilter) -> list[EntrySummary]:
    """Entries, oldest first, filtered by any of lane, state, key, age, last error code."""
    where = where.checked()
    async with journal.pool.connection() as conn:
        await _declared(conn, where.lane)
        return await store.list_entries(conn, where)


async def show(journal: Journal, entry_id: int) -> EntryDetail:
    """One entry with its error history and the operator actions taken on it."""
    check_id(entry_id)
    async with journal.pool.connection() as conn:
        found = await store.entry(conn, entry_id)
        if found is None:
            raise NotFound(f"no journal entry {entry_id}", field="id")
        audit = await store.audit_of_entry(conn, entry_id)
    return EntryDetail(**found.model_dump(), audit=audit)


async def blocked_keys(
    journal: Journal, lane: str | None = None, limit: int = 100
) -> list[BlockedKey]:
    """Keys whose head is parked or failing: the contracts an operator should look at."""
    check_limit(limit)
    async with journal.pool.connection() as conn:
        await _declared(conn, lane)
        return await store.blocked_keys(conn, lane, limit)


async def counts(journal: Journal, *, window_s: float = 60.0) -> Counts:
    """Entries by lane and state, oldest age, and entries finished per second lately."""
    async with journal.pool.connection() as conn:
        return await store.counts(conn, window_s)


# -- actions on one entry ----------------------------------------------------------------


@dataclass
class _Change:
    conn: Conn
    entry: EntryRecord
    is_head: bool


async def _locked(conn: Conn, entry_id: int) -> _Change:
    check_id(entry_id)
    peek = await store.entry(conn, entry_id)
    if peek is None:
        raise NotFound(f"no journal entry {entry_id}", field="id")
    if peek.key is not None:
        await store.lock_key(conn, peek.lane, peek.key)
    entry = await store.entry_for_update(conn, entry_id)
    head = True
    if entry.key is not None:
        head = await store.is_head(conn, entry.lane, entry.key, entry_id)
    return _Change(conn, entry, head)


def _refuse_unless(change: _Change, allowed: set[EntryState], action: str) -> None:
    state = change.entry.state
    if state in allowed:
        return
    if state is EntryState.TAKEN:
        reason = "it is in flight under a worker's lease; wait until it finishes or expires"
    elif state in (EntryState.DONE, EntryState.DISCARDED):
        reason = f"it is already {state}"
    else:
        reason = f"it is {state}"
    raise Conflict(f"cannot {action} entry {change.entry.id}: {reason}", field="id")


def _refuse_foreign(lane: Lane, action: str, *, owner: str = GENERIC_OWNER) -> None:
    if lane.owner != owner:
        raise Forbidden(
            f"cannot {action} lane {lane.lane!r} here: it belongs to {lane.owner},"
            f" which checks its entries' shape; go through {lane.owner}",
            field="lane",
        )


async def _audit(
    change: _Change, *, actor: str, action: str, reason: str | None, after: dict[str, Any]
) -> None:
    before = {"state": str(change.entry.state), "payload": change.entry.payload}
    await store.record_audit(
        change.conn,
        actor=actor,
        action=action,
        entry_id=change.entry.id,
        lane=change.entry.lane,
        reason=reason,
        before=before,
        after=after,
    )


def _need_actor(actor: str) -> None:
    if not actor or not actor.strip():
        raise InvalidInput("an operator action needs the operator's name", field="actor")
    check_text(actor, "actor", limit=MAX_KEY_LENGTH)


async def retry(
    journal: Journal, entry_id: int, *, actor: str, reason: str | None = None
) -> EntryState:
    """Make a parked or backing-off entry due now, with a fresh set of attempts."""
    _need_actor(actor)
    check_text(reason, "reason")
    async with journal.pool.connection() as conn, conn.transaction():
        change = await _locked(conn, entry_id)
        _refuse_unless(change, {EntryState.PARKED, EntryState.READY}, "retry")
        state = EntryState.READY if change.is_head else EntryState.WAITING
        await store.set_state(conn, entry_id, state, not_before=datetime.now(UTC), attempts=0)
        await _audit(
            change, actor=actor, action="retry", reason=reason, after={"state": state.value}
        )
        await store.wake(conn, change.entry.lane)
    return state


async def park(
    journal: Journal, entry_id: int, *, actor: str, reason: str | None = None
) -> EntryState:
    """Park an entry: no worker takes it, and it keeps blocking its key."""
    _need_actor(actor)
    check_text(reason, "reason")
    async with journal.pool.connection() as conn, conn.transaction():
        change = await _locked(conn, entry_id)
        _refuse_unless(change, {EntryState.WAITING, EntryState.READY}, "park")
        await store.set_state(conn, entry_id, EntryState.PARKED)
        await _audit(change, actor=actor, action="park", reason=reason, after={"state": "parked"})
    return EntryState.PARKED


async def discard(journal: Journal, entry_id: int, *, actor: str, reason: str) -> EntryState:
    """Give up on an entry for good; the next entry of its key becomes due."""
    _need_actor(actor)
    if not reason or not reason.strip():
        raise InvalidInput("discarding needs a reason, kept in the audit", field="reason")
    check_text(reason, "reason")
    async with journal.pool.connection() as conn, conn.transaction():
        change = await _locked(conn, entry_id)
        _refuse_unless(change, {EntryState.WAITING, EntryState.READY, EntryState.PARKED}, "discard")
        await store.set_state(conn, entry_id, EntryState.DISCARDED)
        if change.entry.key is not None:
            await store.advance_keys(conn, [change.entry.lane], [change.entry.key])
        await _audit(
            change, actor=actor, action="discard", reason=reason, after={"state": "discarded"}
        )
        await store.wake(conn, change.entry.lane)
    return EntryState.DISCARDED


async def edit(
    journal: Journal,
    entry_id: int,
    payload: Any,
    *,
    actor: str,
    reason: str | None = None,
    owner: str = GENERIC_OWNER,
) -> EntryState:
    """Replace the payload of an entry that is not in flight (to fix what made it fail).

    Only on lanes `owner` owns: the generic operator doors leave `owner` as the
    journal's, so a module's entries are rewritten only through that module (which
    passes its own name after checking the payload against its model). A lane nobody
    declared (a test's or an integrator's ad-hoc lane) counts as the journal's.
    """
    _need_actor(actor)
    check_text(reason, "reason")
    async with journal.pool.connection() as conn, conn.transaction():
        change = await _locked(conn, entry_id)
        lane = await store.find_lane(conn, change.entry.lane)
        if lane is not None:
            _refuse_foreign(lane, "edit entries of", owner=owner)
        elif owner != GENERIC_OWNER:
            raise Forbidden(
                f"cannot edit entries of lane {change.entry.lane!r} as {owner}:"
                " nobody declared it for that module",
                field="lane",
            )
        _refuse_unless(change, {EntryState.WAITING, EntryState.READY, EntryState.PARKED}, "edit")
        policy = await journal.policy(change.entry.lane, conn=conn)
        text = encode_payload(payload, field_name="payload", max_bytes=policy.max_payload_bytes)
        await store.set_payload(conn, entry_id, text)
        await _audit(
            change,
            actor=actor,
            action="edit",
            reason=reason,
            after={"state": str(change.entry.state), "payload": payload},
        )
    return change.entry.state


async def bulk(
    journal: Journal,
    action: BulkAction,
    where: BulkFilter,
    *,
    actor: str,
    reason: str | None,
    dry_run: bool = False,
) -> BulkResult:
    """Retry, park or discard every entry of a lane that the selection holds (by key,
    age, last error code), set-based: one statement for the lot, each entry audited
    with the reason. A dry run counts them and changes nothing. The lane's keys are
    locked first, in key order, so per-key order holds as with the one-entry actions;
    a discard then makes each key's next entry due."""
    where = where.checked()
    async with journal.pool.connection() as conn:
        await store.lane_of(conn, where.lane)
        if dry_run:
            matched = await store.bulk_count(conn, action, where)
            return BulkResult(
                action=action,
                lane=where.lane,
                dry_run=True,
                matched=matched,
                changed=0,
                entry_ids=[],
            )
    _need_actor(actor)
    if not reason or not reason.strip():
        raise InvalidInput("a bulk action needs a reason, kept in the audit", field="reason")
    check_text(reason, "reason")
    async with journal.pool.connection() as conn, conn.transaction():
        matched = await store.bulk_count(conn, action, where)
        changed = await store.bulk_set_state(conn, action, where, actor=actor, reason=reason)
        keyed = [row for row in changed if row["key"] is not None]
        if action is BulkAction.DISCARD and keyed:
            await store.advance_keys(
                conn, [row["lane"] for row in keyed], [row["key"] for row in keyed]
            )
        if changed and action is not BulkAction.PARK:
            await store.wake(conn, where.lane)
    return BulkResult(
        action=action,
        lane=where.lane,
        dry_run=False,
        matched=matched,
        changed=len(changed),
        entry_ids=[int(row["id"]) for row in changed],
    )


# -- retention ---------------------------------------------------------------------------


async def purge(journal: Journal, lane: str | None = None) -> int:
    """Delete finished entries past their lane's retention, in batches; returns how many.

    Each batch is its own short statement (autocommit), so a purge of millions never
    holds locks or a snapshot for long.
    """
    async with journal.pool.connection() as conn:
        if lane is None:
            names = await store.finished_lanes(conn)
        else:
            await store.lane_of(conn, lane_name(lane))
            names = [lane]
        total = 0
        batch = journal.settings.purge_batch
        for name in names:
            policy = await journal.policy(name, conn=conn)
            while True:
                deleted = await store.purge(conn, name, retention_s=policy.retention_s, limit=batch)
                total += deleted
                if deleted < batch:
                    break
    return total


# -- workers -----------------------------------------------------------------------------


async def worker_for(
    journal: Journal,
    lane: str,
    handlers: dict[str, Handler],
    *,
    listen_url: str | None,
    concurrency: int | None = None,
    batch_size: int | None = None,
) -> Worker:
    """A generic worker on one of the journal's own lanes. An undeclared lane is an
    operator's typo (NotFound); another module's lane is refused: no generic handler
    knows its kinds, so every entry would fail and park, blocking its key."""
    declared = await journal.lane(lane_name(lane))
    if declared.owner != GENERIC_OWNER:
        raise Forbidden(
            f"lane {lane!r} belongs to {declared.owner}: run {declared.owner}'s own daemon"
            " for it (a generic worker has no handler for its entries)",
            field="lane",
        )
    return Worker(
        journal,
        lane,
        handlers,
        listen_url=listen_url,
        concurrency=concurrency,
        batch_size=batch_size,
    )


async def work(
    journal: Journal,
    lane: str,
    handlers: dict[str, Handler],
    *,
    listen_url: str | None,
    concurrency: int | None = None,
    batch_size: int | None = None,
    until_idle: bool = False,
) -> Worker:
    """Run a generic worker on one of the journal's own lanes until SIGTERM (or until
    idle); returns it with its stats (see `worker_for`)."""
    worker = await worker_for(
        journal,
        lane,
        handlers,
        listen_url=listen_url,
        concurrency=concurrency,
        batch_size=batch_size,
    )
    await worker.run(install_signal_handlers=True, until_idle=until_idle)
    return worker


async def serve(
    lane: str,
    handlers: dict[str, Handler],
    *,
    concurrency: int | None = None,
    batch_size: int | None = None,
    until_idle: bool = False,
    actor: str = "cli",
) -> Worker | None:
    """`bossa journal work` as a process: SIGTERM and SIGINT stop it gracefully whenever
    they come, and a database that is not there yet (PostgreSQL restarting) is waited for.

    Until the worker runs, a stop ends the wait at once and returns None (nothing was
    taken); afterwards the worker finishes the entry in hand and gives back the rest. A
    database that does not answer within `database_outage_s` of the first try raises
    `DatabaseLost`, as a running worker does. Whatever else stops start-up (bad settings,
    pending migrations, a lane nobody declared) is raised at once.
    """
    from bossa import config
    from bossa.runtime import DatabaseUnavailable, running  # the runtime builds on us

    settings = config.load_all()["journal"]
    assert isinstance(settings, JournalSettings)
    patience = settings.database_outage_s
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        first_failure: float | None = None
        backoff = 0.2
        while not stop.is_set():
            worker: Worker | None = None
            try:
                async with running(actor=actor) as rt:
                    worker = await worker_for(
                        rt.journal,
                        lane,
                        handlers,
                        listen_url=rt.url,
                        concurrency=concurrency,
                        batch_size=batch_size,
                    )
                    if first_failure is not None:
                        log.warning("database answers; worker starting", lane=lane)
                    stopper = asyncio.create_task(_stop_when(stop, worker))
                    try:
                        await worker.run(until_idle=until_idle)
                    finally:
                        stopper.cancel()
                    return worker
            except (DatabaseUnavailable, *DB_ERRORS) as exc:
                if worker is not None:
                    raise  # the worker rides out outages itself; this is something else
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                if now - first_failure > patience:
                    raise DatabaseLost(
                        f"worker on lane {lane!r}: the database has not answered for"
                        f" {now - first_failure:.0f} s since start-up"
                        f" (BOSSA_JOURNAL_DATABASE_OUTAGE_S is {patience:g}); exiting for its"
                        f" supervisor to restart it (last error: {exc})"
                    ) from None
                log.warning(
                    "database not reachable at start-up; waiting for it",
                    lane=lane,
                    error=str(exc)[:200],
                    retry_in_s=backoff,
                )
                metrics.START_WAITS.labels(lane).inc()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, 5.0)
        log.info("worker stopped before it started", lane=lane)
        return None
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


async def _stop_when(stop: asyncio.Event, worker: Worker) -> None:
    await stop.wait()
    worker.stop()
