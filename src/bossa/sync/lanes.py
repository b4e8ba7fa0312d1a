"""Sync's lanes and its daemon, the listener (S5-S9, S11; BRM DAT_Listener).

`sync.pipeline.<instance>` (one per pipeline instance, declared for 'sync' by the
migrations): the publisher enqueues on it in the transaction of each change, whether or
not a listener runs (S5: the journal is the persistent queue). Two kinds: `account-sync`
(a contract's change, `AccountEvent`) and `business-event` (`BusinessEvent`).

The listener of an instance:

1. **Starts** (S11): registers, reports `starting`, runs each pipeline module's `init`;
   events wait READY until every module is ready, then it reports `active`.
2. **Takes** up to `BOSSA_SYNC_BATCH` events (each customer's oldest unfinished one:
   per-account order holds across takes, threads and restarts) and turns them into
   items, in queue order: consecutive account-sync events (contracts' events and the
   types the file marks `batch: true`) of the default thread form one batch (S8); every
   other event is an item of its own.
3. **Dispatches** the items on the threads of `bossa.sync.models.Dispatcher` (S7), in queue order.
4. **Processes** an item in one transaction: the ack (PROCESSED) and what its modules
   change commit together (S6), so a listener killed at any moment has applied an
   event once or not at all. An event that cannot be applied rolls its whole batch
   back (S8): that event is held (parked, with the error), the batch's others go back
   READY uncounted, nothing more is started, and the listener takes nothing while an
   event of its lane is held, until an operator retries or discards it; then the batch
   is delivered again.
5. **Disconnects** (S9) when an operator asks (`bossa sync listener disconnect`): it
   starts nothing more, gives back what it took and did not start, waits for its
   threads to finish their current event, and reports `disconnected`; on `connect` it
   takes again. Nothing is lost: what it did not process stays READY.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bossa import rating
from bossa.db import Conn
from bossa.errors import InvalidInput, UserError
from bossa.journal import Entry, Failure, Journal, Outage, Taken, WorkerStats
from bossa.journal import service as journal_ops
from bossa.journal.worker import DB_ERRORS
from bossa.logs import get_logger
from bossa.sync import metrics, service, store
from bossa.sync.models import (
    ACCOUNT_SYNC_KIND,
    BUSINESS_KIND,
    DEFAULT_POOL,
    AccountEvent,
    BusinessEvent,
    Dispatcher,
    EventConfig,
    Mode,
    PipelineStats,
    SwitchReason,
    Thresholds,
    next_mode,
)
from bossa.sync.service import MODULES, ModuleContext
from bossa.sync.settings import SyncSettings

__all__ = ["Interleaver", "Listener", "interleaver", "listener"]

log = get_logger("bossa.sync.lanes")

#: Seconds between two questions to the database whether an event of the lane is held
#: (the journal's published view casts the state to text: the question scans the lane).
HELD_CHECK_S = 1.0
#: Seconds between two looks at the operator's wish (connected or not) during a round.
WISH_CHECK_S = 0.1
#: Seconds between two reports that the listener is alive (`seen_at`).
SEEN_EVERY_S = 2.0
#: Seconds between two purges of processed events past their retention (S6).
PURGE_EVERY_S = 600.0


class _Rollback(Exception):
    """Ends a transaction that must never commit."""


class _Stale(Exception):
    """The lease passed to another listener: the ack was refused, nothing applied."""


Item = list[Entry]


class Listener:
    """The listener of one pipeline instance (`bossa sync listen`)."""

    def __init__(
        self, journal: Journal, settings: SyncSettings, *, listen_url: str | None = None
    ) -> None:
        self.journal = journal
        self.pool = journal.pool
        self.settings = settings
        self.instance = settings.instance
        self.lane = settings.lane
        self.events: EventConfig = service.event_config(settings)
        self.dispatcher: Dispatcher[Item] = Dispatcher(self.events.threads)
        self.stats = WorkerStats()
        self.state = "stopped"
        self._stopping = asyncio.Event()
        self._held_now = False
        self._held_checked = -1.0
        self._was_held = False
        self._seen_at = -1.0
        self._purged_at = time.monotonic()
        self._reaped_at = -1.0

    def stop(self) -> None:
        """Finish the events in hand, give back the rest, exit (SIGTERM)."""
        self._stopping.set()
        self.dispatcher.halt()

    # -- the loop --------------------------------------------------------------------

    async def run(self, *, install_signal_handlers: bool = False, until_idle: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop)
        outage = self.outage("sync listener")
        started = False
        try:
            while not self.stopping:
                try:
                    if not started:
                        await self.start()
                        started = True
                    if await self._turn(until_idle):
                        return
                    outage.answered()
                except DB_ERRORS as exc:
                    await self.ride_out(outage, exc)
        finally:
            if install_signal_handlers:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
            await self.close()

    async def _turn(self, until_idle: bool) -> bool:
        """One look and, when it may, one take; True when `until_idle` and nothing is
        left to do."""
        if not await self.may_take():
            if until_idle:
                return True
            await self.pause(
                self.settings.poll_s
                if self.state == "disconnected"
                else min(self.settings.poll_s * 5, 1.0)
            )
            return False
        if not await self.take_and_process():
            if until_idle and not await self.journal.busy(self.lane):
                return True
            await self.pause(self.settings.poll_s)
        return False

    # -- the steps, public for the interleaving pipeline (S13) ------------------------

    def outage(self, who: str) -> Outage:
        """The database's absence as this daemon's loop sees it: waited out for at most
        the journal's `database_outage_s`, then `DatabaseLost` (the supervisor restarts
        the process). Meanwhile nothing is lost: events taken stay leased until their
        lease expires and are handed out again, the others stay READY."""
        return Outage(f"{who} of lane {self.lane}", self.journal.settings.database_outage_s)

    async def ride_out(self, outage: Outage, exc: Exception) -> None:
        """After a step the database did not answer: wait (or raise DatabaseLost)."""
        wait = outage.failed(exc)
        # Stale connections of a restarted server: dropped now, not one per use.
        with contextlib.suppress(Exception):
            await self.pool.check()
        await self.pause(wait)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def start(self) -> None:
        """S11: register and initialise every module; events wait READY meanwhile."""
        await self._start()

    async def may_take(self) -> bool:
        """Connected (S9) and no event of the lane held (S8): the listener may take. It
        reports its state (active or disconnected) on the way."""
        if not await self._connected():
            await self._report("disconnected")
            return False
        await self._report("active")
        return await self._gate()

    async def take_and_process(self, limit: int | None = None) -> int:
        """One take of at most `limit` events (`BOSSA_SYNC_BATCH` by default), processed
        in batches and on threads as the listener does; returns the events taken (0:
        none READY). Call `may_take` first."""
        await self._housekeeping()
        taken = await self.journal.take(self.lane, limit or self.settings.batch)
        if not taken.entries:
            return 0
        await self._round(taken)
        return len(taken.entries)

    async def pause(self, seconds: float) -> None:
        """Sleep, woken at once by `stop`."""
        await self._sleep(seconds)

    async def close(self) -> None:
        """Report stopped (the listener's last word)."""
        with contextlib.suppress(*DB_ERRORS):
            await self._report("stopped", force=True)
        metrics.LISTENER_ACTIVE.labels(self.lane).set(0)
        log.info(
            "sync listener stopped",
            lane=self.lane,
            processed=self.stats.acked,
            held=self.stats.parked,
            released=self.stats.released,
        )

    async def _start(self) -> None:
        """S11: events wait READY until every module of the pipeline is ready."""
        async with self.pool.connection() as conn:
            await store.listener_register(conn, self.instance)
        await self._report("starting", force=True)
        log.info("sync listener starting: initialising its modules", lane=self.lane)
        wanted = {m for d in self.events.business_events.values() for m in d.modules}
        for name in sorted(wanted | {"account_data"}):
            init = MODULES[name].init
            if init is not None:
                await init(self.pool)
        policy = await self.journal.policy(self.lane, fresh=True)
        if policy.retention_s != self.settings.retention_s:
            await self.journal.set_policy(
                self.lane, {"retention_s": self.settings.retention_s}, actor="sync-listener"
            )
        log.info("sync listener ready", lane=self.lane, threads=self.dispatcher.sizes)

    async def _connected(self) -> bool:
        async with self.pool.connection() as conn:
            row = await store.listener(conn, self.instance)
        return row is None or bool(row["connected"])

    async def _report(self, state: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if state == self.state and not force and now - self._seen_at < SEEN_EVERY_S:
            return
        if state != self.state and state in ("active", "disconnected"):
            log.warning(
                "sync listener connected" if state == "active" else "sync listener disconnected",
                lane=self.lane,
            )
        self.state = state
        self._seen_at = now
        metrics.LISTENER_ACTIVE.labels(self.lane).set(int(state == "active"))
        async with self.pool.connection() as conn:
            await store.set_listener_state(conn, self.instance, state)

    async def _gate(self) -> bool:
        """False while an event of the lane is held for an operator (S8)."""
        if self._held_now or time.monotonic() - self._held_checked >= HELD_CHECK_S:
            self._held_now = await service.held(self.pool, self.lane)
            self._held_checked = time.monotonic()
        held = self._held_now
        metrics.HELD.labels(self.lane).set(int(held))
        if held and not self._was_held:
            log.warning("listener holds: an event waits for an operator", lane=self.lane)
        elif self._was_held and not held:
            log.warning("listener resumes: no event is held any more", lane=self.lane)
        self._was_held = held
        return not held

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._reaped_at >= self.journal.settings.reap_interval_s:
            self._reaped_at = now
            reaped = await self.journal.reap_expired(self.lane)
            if reaped:
                log.warning(
                    "leases expired; events handed out again", lane=self.lane, events=len(reaped)
                )
        if now - self._purged_at >= PURGE_EVERY_S:
            self._purged_at = now
            await journal_ops.purge(self.journal, self.lane)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    # -- a round: the items of one take --------------------------------------------

    def items(self, entries: Sequence[Entry]) -> list[tuple[str, Item]]:
        """The take as (thread pool, item) in queue order: runs of account-sync events
        of the default thread are batches; everything else goes one at a time."""
        items: list[tuple[str, Item]] = []
        open_batch: Item | None = None
        for entry in entries:
            btype, batch = self._classify(entry)
            pool = self.dispatcher.pool_of(btype)
            if batch and pool == DEFAULT_POOL:
                if open_batch is None or len(open_batch) >= self.settings.batch:
                    open_batch = []
                    items.append((pool, open_batch))
                open_batch.append(entry)
                continue
            open_batch = None
            items.append((pool, [entry]))
        return items

    def _classify(self, entry: Entry) -> tuple[str, bool]:
        if entry.kind == ACCOUNT_SYNC_KIND:
            return ACCOUNT_SYNC_KIND, True
        btype = entry.payload.get("type") if isinstance(entry.payload, dict) else None
        if not isinstance(btype, str):
            return "", False
        definition = self.events.business_events.get(btype)
        return btype, bool(definition and definition.batch)

    async def _round(self, taken: Taken) -> None:
        self.stats.taken += len(taken.entries)
        self.dispatcher.resume()
        settled: set[int] = set()
        done = asyncio.Event()
        watchers = [
            asyncio.create_task(self._heartbeat(taken, settled, done)),
            asyncio.create_task(self._watch_wish(done)),
        ]

        async def work(item: Item, thread: str, began: Callable[[], None]) -> None:
            await self._process(taken, item, thread, began)
            settled.update(e.id for e in item)

        try:
            outcome = await self.dispatcher.run(self.items(taken.entries), work)
        finally:
            done.set()
            await asyncio.gather(*watchers, return_exceptions=True)
        unstarted = [e.id for item in outcome.unstarted for e in item]
        if unstarted:
            released = await self.journal.release(taken.token, unstarted)
            self.stats.released += len(released)

    async def _heartbeat(self, taken: Taken, settled: set[int], done: asyncio.Event) -> None:
        """Extend the leases of the take's unsettled events every third of the lease: a
        slow event (a recycle) is not handed to another listener while it runs."""
        lease_ms = (await self.journal.policy(self.lane)).lease_ms
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=lease_ms / 3000)
            if done.is_set():
                return
            with contextlib.suppress(*DB_ERRORS):
                await self.journal.heartbeat(
                    taken.token, self.lane, [i for i in taken.ids if i not in settled]
                )

    async def _watch_wish(self, done: asyncio.Event) -> None:
        """S9: a disconnect asked during a round stops the dispatch at once. Meanwhile
        the listener keeps saying it is alive: a long event (a recycle) must not make it
        look stopped, or a disconnect would return before that event is finished."""
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=WISH_CHECK_S)
            if done.is_set():
                return
            with contextlib.suppress(*DB_ERRORS):
                await self._report(self.state)
                if not self.dispatcher.halted and not await self._connected():
                    log.info("disconnect asked: finishing the events in hand", lane=self.lane)
                    self.dispatcher.halt()

    async def _process(
        self, taken: Taken, item: Item, thread: str, began: Callable[[], None]
    ) -> None:
        """One item in one transaction: the ack and the modules' changes (S6, S8).
        Processing has begun once the item is marked PROCESSED in its transaction (the
        seed's DAT_Listener: dequeue, mark, route): the next item may start then."""
        try:
            types = await self._apply(taken, item, thread, began)
        except _Stale:
            log.warning("ack refused: the lease passed to another listener", lane=self.lane)
            return
        except DB_ERRORS as exc:
            # The database is away: the events stay taken until their lease expires and
            # are handed out again; nothing was applied.
            log.warning("database unavailable; events given back", lane=self.lane, error=str(exc))
            self.dispatcher.halt()
            return
        except Exception as exc:  # a bad event or a module's bug: hold, with the reason
            bad, error = (item[0], exc) if len(item) == 1 else await self._culprit(item, exc)
            await self._hold(taken, item, bad, error)
            return
        self.stats.acked += len(item)
        now = datetime.now(UTC)
        for entry, btype in zip(item, types, strict=True):
            metrics.PROCESSED.labels(self.lane, btype).inc()
            metrics.DELAY.observe(max(0.0, (now - entry.created_at).total_seconds()))

    async def _apply(
        self, taken: Taken, item: Item, thread: str, began: Callable[[], None]
    ) -> list[str]:
        """The ack and the modules' changes in one transaction; returns the types. A
        batch is sent in pipeline mode (its statements do not wait for each other's
        answers: a round trip per batch instead of per event), so which event an error
        belongs to is not known here: `_culprit` finds it."""
        ids = [e.id for e in item]
        async with self.pool.connection() as conn:
            pipeline = conn.pipeline() if len(item) > 1 else contextlib.nullcontext()
            async with pipeline, conn.transaction():
                accepted = await self.journal.ack(taken.token, ids, conn=conn)
                _check_accepted(accepted, ids)
                began()
                return [await self._route(conn, entry, thread) for entry in item]

    async def _culprit(self, item: Item, first: Exception) -> tuple[Entry, Exception]:
        """The event of a failed batch that cannot be applied: the batch again, one
        statement at a time, in a transaction that is always rolled back. If it applies
        this time (the data changed meanwhile), the first event is held with the first
        error, and the operator's retry delivers the batch again."""
        found: tuple[Entry, Exception] | None = None
        async with self.pool.connection() as conn:
            with contextlib.suppress(_Rollback):
                async with conn.transaction():
                    for entry in item:
                        try:
                            await self._route(conn, entry, "culprit")
                        except DB_ERRORS:
                            raise
                        except Exception as exc:  # the one to hold, whatever it raised
                            found = (entry, exc)
                            break
                    raise _Rollback
        return found or (item[0], first)

    async def _route(self, conn: Conn, entry: Entry, thread: str) -> str:
        """S6: the event to the modules registered for its type; returns the type."""
        if entry.kind == ACCOUNT_SYNC_KIND:
            event = AccountEvent.from_entry(entry.payload)
            await service.apply(conn, [event])
            return event.type.value
        if entry.kind != BUSINESS_KIND:
            raise InvalidInput(f"not a business event: kind {entry.kind!r}", field="kind")
        business = BusinessEvent.from_entry(entry.payload)
        definition = self.events.business_events.get(business.type)
        if definition is None:
            raise InvalidInput(
                f"no business event {business.type} in the business-event file",
                field="payload.type",
            )
        ctx = ModuleContext(self.instance, entry.id, thread)
        for name in definition.modules:
            await MODULES[name].apply(conn, ctx, business)
        return business.type

    async def _hold(self, taken: Taken, item: Item, bad: Entry, exc: Exception) -> None:
        code = exc.field if isinstance(exc, UserError) and exc.field else type(exc).__name__
        failures = [
            Failure(bad.id, f"apply:{code}"[:200], str(exc)[:4000] or repr(exc), final=True)
        ] + [
            Failure(
                e.id,
                "batch_rolled_back",
                f"entry {bad.id} of its batch could not be applied",
                counted=False,
            )
            for e in item
            if e.id != bad.id
        ]
        self._held_now = True
        self.dispatcher.halt()
        log.warning(
            "business event cannot be applied: batch rolled back, listener holds until it"
            " is fixed (bossa sync report)",
            lane=self.lane,
            entry=bad.id,
            key=bad.key,
            batch=len(item),
            error=str(exc)[:300],
        )
        results = await self.journal.fail(taken.token, self.lane, failures)
        self.stats.failed += len(results)
        self.stats.parked += 1


def _check_accepted(accepted: set[int], ids: list[int]) -> None:
    if len(accepted) != len(ids):
        raise _Stale


def listener(
    journal: Journal, settings: SyncSettings, *, listen_url: str | None = None
) -> Listener:
    """The listener of the settings' pipeline instance (`bossa sync listen`)."""
    return Listener(journal, settings, listen_url=listen_url)


# -- S13: the interleaving pipeline --------------------------------------------------------


class Interleaver:
    """`bossa sync pipeline`: one process that rates the CDR files of an inbox and
    processes the instance's business events, one or the other at a time (S13; the
    seed's DAT_Listener interleaving). It switches on the thresholds of `SyncSettings`:

    - rating CDRs, it switches to events when READY events reach `max_events`, or
      `max_cdr_time_s` is spent with more than `min_events` READY, or (optional,
      `events_when_no_cdrs`) no file waits and an event is READY;
    - processing events, it switches to CDRs when READY events fall to `min_events`
      (it takes no more than that leaves), or `max_event_time_s` is spent, or the
      listener may not take (an event held, S8; disconnected, S9).

    Only READY events count, read before each file and each take (and every
    `check_interval_s` while idle). It starts on events: what waited while it was down
    is applied before the first file is rated, as far as the thresholds let it. A file
    is one transaction and a take is one round, so a limit is acted on between them.
    The steps are the listener's and the inbox daemon's own (`Listener.take_and_process`,
    `rating.rate_inbox_file`): what holds for them (once, in order, nothing lost) holds
    here."""

    def __init__(
        self,
        listener: Listener,
        inbox: rating.Inbox,
        pipeline: rating.Pipeline,
        *,
        poll_s: float = 2.0,
        actor: str = "pipeline",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.listener = listener
        self.settings = listener.settings
        self.lane = listener.lane
        self.inbox = inbox
        self.pipeline = pipeline
        self.poll_s = poll_s
        self.actor = actor
        self.clock = clock
        self.limits = Thresholds(
            max_events=self.settings.max_events,
            min_events=self.settings.min_events,
            max_cdr_time_s=self.settings.max_cdr_time_s,
            max_event_time_s=self.settings.max_event_time_s,
            events_when_no_cdrs=self.settings.events_when_no_cdrs,
        )
        self.stats = PipelineStats()
        self.mode = Mode.EVENTS
        self.since = clock()
        self._files: list[Path] = []
        self._looked_at = float("-inf")

    def stop(self) -> None:
        """Finish the file or the events in hand, then exit (SIGTERM)."""
        self.listener.stop()

    def close(self) -> None:
        self.pipeline.close()
        _show_mode(self.lane, None)

    async def run(self, *, install_signal_handlers: bool = False, until_idle: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop)
        if until_idle:
            # Draining: with no file waiting, events below the minimum would otherwise
            # wait for a time limit that may be off, and the run would never end.
            self.limits = dataclasses.replace(self.limits, events_when_no_cdrs=True)
        outage = self.listener.outage("sync pipeline")
        started = False
        try:
            while not self.listener.stopping:
                try:
                    if not started:
                        await self._start()
                        started = True
                    worked = await self.step()
                    outage.answered()
                    if worked:
                        continue
                    if until_idle and await self.idle():
                        return
                except DB_ERRORS as exc:
                    # The file or the take in hand is done again after the outage: a
                    # file's transaction is all or nothing, an event's too (S6, S8).
                    self._files.clear()
                    await self.listener.ride_out(outage, exc)
                    continue
                await self.listener.pause(self.settings.check_interval_s)
        finally:
            if install_signal_handlers:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
            self.stats.events = self.listener.stats.acked
            await self.listener.close()

    async def _start(self) -> None:
        await self.listener.start()
        self.since = self.clock()
        _show_mode(self.lane, self.mode)
        log.info("pipeline starts on events", lane=self.lane, inbox=str(self.inbox.folder))

    async def idle(self) -> bool:
        """Nothing to do (`--once`): no file in the inbox, and no event READY or none
        that may be taken (held, disconnected)."""
        if self.inbox.waiting():
            return False
        if await service.ready_events(self.listener.pool, self.lane) == 0:
            return not await self.listener.journal.busy(self.lane)
        return not await self.listener.may_take()

    async def step(self) -> bool:
        """Look at the thresholds, switch if they say so, then one file or one take;
        returns whether something was done."""
        ready = await service.ready_events(self.listener.pool, self.lane)
        # Asked at every step, rating too: the listener keeps reporting it is alive and
        # sees a disconnect (S9) at once, whatever the mode.
        can_take = await self.listener.may_take()
        waiting = bool(self._files) or self.inbox.waiting()
        reason = next_mode(
            self.mode,
            self.limits,
            ready=ready,
            elapsed_s=self.clock() - self.since,
            cdrs_waiting=waiting,
        )
        if reason is not None and self.mode is Mode.CDRS and not can_take:
            reason = None  # events cannot be taken now: rating goes on
        if reason is not None:
            self._switch(reason, ready)
        if self.mode is Mode.CDRS:
            return await self._cdrs()
        if not can_take:
            self._switch(SwitchReason.EVENTS_BLOCKED, ready)
            return True
        if ready == 0:
            return False
        limit = self.limits.take_limit(ready, waiting, self.settings.batch)
        return await self.listener.take_and_process(limit) > 0

    async def _cdrs(self) -> bool:
        if not self._files and self.clock() - self._looked_at >= self.poll_s:
            self._looked_at = self.clock()
            self._files = await asyncio.to_thread(self.inbox.look)
            # Automatic recycling, at each look as the inbox daemon does: suspended
            # records whose cause is gone (an account opened, billing completed).
            recycled = await rating.recycle_fixed(
                self.listener.pool, self.pipeline, actor=self.actor
            )
            self.stats.recycled += recycled
            if recycled:
                return True
        if not self._files:
            return False
        path = self._files.pop(0)
        if not await asyncio.to_thread(path.exists):
            return True
        report = await rating.rate_inbox_file(
            self.listener.pool, self.pipeline, self.inbox, path, actor=self.actor
        )
        self.stats.files += 1
        if report is not None:
            self.stats.rated += report.rated
            self.stats.suspended += report.suspended
            self.stats.malformed += report.malformed
            log.info(
                "pipeline rated a CDR file",
                lane=self.lane,
                file=path.name,
                batch=report.batch,
                rated=report.rated,
                suspended=report.suspended,
                malformed=report.malformed,
                repeated=report.repeated,
            )
        return True

    def _switch(self, reason: SwitchReason, ready: int) -> None:
        now = self.clock()
        to = Mode.CDRS if self.mode is Mode.EVENTS else Mode.EVENTS
        log.info(
            f"pipeline switches to {'rating CDRs' if to is Mode.CDRS else 'business events'}",
            lane=self.lane,
            reason=reason.value,
            ready=ready,
            after_s=round(now - self.since, 3),
        )
        metrics.MODE_SWITCHES.labels(self.lane, reason.value).inc()
        self.stats.switches.append((to, reason))
        self.mode, self.since = to, now
        _show_mode(self.lane, to)


def _show_mode(lane: str, mode: Mode | None) -> None:
    for each in Mode:
        metrics.MODE.labels(lane, each.value).set(int(each is mode))


def interleaver(
    journal: Journal,
    settings: SyncSettings,
    inbox: Path,
    *,
    listen_url: str | None = None,
    poll_s: float = 2.0,
    actor: str = "pipeline",
    clock: Callable[[], float] = time.monotonic,
) -> Interleaver:
    """The interleaving pipeline of the settings' instance over `inbox` (S13)."""
    return Interleaver(
        Listener(journal, settings, listen_url=listen_url),
        rating.Inbox.open(inbox),
        rating.Pipeline.open(instance=settings.instance),
        poll_s=poll_s,
        actor=actor,
        clock=clock,
    )
