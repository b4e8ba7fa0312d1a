"""Provisioning's lanes: one journal lane per division, what provisioning enqueues on
them, the deliverer that sends a command to its division, and the daemons.

- A division's buffer is the lane `provisioning.<DIVISION>` (declared as provisioning's
  when the division is added), holding `ProvisioningCommand` entries keyed by SA_ID.
- The `Deliverer` (one per process, held by the runtime) sends commands the same way
  for direct delivery and for the backup daemon: the command rendered from the plan
  version its payload names (never text from the payload: versions are immutable, so
  they are cached), one adapter per division (rebuilt when the division's row
  changes), the adapter's blocking call in a thread, every failure as a
  `DeliveryError` with the division's credentials masked (nothing an adapter raises can
  lose a command or leak a secret), and the division's known state (P4a: down after an
  unreachable call, up after a success).
- The order daemon (P1, P2): one per product, fetching its receive table oldest first
  (several instances are safe: receipts are locked, and a contract's later receipt
  waits for its earlier one), accepting each order and provisioning it.
- The backup daemon (P6): one per division, delivering that division's buffer oldest
  first, per contract in order; ENDDATE on success, ERRCODE/ERRMSG/ERRDATE on error,
  and on to the next contract. It is a journal worker on the division's lane; it also
  completes the orders a dead order process left `accepted` (`service.recover_orders`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg_pool

from bossa import heap
from bossa.db import Conn, Pool
from bossa.errors import InvalidInput
from bossa.journal import DatabaseLost, Entry, Failure, Journal, NewEntry, Worker
from bossa.logs import get_logger
from bossa.provisioning import metrics, service
from bossa.provisioning.adapters import Adapter, Command, DeliveryError, adapter_for
from bossa.provisioning.models import (
    COMMAND_KIND,
    DivisionRecord,
    PlanKey,
    PlanVersion,
    ProvisioningCommand,
)
from bossa.provisioning.settings import ProvisioningSettings

__all__ = [
    "OWNER",
    "BackupDaemon",
    "Deliverer",
    "OrderDaemon",
    "command_entry",
    "delivery_of",
    "lane_of",
]

#: The owner of every division's lane in the journal's lane registry.
OWNER = "provisioning"

_ROW_TTL_S = 1.0
#: Plan versions a deliverer keeps (they never change; this bounds memory only).
_PLAN_CACHE = 4096
#: ERRMSG and LAST_ERROR as stored: one line, bounded.
_ERROR_TEXT = 500
#: What an order daemon waits out (the database restarting, a backend terminated).
_DB_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout)

log = get_logger("bossa.provisioning")


def lane_of(division: str) -> str:
    return f"provisioning.{division}"


def command_entry(command: ProvisioningCommand) -> NewEntry:
    """The journal entry that carries a command to its division's buffer."""
    return NewEntry(
        lane_of(command.division), command.kind, command.to_payload(), key=command.sa_id
    )


def delivery_of(entry_id: int, command: ProvisioningCommand, plan: PlanVersion | None) -> Command:
    """What the adapter sends for a command: the template of the plan version its payload
    names, and its bind values. The one place a template meets a payload; a plan version
    that does not exist, is not the one named, or was written for another server type is
    refused (DeliveryError, code PLAN)."""
    if plan is None:
        raise DeliveryError(
            "PLAN", f"names plan {command.plan_key}, which does not exist: never sent"
        )
    if plan.key != command.plan_key:
        raise DeliveryError("PLAN", f"the command names {command.plan_key}, not {plan.key}")
    if plan.server_type is not command.server_type:
        raise DeliveryError(
            "PLAN",
            f"plan {plan.key} is for a {plan.server_type.value} division, the command for "
            f"a {command.server_type.value} one: never sent",
        )
    return Command(
        entry_id=entry_id,
        division=command.division,
        sa_id=command.sa_id,
        wo_no=command.wo_no,
        intf_code=command.intf_code,
        cust_id=command.cust_id,
        template=plan.command,
        bind_data=command.binds(),
        logname=command.logname,
    )


def _caught(exc: Exception) -> DeliveryError:
    """A failure to deliver, as the buffer records it. An adapter's own DeliveryError
    says what the division answered; anything else (an adapter's bug, a division row it
    cannot use) must not lose the command either: it stays buffered with the error."""
    if isinstance(exc, DeliveryError):
        return exc
    return DeliveryError(type(exc).__name__, str(exc) or repr(exc))


def _one_line(text: str) -> str:
    """Error text as stored and logged: no control characters (NUL cannot be stored),
    bounded."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return cleaned[:_ERROR_TEXT]


def _masked(error: DeliveryError, record: DivisionRecord | None) -> DeliveryError:
    """The error with the division's credentials masked and its text made storable."""
    message = error.message if record is None else record.division.redact(error.message)
    code = error.code if record is None else record.division.redact(error.code)
    clean = DeliveryError(_one_line(code)[:200] or "ERROR", _one_line(message))
    clean.unreachable = error.unreachable
    return clean


class Deliverer:
    """Sends commands to divisions; shared by direct delivery and the backup daemons."""

    def __init__(self, pool: Pool, settings: ProvisioningSettings | None = None) -> None:
        self.pool = pool
        self.settings = settings or ProvisioningSettings()
        self._adapters: dict[str, tuple[Any, Adapter]] = {}
        self._rows: dict[str, tuple[float, DivisionRecord | None]] = {}
        self._plans: dict[PlanKey, PlanVersion] = {}
        self._lock = asyncio.Lock()

    async def division_record(self, division: str) -> DivisionRecord | None:
        # Read at most once a second per division, not once per command.
        now = time.monotonic()
        cached = self._rows.get(division)
        if cached and now - cached[0] < _ROW_TTL_S:
            return cached[1]
        record = await service.division_record(self.pool, division)
        self._rows[division] = (now, record)
        return record

    async def plan_versions(self, keys: Sequence[PlanKey]) -> dict[PlanKey, PlanVersion]:
        """The plan versions named (a key with none is absent): read once, then kept, as
        a version never changes."""
        missing = sorted({k for k in keys if k not in self._plans})
        if missing:
            found = await service.plan_versions(self.pool, missing)
            if len(self._plans) + len(found) > _PLAN_CACHE:
                self._plans.clear()
            self._plans.update(found)
        return {k: self._plans[k] for k in keys if k in self._plans}

    def remember(self, plan: PlanVersion) -> None:
        """A plan version read elsewhere (accepting an order reads the current ones)."""
        if len(self._plans) >= _PLAN_CACHE:
            self._plans.clear()
        self._plans[plan.key] = plan

    async def _adapter(self, division: str) -> Adapter:
        record = await self.division_record(division)
        if record is None:
            raise DeliveryError("NO_DIVISION", f"division {division} is not in the division table")
        async with self._lock:
            cached = self._adapters.get(division)
            if cached and cached[0] == record.updated_at:
                return cached[1]
            if cached:
                await asyncio.to_thread(cached[1].close)
                del self._adapters[division]
            try:
                adapter = adapter_for(record.division)
            except ValueError as exc:  # a division row the adapter cannot use
                raise DeliveryError("DIVISION", str(exc)) from None
            self._adapters[division] = (record.updated_at, adapter)
            return adapter

    async def attempt(self, command: Command) -> DeliveryError | None:
        """Apply one command at its division: None when applied, else why not."""
        results = await self._send(command.division, [command], batch=False)
        return results[command.entry_id]

    async def deliver(self, command: Command) -> None:
        """Apply the command at its division; DeliveryError when it was not applied."""
        error = await self.attempt(command)
        if error is not None:
            raise error

    async def deliver_many(
        self, division: str, commands: list[Command]
    ) -> dict[int, DeliveryError | None]:
        """A batch for one division: in one round trip where the adapter can, one call
        per command (at once, in threads) where it cannot."""
        return await self._send(division, commands, batch=True)

    async def probe(self, division: str) -> DeliveryError | None:
        """A cheap check of the division's protocol (the adapter's `probe`): None when
        the server answers, else the unreachable error, credentials masked. A division
        row no adapter can use answers with its (not unreachable) error: deliveries then
        fail on it and park, for an operator."""
        try:
            adapter = await self._adapter(division)
            await asyncio.to_thread(adapter.probe)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # an adapter's bug: the division is not known to answer
            error = DeliveryError(type(exc).__name__, str(exc) or repr(exc), unreachable=True)
        else:
            return None
        return _masked(error, self._rows.get(division, (0.0, None))[1])

    async def _send(
        self, division: str, commands: Sequence[Command], *, batch: bool
    ) -> dict[int, DeliveryError | None]:
        results: dict[int, DeliveryError | None]
        try:
            adapter = await self._adapter(division)
            # A batch on this event loop where the adapter can (no thread), else in one.
            amany = getattr(adapter, "adeliver_many", None) if batch else None
            many = getattr(adapter, "deliver_many", None) if batch else None
            if amany is not None:
                results = await amany(list(commands))
            elif many is not None:
                results = await asyncio.to_thread(many, list(commands))
            else:
                outcomes = await asyncio.gather(*(self._one(adapter, c) for c in commands))
                results = {c.entry_id: o for c, o in zip(commands, outcomes, strict=True)}
        except Exception as exc:
            failure = _caught(exc)
            results = dict.fromkeys((c.entry_id for c in commands), failure)
        record = self._rows.get(division, (0.0, None))[1]
        results = {
            entry_id: None if error is None else _masked(error, record)
            for entry_id, error in results.items()
        }
        self._report(division, commands, results, mode="backup" if batch else "direct")
        try:
            await self._settle(division, commands, results)
        except Exception as exc:  # the known state is advice: a failure to record it
            log.warning("division state not recorded", division=division, error=type(exc).__name__)
        return results

    @staticmethod
    async def _one(adapter: Adapter, command: Command) -> DeliveryError | None:
        try:
            await asyncio.to_thread(adapter.deliver, command)
        except Exception as exc:
            return _caught(exc)
        return None

    @staticmethod
    def _report(
        division: str,
        commands: Sequence[Command],
        results: dict[int, DeliveryError | None],
        *,
        mode: str,
    ) -> None:
        """Each failure, one warning line and one count: the entry, its contract, the
        division and the code, and whether it was refused (an attempt) or the division
        could not be reached (not counted)."""
        for command in commands:
            error = results.get(command.entry_id)
            if error is None:
                continue
            cause = "unreachable" if error.unreachable else "refused"
            metrics.FAILURES.labels(division, error.code, cause).inc()
            log.warning(
                "delivery failed",
                entry_id=command.entry_id,
                sa_id=command.sa_id,
                division=division,
                code=error.code,
                cause=cause,
                mode=mode,
                wo_no=command.wo_no,
                error=error.message,
            )

    async def _settle(
        self,
        division: str,
        commands: Sequence[Command],
        results: dict[int, DeliveryError | None],
    ) -> None:
        errors = [e for e in results.values() if e is not None]
        found = next(
            (
                (c, e)
                for c in commands
                if (e := results.get(c.entry_id)) is not None and e.unreachable
            ),
            None,
        )
        if found is not None:
            command, unreachable = found
            await self.mark(
                division,
                down=True,
                error=f"{unreachable.code}: {unreachable.message}",
                entry_id=command.entry_id,
                sa_id=command.sa_id,
            )
        elif len(errors) < len(results):
            await self.mark(division, down=False)

    async def mark(
        self,
        division: str,
        *,
        down: bool,
        error: str | None = None,
        hold_s: float | None = None,
        entry_id: int | None = None,
        sa_id: str | None = None,
    ) -> None:
        """Record the division's known state (P4a): down for `hold_s` (the down-hold by
        default; a failed probe extends it to its next probe) or up. A change of state
        (as last read, at most a second ago) is logged as a warning and counted."""
        record = await self.division_record(division)
        was_down = (
            record is not None
            and record.down_until is not None
            and record.down_until > datetime.now(UTC)
        )
        if not down and (record is None or record.down_until is None):
            return  # not marked down (as of a second ago): no write per success
        self._rows.pop(division, None)
        hold = self.settings.down_hold_s if hold_s is None else hold_s
        await service.mark_division(self.pool, division, down=down, error=error, hold_s=hold)
        if down and not was_down:
            metrics.DIVISION_TRANSITIONS.labels(division, "down").inc()
            code = (error or "").partition(":")[0] or None
            log.warning(
                "division down",
                division=division,
                code=code,
                entry_id=entry_id,
                sa_id=sa_id,
                error=error,
                hold_s=hold,
            )
        elif not down and was_down:
            metrics.DIVISION_TRANSITIONS.labels(division, "up").inc()
            log.warning("division up", division=division)

    async def close(self) -> None:
        async with self._lock:
            for _, adapter in self._adapters.values():
                await asyncio.to_thread(adapter.close)
            self._adapters.clear()


class BackupDaemon:
    """Delivers one division's buffer (P6)."""

    def __init__(
        self,
        journal: Journal,
        deliverer: Deliverer,
        division: str,
        *,
        listen_url: str | None = None,
        concurrency: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        settings = deliverer.settings
        self.journal = journal
        self.deliverer = deliverer
        self.division = division
        # The division's reachability as this daemon knows it: while down it takes
        # nothing and probes instead, on a backoff that starts over after a delivery.
        self._down = False
        self._down_since = 0.0
        self._next_probe = 0.0
        self._probe_backoff = settings.probe_backoff_base_s
        self._probe_lock = asyncio.Lock()
        #: Protocol checks made while the division was down (the only calls then).
        self.probes = 0
        self.worker = Worker(
            journal,
            lane_of(division),
            {},
            listen_url=listen_url,
            concurrency=concurrency or settings.backup_concurrency,
            batch_size=batch_size or settings.backup_batch,
            gate=self._may_take,
            after_ack=self._log,
            batch_handler=self._deliver_batch,
        )

    @property
    def down(self) -> bool:
        """Is the division down as this daemon knows it (taking nothing, probing)?"""
        return self._down

    async def _may_take(self) -> bool:
        """Asked before each take. SERVER_USED off: the buffer keeps filling and nothing
        is sent until it is on again. A division known to be down (found so by this
        daemon or by any other process: an order's direct call, another daemon) gets
        no command, only a probe when one is due; when the probe answers, taking goes
        on, and the buffer drains in per-contract order. The row is the deliverer's,
        read at most once a second."""
        record = await self.deliverer.division_record(self.division)
        if record is None or not record.division.server_used:
            return False
        if (
            not self._down
            and record.down_until is not None
            and record.down_until > datetime.now(UTC)
        ):
            self._went_down(probe_now=True)  # another process found it down: look now
        if not self._down:
            return True
        return await self._probe_if_due()

    def _went_down(self, *, probe_now: bool = False) -> None:
        if self._down:
            return
        self._down = True
        self._down_since = time.monotonic()
        self._next_probe = 0.0 if probe_now else self._down_since + self._jittered()

    def _jittered(self) -> float:
        return self._probe_backoff * random.uniform(0.75, 1.25)  # noqa: S311 (not a secret)

    async def _probe_if_due(self) -> bool:
        async with self._probe_lock:  # one probe at a time, whichever taker asks
            if not self._down:
                return True
            now = time.monotonic()
            if now < self._next_probe:
                return False
            self.probes += 1
            error = await self.deliverer.probe(self.division)
            settings = self.deliverer.settings
            if error is None or not error.unreachable:
                metrics.PROBES.labels(self.division, "up").inc()
                self._down = False
                log.warning(
                    "division answers again; delivering its buffer",
                    division=self.division,
                    down_s=round(time.monotonic() - self._down_since, 1),
                    probes=self.probes,
                )
                await self.deliverer.mark(self.division, down=False)
                return True
            metrics.PROBES.labels(self.division, "down").inc()
            # The backoff is not reset when a probe answers, only after a delivery: a
            # division that answers probes but fails every call stays on a slow cycle.
            self._probe_backoff = min(self._probe_backoff * 2, settings.probe_backoff_max_s)
            wait = self._jittered()
            self._next_probe = time.monotonic() + wait
            log.info(
                "division still down",
                division=self.division,
                code=error.code,
                error=error.message,
                next_probe_s=round(wait, 2),
            )
            # Orders keep going straight to the buffer at least until the next probe.
            await self.deliverer.mark(
                self.division,
                down=True,
                error=f"{error.code}: {error.message}",
                hold_s=max(settings.down_hold_s, wait + 1.0),
            )
            return False

    async def _deliver_batch(self, entries: list[Entry]) -> dict[int, Failure | None]:
        # One entry per contract in a batch: delivered together, in one round trip where
        # the adapter can (a Lua pipeline, one SQL transaction with a savepoint each).
        # Each command is rendered from the plan version its payload names; a payload
        # that names none, or another division, is refused and never sent.
        outcome: dict[int, Failure | None] = {}
        parsed: dict[int, ProvisioningCommand] = {}
        for entry in entries:
            if entry.kind != COMMAND_KIND:
                # Only commands are sent (and logged: the log reads them as commands).
                outcome[entry.id] = Failure(
                    entry.id,
                    "PAYLOAD",
                    f"kind {entry.kind!r} on the lane of {self.division}: only "
                    f"{COMMAND_KIND!r} entries are sent; never sent",
                    final=True,
                )
                continue
            try:
                command = ProvisioningCommand.from_entry(entry)
            except InvalidInput as exc:  # a payload the model refuses: that one waits
                code = "PLAN" if exc.field == "payload.command" else "PAYLOAD"
                outcome[entry.id] = Failure(entry.id, code, str(exc), final=True)
                continue
            if command.division != self.division:
                outcome[entry.id] = Failure(
                    entry.id,
                    "PAYLOAD",
                    f"payload.division: names {command.division}, on the lane of "
                    f"{self.division}: never sent",
                    final=True,
                )
                continue
            parsed[entry.id] = command
        if not parsed:
            return outcome
        # A backlog names a few plan versions: each looked up once per batch.
        plans = await self.deliverer.plan_versions(list({c.plan_key for c in parsed.values()}))
        commands: list[Command] = []
        for entry_id, command in list(parsed.items()):
            try:
                commands.append(delivery_of(entry_id, command, plans.get(command.plan_key)))
            except DeliveryError as refused:
                # Retrying cannot make a plan exist: park at once, for an operator.
                outcome[entry_id] = Failure(entry_id, refused.code, refused.message, final=True)
                del parsed[entry_id]
        if not commands:
            return outcome
        results = await self.deliverer.deliver_many(self.division, commands)
        delivered = False
        for entry_id, error in results.items():
            if error is None:
                outcome[entry_id] = None
                delivered = True
            elif error.unreachable:
                # Not the command's fault: the attempt is given back (it never parks
                # for this), and the daemon holds the division until a probe answers.
                outcome[entry_id] = Failure(entry_id, error.code, error.message, counted=False)
                self._went_down()
            else:
                outcome[entry_id] = Failure(entry_id, error.code, error.message)
        if delivered:
            self._probe_backoff = self.deliverer.settings.probe_backoff_base_s
        await self._report_parking(entries, outcome)
        return outcome

    async def _report_parking(
        self, entries: list[Entry], outcome: dict[int, Failure | None]
    ) -> None:
        """A warning and a count for each command this batch parks: refused for good,
        or refused on its last attempt (the journal parks it when the failure is
        recorded, right after this)."""
        policy = await self.journal.policy(lane_of(self.division))
        for entry in entries:
            failure = outcome.get(entry.id)
            if failure is None or not failure.counted:
                continue
            if failure.final or entry.attempts >= policy.max_attempts:
                metrics.PARKED.labels(self.division, failure.code).inc()
                log.warning(
                    "command parked",
                    entry_id=entry.id,
                    sa_id=entry.key,
                    division=self.division,
                    code=failure.code,
                    attempts=entry.attempts,
                    error=failure.message[:_ERROR_TEXT],
                )

    async def _log(self, conn: Conn, entries: list[Entry]) -> None:
        # P11, written with the ack: a logged delivery is an acked one. The log's fields
        # are read from the entries in the ack's transaction (the payloads validated and
        # delivered: nothing changes a held entry's payload), not sent from here.
        await service.log_backup_deliveries(conn, [e.id for e in entries])

    async def run(self, *, once: bool = False, install_signal_handlers: bool = False) -> None:
        sweep = None if once else asyncio.create_task(self._recover_orders())
        try:
            # Ten tracked objects a command: the collector's defaults cost a quarter of
            # the daemon's Python time (see bossa.heap).
            with heap.settled():
                await self.worker.run(
                    until_idle=once, install_signal_handlers=install_signal_handlers
                )
        finally:
            if sweep is not None:
                sweep.cancel()
                await asyncio.gather(sweep, return_exceptions=True)
        if once:  # a pass ends with the orders it finished completed too
            await service.recover_orders(self.journal, self.deliverer.settings)

    async def _recover_orders(self) -> None:
        # Orders whose process died after accepting them: completed from the journal's
        # outcome once their claims are gone (every daemon sweeps; each order once).
        settings = self.deliverer.settings
        while True:
            await asyncio.sleep(settings.stranded_after_s / 2)
            try:
                await service.recover_orders(self.journal, settings)
            except _DB_ERRORS as exc:  # the worker rides out the outage; so does the sweep
                log.info("order sweep skipped", division=self.division, error=type(exc).__name__)

    def stop(self) -> None:
        self.worker.stop()


class OrderDaemon:
    """Processes one product's receive table (P1, P2)."""

    def __init__(
        self,
        journal: Journal,
        deliverer: Deliverer,
        product: str,
        settings: ProvisioningSettings | None = None,
    ) -> None:
        self.journal = journal
        self.deliverer = deliverer
        self.product = product
        self.settings = settings or deliverer.settings
        self.processed = 0
        self.rejected = 0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run_once(self) -> int:
        """One pass over what is waiting; returns how many receipts were handled."""
        handled = 0
        while not self._stopping.is_set():
            done = await self._batch()
            handled += done
            if done == 0:
                return handled
        return handled

    async def run(self) -> None:
        """Until stopped. A database that does not answer is waited out for at most the
        journal's `database_outage_s` (a closed pool not at all); past that it raises
        `DatabaseLost`, and the CLI exits non-zero for its supervisor to restart it."""
        down_since: float | None = None
        while not self._stopping.is_set():
            try:
                await self.run_once()
                down_since = None
            except psycopg_pool.PoolClosed as exc:
                raise DatabaseLost(
                    f"order daemon of {self.product}: its connection pool is closed; exiting"
                    " for its supervisor to restart it"
                ) from exc
            except _DB_ERRORS as exc:
                now = time.monotonic()
                down_since = down_since or now
                bound = self.journal.settings.database_outage_s
                if now - down_since > bound:
                    raise DatabaseLost(
                        f"order daemon of {self.product}: the database has not answered for"
                        f" {now - down_since:.0f} s (BOSSA_JOURNAL_DATABASE_OUTAGE_S is"
                        f" {bound:g}); exiting for its supervisor to restart it"
                    ) from exc
                log.warning(
                    "database unreachable; retrying", product=self.product, error=type(exc).__name__
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.receipt_poll_s)

    async def _batch(self) -> int:
        batch = await service.accept_receipts(
            self.journal, self.product, limit=self.settings.receipt_batch, settings=self.settings
        )
        self.rejected += batch.rejected
        # Committed: the orders and their entries are safe; now the direct calls.
        for accepted in batch.accepted:
            if not accepted.replay:
                await service.deliver_direct(self.journal, self.deliverer, accepted)
            self.processed += 1
        return batch.taken
