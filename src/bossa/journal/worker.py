"""The generic consumer: takes a lane's entries in batches and runs their handlers.

Every daemon is one of these: each module's `lanes.py` builds a `Worker` on its lanes
with its handlers (provisioning's backup daemon, billing's service daemon), and
`bossa journal work` runs one with the handlers of `handlers.py`. Apart from LISTEN on
its wake-up connection it runs no SQL of its own: everything goes through `Journal`.

Per lane, `concurrency` takers share one LISTEN connection that wakes them on NOTIFY;
each also wakes at the lane's next due time or lease expiry, and at least every
`poll_interval_s`, so a lost notification strands nothing. A batch is leased; a
heartbeat extends the lease while handlers run; results are acked and failed in
batches. On SIGTERM a worker finishes the entry in hand, gives back what it has not
started, and exits. Database errors (PostgreSQL restarting, a backend terminated) are
waited out with backoff, the work staying in the journal, for at most
`database_outage_s`: past that, or at once if its pool is closed, `run` raises
`DatabaseLost`, and the process exits non-zero for its supervisor to restart it. Any
other failure of a taker or helper (a bug, a lane setting out of range) stops every
other one before `run` raises it: a worker never lingers half alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg_pool

from bossa.db import Conn
from bossa.errors import UserError
from bossa.journal import metrics
from bossa.journal.models import Entry, EntryState, Taken
from bossa.journal.store import Failure, Journal
from bossa.logs import get_logger

__all__ = [
    "DB_ERRORS",
    "BatchHandler",
    "DatabaseLost",
    "Handler",
    "HandlerError",
    "Outage",
    "Worker",
    "WorkerStats",
]

Handler = Callable[[Entry], Awaitable[None]] | Callable[[Entry], None]
#: Handles a whole taken batch at once (entries of distinct keys) and says, per entry id,
#: None for done or the Failure; an entry it leaves out fails as "not_handled".
BatchHandler = Callable[[list[Entry]], Awaitable[dict[int, "Failure | None"]]]
log = get_logger("bossa.journal.worker")

#: What a database that is away raises (PostgreSQL restarting, a backend terminated).
DB_ERRORS = (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg.InterfaceError)


class DatabaseLost(UserError):
    """The worker could not reach its database for longer than `database_outage_s`, or
    its pool was closed: it stops, and the CLI exits non-zero with this one line."""

    http_status = 503


class Outage:
    """The database's absence as a daemon's loop sees it (the rating inbox, the sync
    listener and pipeline; `Worker` keeps its own): `answered` after each step that
    reached the database, `failed` after one that could not. When the database has not
    answered for longer than `bound_s` (since the last step that reached it: a step that
    waits for a pooled connection fails only after the pool's timeout), `failed` raises
    `DatabaseLost` naming the daemon and the setting, for its supervisor to restart it;
    before that it returns the seconds to wait (backoff 0.2 s doubling to 5 s), the work
    staying where it was (a file in its inbox, an event READY or leased)."""

    def __init__(
        self, who: str, bound_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.who = who
        self.bound_s = bound_s
        self.clock = clock
        #: When the database last answered (the daemon had just connected at start).
        self.answered_at = clock()
        self.down = False
        self.backoff = 0.2

    def answered(self) -> None:
        now = self.clock()
        if self.down:
            log.warning(
                "database answers again", who=self.who, away_s=round(now - self.answered_at, 1)
            )
        self.answered_at = now
        self.down = False
        self.backoff = 0.2
        metrics.DATABASE_DOWN.labels(self.who).set(0)

    def failed(self, exc: Exception) -> float:
        self.down = True
        metrics.DATABASE_UNREACHABLE.labels(self.who).inc()
        metrics.DATABASE_DOWN.labels(self.who).set(1)
        away = self.clock() - self.answered_at
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        if isinstance(exc, psycopg_pool.PoolClosed) or away > self.bound_s:
            raise DatabaseLost(
                f"{self.who}: the database has not answered for {away:.0f} s"
                f" (BOSSA_JOURNAL_DATABASE_OUTAGE_S is {self.bound_s:g}); exiting for its"
                f" supervisor to restart it (last error: {error})"
            ) from None
        wait = self.backoff
        self.backoff = min(self.backoff * 2, 5.0)
        log.warning("database unreachable; retrying", who=self.who, error=error, retry_in_s=wait)
        return wait


class HandlerError(Exception):
    """Raised by a handler to fail an entry with a code operators can filter on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class WorkerStats:
    taken: int = 0
    acked: int = 0
    failed: int = 0
    parked: int = 0
    released: int = 0
    reaped: int = 0
    stale_acks: int = 0
    db_errors: int = 0


class Worker:
    """Consumes one lane. `handlers` maps an entry's kind to its handler."""

    def __init__(
        self,
        journal: Journal,
        lane: str,
        handlers: Mapping[str, Handler],
        *,
        listen_url: str | None = None,
        concurrency: int | None = None,
        batch_size: int | None = None,
        poll_interval_s: float | None = None,
        stop_grace_s: float = 30.0,
        gate: Callable[[], Awaitable[bool]] | None = None,
        after_ack: Callable[[Conn, list[Entry]], Awaitable[None]] | None = None,
        batch_handler: BatchHandler | None = None,
        run_length: int | None = None,
    ) -> None:
        settings = journal.settings
        self.journal = journal
        self.lane = lane
        self.handlers = dict(handlers)
        self.listen_url = listen_url
        self.concurrency = concurrency or settings.concurrency
        self.batch_size = batch_size or settings.take_batch
        #: Entries of one key per take (a run, handled in order). A batch handler gets
        #: entries of distinct keys, as it always did: it may deliver them all at once.
        self.run_length = 1 if batch_handler is not None else (run_length or settings.take_run)
        self.batch_concurrency = settings.batch_concurrency
        self.poll_interval_s = poll_interval_s or settings.poll_interval_s
        self.reap_interval_s = settings.reap_interval_s
        self.stop_grace_s = stop_grace_s
        #: Asked before each take: False holds the worker as if its lane were paused.
        self.gate = gate
        #: Runs in the ack's transaction with the entries accepted: a record of what was
        #: done (a delivery log) commits with the ack or not at all, in one round trip.
        self.after_ack = after_ack
        #: When set, takes the place of `handlers`: one call per batch (bulk delivery).
        self.batch_handler = batch_handler
        self.stats = WorkerStats()
        self._stopping = asyncio.Event()
        self._wakes = [asyncio.Event() for _ in range(self.concurrency)]
        self._sleeping: list[int] = []  # slots waiting for work, longest-idle first
        #: The one slot polling for new work after work came recently (see _slot), if any.
        self._lingerer: int | None = None
        #: Lease tokens of the batches in hand: the reaper leaves them alone.
        self._held: set[uuid.UUID] = set()
        self._last_work = float("-inf")
        self.linger_s = settings.linger_s
        self.linger_poll_s = settings.linger_poll_s
        self.database_outage_s = settings.database_outage_s
        #: When the database stopped answering (monotonic), None while it answers.
        self._down_since: float | None = None
        #: When the reaper's statement in progress began: one that hangs (a network
        #: partition, a pool waiting for a connection) counts as the database away too.
        self._probing_since: float | None = None
        self._last_db_error = ""
        #: Set when the pool is closed: nothing can come back, give up at once.
        self._pool_closed = asyncio.Event()

    def stop(self) -> None:
        """Ask the worker to stop: finish the entry in hand, give back the rest."""
        self._stopping.set()
        self._wake_all()

    def _wake_all(self) -> None:
        for event in self._wakes:
            event.set()

    def _wake_one(self) -> None:
        """One notification, one taker: the others stay asleep instead of all racing for
        the same few entries. A taker that finds a full batch wakes the next one."""
        if self._sleeping:
            self._wakes[self._sleeping.pop(0)].set()

    async def run(self, *, install_signal_handlers: bool = False, until_idle: bool = False) -> None:
        """Work until stop() (or SIGTERM/SIGINT when asked to install handlers).

        `until_idle` returns once the lane has nothing due and nothing in flight: for
        operator-triggered passes (`--once`) and tests. Raises `DatabaseLost` when the
        database stays away longer than `database_outage_s` (or the pool is closed), and
        whatever else stopped a taker or helper, after stopping all the others.
        """
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop)
        helpers = [
            asyncio.create_task(self._reaper()),
            asyncio.create_task(self._watch_database()),
        ]
        if self.listen_url and not until_idle:
            helpers.append(asyncio.create_task(self._listener()))
        slots = [
            asyncio.create_task(self._slot(i, until_idle=until_idle))
            for i in range(self.concurrency)
        ]
        log.info(
            "worker started", lane=self.lane, concurrency=self.concurrency, batch=self.batch_size
        )
        stop_asked: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        failure: BaseException | None = None
        try:
            # Until a stop is asked, every taker is done (--once), or something fails.
            while failure is None and not stop_asked.done() and not _all_done(slots):
                await asyncio.wait(
                    [t for t in (*slots, *helpers) if not t.done()] + [stop_asked],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                failure = _failure_of([*slots, *helpers])
            # A stop: handlers in hand get the grace period to finish.
            deadline = loop.time() + self.stop_grace_s
            while failure is None and not _all_done(slots):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    log.warning(
                        "handlers did not finish within the grace period; their"
                        " leases will expire and the entries be handed out again",
                        lane=self.lane,
                        grace_s=self.stop_grace_s,
                    )
                    break
                await asyncio.wait(
                    [t for t in (*slots, *helpers) if not t.done()],
                    timeout=remaining,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                failure = _failure_of([*slots, *helpers])
        finally:
            stop_asked.cancel()
            for task in (*slots, *helpers):
                task.cancel()
            await asyncio.gather(*slots, *helpers, return_exceptions=True)
            if install_signal_handlers:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
            log.info(
                "worker stopped",
                lane=self.lane,
                acked=self.stats.acked,
                failed=self.stats.failed,
                released=self.stats.released,
            )
        if failure is not None:
            raise failure

    # -- the database's health -------------------------------------------------------

    def _db_answered(self) -> None:
        if self._down_since is not None:
            metrics.DATABASE_DOWN.labels(f"worker {self.lane}").set(0)
        self._down_since = None

    def _db_failed(self, exc: Exception) -> None:
        self.stats.db_errors += 1
        metrics.DATABASE_UNREACHABLE.labels(f"worker {self.lane}").inc()
        metrics.DATABASE_DOWN.labels(f"worker {self.lane}").set(1)
        # One line: the CLI's exit message ends with it, and libpq's texts (a pipeline's
        # "flush request failed: ..." above all) may hold newlines.
        self._last_db_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        if self._down_since is None:
            self._down_since = time.monotonic()
        if isinstance(exc, psycopg_pool.PoolClosed):
            self._pool_closed.set()

    async def _watch_database(self) -> None:
        """Raises DatabaseLost when the pool is closed, or when the database has not
        answered for `database_outage_s`: since a statement first failed with no success
        after it, or since the reaper's statement began and has not returned (the reaper
        asks every `reap_interval_s`, so an idle worker notices too)."""
        bound = self.database_outage_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pool_closed.wait(), timeout=min(1.0, bound / 4))
            if self._pool_closed.is_set():
                raise DatabaseLost(
                    f"worker on lane {self.lane!r}: its connection pool is closed; exiting"
                    " for its supervisor to restart it"
                )
            since = min(
                (t for t in (self._down_since, self._probing_since) if t is not None),
                default=None,
            )
            if since is not None and (away := time.monotonic() - since) > bound:
                raise DatabaseLost(
                    f"worker on lane {self.lane!r}: the database has not answered for"
                    f" {away:.0f} s (BOSSA_JOURNAL_DATABASE_OUTAGE_S is {bound:g}); exiting"
                    f" for its supervisor to restart it (last error: {self._last_db_error})"
                )

    # -- taking ----------------------------------------------------------------------

    async def _slot(self, index: int, *, until_idle: bool) -> None:
        wake = self._wakes[index]
        backoff = 0.1
        while not self._stopping.is_set():
            wake.clear()
            # Work came recently and no other taker watches the lane: this one does, its
            # take waiting in the database for an entry (polled there every
            # linger_poll_s, see journal.take_batch) and taking it at once, in the same
            # round trip. Sleeping costs a write, and waking a NOTIFY on the next
            # enqueue, a wake-up and a take: a steady trickle is taken sooner so.
            lingering = not until_idle and self._may_linger(index)
            wait_s = 0.0  # how long this take may wait in the database for an entry
            if lingering:
                self._lingerer = index
                since = time.monotonic() - self._last_work
                wait_s = min(1.0, max(0.0, self.linger_s - since))
            try:
                paused = (await self.journal.policy(self.lane)).paused
                if paused or (self.gate is not None and not await self.gate()):
                    if until_idle:
                        return
                    await self._pause(wake, min(self.poll_interval_s, 1.0))
                    continue
                taken = await self.journal.take(
                    self.lane,
                    self.batch_size,
                    run=self.run_length,
                    wait_s=wait_s,
                    poll_s=self.linger_poll_s,
                )
                backoff = 0.1
                self._db_answered()
            except DB_ERRORS as exc:
                self._db_failed(exc)
                log.warning("database unavailable; retrying", lane=self.lane, error=str(exc))
                await self._drop_dead_connections()
                await self._pause(wake, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if taken.entries:
                self._last_work = time.monotonic()
                if self._lingerer == index:
                    self._lingerer = None
                    self._wake_one()  # someone else watches the lane while this one works
                elif len(taken.entries) == self.batch_size or self._lingerer is None:
                    # More is probably waiting; or nobody watches the lane while this one
                    # works: a NOTIFY wakes one taker per sleep, so the others would sleep
                    # on through a steady trickle, and entries wait for this one's ack.
                    self._wake_one()
                await self._run_batch(taken)
                continue
            if lingering and self._may_linger(index):
                continue  # the wait is capped at a second; the linger may be longer
            if self._lingerer == index:
                self._lingerer = None
            if until_idle:
                if await self._idle_or_unknown():
                    return
                await self._pause(wake, 0.05)
                continue
            # While another taker watches the lane, no sleep of this one's to register
            # (the next enqueue would pay a NOTIFY for it): the watcher wakes a taker
            # when it gets work, and registers its own sleep when it stops watching.
            await self._sleep(index, wake, register=self._lingerer is None)

    async def _sleep(self, index: int, wake: asyncio.Event, *, register: bool) -> None:
        """Until woken (a NOTIFY if registered, the watching taker, a taker that found a
        full batch) or the quiet period is over."""
        self._sleeping.append(index)
        try:
            if register:
                await self._register_sleep()  # before the quiet period is computed: no gap
                seconds = await self._quiet_period()
            else:
                seconds = self.poll_interval_s
            await self._pause(wake, seconds)
        finally:
            if index in self._sleeping:
                self._sleeping.remove(index)

    def _may_linger(self, index: int) -> bool:
        return (
            self.linger_s > 0
            and self._lingerer in (None, index)
            and time.monotonic() - self._last_work < self.linger_s
        )

    async def _idle_or_unknown(self) -> bool:
        try:
            return await self._idle()
        except DB_ERRORS:
            return False  # cannot tell while the database is away: keep going

    async def _drop_dead_connections(self) -> None:
        """After a restart or terminated backends the pool may hold several dead idle
        connections; check them all now rather than failing on each in turn."""
        with contextlib.suppress(Exception):
            await self.journal.pool.check()

    async def _idle(self) -> bool:
        """Nothing ready (due now or after a backoff) and nothing leased: the pass is over.

        Parked entries wait for an operator, so they do not keep the pass running."""
        return not await self.journal.busy(self.lane)

    async def _register_sleep(self) -> None:
        if self.listen_url is None:
            return  # nobody would hear the NOTIFY: this worker polls
        with contextlib.suppress(*DB_ERRORS):
            await self.journal.mark_asleep(self.lane)

    async def _quiet_period(self) -> float:
        try:
            wakeup = await self.journal.next_wakeup(self.lane)
        except DB_ERRORS:
            return 1.0
        if wakeup is None:
            return self.poll_interval_s
        seconds = (wakeup - datetime.now(UTC)).total_seconds()
        return max(0.01, min(self.poll_interval_s, seconds + 0.005))

    async def _pause(self, wake: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=seconds)

    # -- running ---------------------------------------------------------------------

    async def _run_batch(self, taken: Taken) -> None:
        self._held.add(taken.token)
        try:
            await self._run_taken(taken)
        finally:
            self._held.discard(taken.token)

    async def _run_taken(self, taken: Taken) -> None:
        lane = self.lane
        self.stats.taken += len(taken.entries)
        metrics.TAKEN.labels(lane).inc(len(taken.entries))
        done: list[int] = []
        failures: list[Failure] = []
        unstarted: list[int] = []
        finished = asyncio.Event()
        # The heartbeat task starts only for a batch still running after a third of the
        # lease: most batches are done long before, and a task per batch costs time.
        beats: list[asyncio.Task[None]] = []
        lease_s = self.journal.settings.lease_ms / 1000.0
        with contextlib.suppress(*DB_ERRORS):  # the policy is cached; rarely a query
            lease_s = (await self.journal.policy(lane)).lease_ms / 1000.0
        timer = asyncio.get_running_loop().call_later(
            lease_s / 3,
            lambda: beats.append(
                asyncio.create_task(self._heartbeat(taken, done, finished, first_after=0.0))
            ),
        )
        gate = asyncio.Semaphore(self.batch_concurrency)

        async def run_one(run: list[Entry]) -> None:
            # Runs are of distinct keys, so they may go at once; a run's own entries go
            # one after another, and the first failure gives back the rest of its run
            # (release makes them wait behind the failed entry).
            async with gate:
                for n, entry in enumerate(run):
                    if self._stopping.is_set():
                        unstarted.extend(e.id for e in run[n:])
                        return
                    failure = await self._handle(entry)
                    if failure is not None:
                        failures.append(failure)
                        unstarted.extend(e.id for e in run[n + 1 :])
                        return
                    done.append(entry.id)

        try:
            if self.batch_handler is not None:
                await self._run_whole(taken.entries, done, failures, unstarted)
            elif len(runs := _runs(taken.entries)) == 1:
                await run_one(runs[0])  # no task to schedule: the handler starts now
            else:
                await asyncio.gather(*(run_one(run) for run in runs))
        finally:
            # Not cancelled: an ack of the heartbeat's in flight must come back first, or
            # what it acked would be unknown. It sees the event within one interval.
            timer.cancel()
            finished.set()
            await asyncio.gather(*beats, return_exceptions=True)
        await self._settle(taken, done, failures, unstarted)

    async def _run_whole(
        self, entries: list[Entry], done: list[int], failures: list[Failure], unstarted: list[int]
    ) -> None:
        assert self.batch_handler is not None
        if self._stopping.is_set():
            unstarted.extend(e.id for e in entries)
            return
        now = datetime.now(UTC)
        started = metrics.START_LATENCY.labels(self.lane)
        for entry in entries:
            started.observe(max(0.0, (now - entry.created_at).total_seconds()))
        try:
            outcome = await self.batch_handler(entries)
        except Exception as exc:  # a handler's bug fails its batch, not the worker
            outcome = {
                e.id: Failure(e.id, type(exc).__name__, str(exc) or repr(exc)) for e in entries
            }
        for entry in entries:
            if entry.id not in outcome:
                failures.append(
                    Failure(entry.id, "not_handled", "the batch handler gave no result")
                )
            elif (failure := outcome[entry.id]) is None:
                done.append(entry.id)
            else:
                failures.append(failure)

    async def _handle(self, entry: Entry) -> Failure | None:
        metrics.START_LATENCY.labels(self.lane).observe(
            max(0.0, (datetime.now(UTC) - entry.created_at).total_seconds())
        )
        handler = self.handlers.get(entry.kind) or self.handlers.get("*")
        if handler is None:
            known = ", ".join(sorted(self.handlers)) or "none"
            return Failure(
                entry.id,
                "no_handler",
                f"no handler for kind {entry.kind!r} (this worker has: {known})",
            )
        try:
            if inspect.iscoroutinefunction(handler):
                await handler(entry)
            else:
                await asyncio.to_thread(handler, entry)
        except HandlerError as exc:
            return Failure(entry.id, exc.code, exc.message)
        except Exception as exc:  # a handler's bug must fail its entry, not the worker
            return Failure(entry.id, type(exc).__name__, str(exc) or repr(exc))
        return None

    async def _settle(
        self, taken: Taken, done: list[int], failures: list[Failure], unstarted: list[int]
    ) -> None:
        """Report a batch's outcome, riding out database errors until the lease runs out."""
        lease_end = min((e.lease_expires_at for e in taken.entries), default=None)
        backoff = 0.1
        while True:
            try:
                if done:
                    await self._ack_done(taken, done)
                    done = []
                if failures:
                    results = await self.journal.fail(taken.token, self.lane, failures)
                    parked = sum(1 for r in results if r.state is EntryState.PARKED)
                    self.stats.failed += len(results)
                    self.stats.parked += parked
                    metrics.FAILED.labels(self.lane).inc(len(results))
                    metrics.PARKED.labels(self.lane).inc(parked)
                    failures = []
                if unstarted:
                    released = await self.journal.release(taken.token, unstarted)
                    self.stats.released += len(released)
                    metrics.RELEASED.labels(self.lane).inc(len(released))
                    unstarted = []
            except DB_ERRORS as exc:
                self._db_failed(exc)
                if lease_end is not None and datetime.now(UTC) > lease_end:
                    log.warning(
                        "lease ran out before the outcome could be recorded; the"
                        " entries will be handed out again",
                        lane=self.lane,
                        error=str(exc),
                    )
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            else:
                return

    async def _ack(self, taken: Taken, done: list[int]) -> set[int]:
        if self.after_ack is None:
            return await self.journal.ack(taken.token, done)
        # Pipeline mode: BEGIN goes with the ack, the hook's statements with COMMIT, so
        # the transaction costs two round trips instead of four.
        async with (
            self.journal.pool.connection() as conn,
            conn.pipeline(),
            conn.transaction(),
        ):
            accepted = await self.journal.ack(taken.token, done, conn=conn)
            await self.after_ack(conn, [e for e in taken.entries if e.id in accepted])
        return accepted

    async def _ack_done(self, taken: Taken, ids: list[int]) -> None:
        accepted = await self._ack(taken, ids)
        stale = len(ids) - len(accepted)
        self.stats.acked += len(accepted)
        metrics.ACKED.labels(self.lane).inc(len(accepted))
        if stale:
            self.stats.stale_acks += stale
            metrics.STALE_ACKS.labels(self.lane).inc(stale)
            log.warning(
                "ack refused: lease passed to another worker", lane=self.lane, entries=stale
            )

    async def _heartbeat(
        self, taken: Taken, done: list[int], finished: asyncio.Event, *, first_after: float
    ) -> None:
        """Every third of the lease, until the batch is finished: ack what is done so far
        (a worker killed later redelivers only what it did since), then extend the lease
        of the rest. The lease can then be short, since it only has to outlast a dead
        worker's silence, not the batch: a killed worker's keys come back within a lease
        and a reap interval."""
        lease_ms = self.journal.settings.lease_ms
        with contextlib.suppress(*DB_ERRORS):
            lease_ms = (await self.journal.policy(self.lane)).lease_ms
        interval = lease_ms / 3000.0
        acked: set[int] = set()
        beat_at = time.monotonic() + first_after - interval
        while True:
            # Beats a third of a lease apart from start to start: a slow beat (a loaded
            # database) does not push the next one past the lease.
            beat_at += interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    finished.wait(), timeout=max(0.0, beat_at - time.monotonic())
                )
            if finished.is_set():
                return
            flushed = done[:]
            del done[: len(flushed)]
            try:
                if flushed:
                    await self._ack_done(taken, flushed)
                    acked.update(flushed)
                held = [i for i in taken.ids if i not in acked]
                await self.journal.heartbeat(taken.token, self.lane, held, lease_ms=lease_ms)
            except DB_ERRORS as exc:
                self._db_failed(exc)
                if flushed and not acked.issuperset(flushed):
                    done[:0] = flushed  # not acked: settle acks them

    # -- helpers ---------------------------------------------------------------------

    async def _reaper(self) -> None:
        while True:
            self._probing_since = time.monotonic()
            try:
                # Not our own batches: alive, we extend them, however late a heartbeat
                # runs on a starved machine (reaping them only made duplicates).
                reaped = await self.journal.reap_expired(self.lane, held=list(self._held))
                self._db_answered()
            except DB_ERRORS as exc:
                self._db_failed(exc)
                reaped = []
            finally:
                self._probing_since = None
            if reaped:
                self.stats.reaped += len(reaped)
                metrics.LEASE_EXPIRED.labels(self.lane).inc(len(reaped))
                log.warning(
                    "leases expired; entries handed out again", lane=self.lane, entries=len(reaped)
                )
                self._wake_all()
            await asyncio.sleep(self.reap_interval_s)

    async def _listener(self) -> None:
        assert self.listen_url is not None
        backoff = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.listen_url, autocommit=True
                ) as conn:
                    await conn.execute("listen bossa_journal")
                    backoff = 0.1
                    self._wake_all()  # whatever arrived while we were not listening
                    async for note in conn.notifies():
                        if note.payload == self.lane:
                            self._wake_one()
            except DB_ERRORS as exc:
                log.info("listen connection lost; reconnecting", error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


def _runs(entries: list[Entry]) -> list[list[Entry]]:
    """A taken batch (in id order) as runs: each key's entries in order; an entry without
    a key is a run of its own."""
    by_key: dict[str, list[Entry]] = {}
    runs: list[list[Entry]] = []
    for entry in entries:
        if entry.key is None:
            runs.append([entry])
        elif (run := by_key.get(entry.key)) is not None:
            run.append(entry)
        else:
            by_key[entry.key] = run = [entry]
            runs.append(run)
    return runs


def _all_done(tasks: list[asyncio.Task[None]]) -> bool:
    return all(task.done() for task in tasks)


def _failure_of(tasks: list[asyncio.Task[None]]) -> BaseException | None:
    """The first exception a finished task raised (helpers only end by raising)."""
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            return task.exception()
    return None
