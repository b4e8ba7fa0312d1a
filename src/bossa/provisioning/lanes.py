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
import time
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg_pool

from bossa.db import Conn, Pool
from bossa.errors import InvalidInput
from bossa.journal import DatabaseLost, Entry, Failure, Journal, NewEntry, Worker
from bossa.logs import get_logger
from bossa.provisioning import service
from bossa.provisioning.adapters import Adapter, Command, DeliveryError, adapter_for
from bossa.provisioning.models import (
    Delivery,
    DeliveryMode,
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

    async def _send(
        self, division: str, commands: Sequence[Command], *, batch: bool
    ) -> dict[int, DeliveryError | None]:
        results: dict[int, DeliveryError | None]
        try:
            adapter = await self._adapter(division)
            many = getattr(adapter, "deliver_many", None) if batch else None
            if many is not None:
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

    async def _settle(
        self,
        division: str,
        commands: Sequence[Command],
        results: dict[int, DeliveryError | None],
    ) -> None:
        failed = [(c, e) for c in commands if (e := results.get(c.entry_id)) is not None]
        unreachable = next((e for _, e in failed if e.unreachable), None)
        if unreachable is not None:
            await self._mark(
                division, down=True, error=f"{unreachable.code}: {unreachable.message}"
            )
        elif len(failed) < len(commands):
            await self._mark(division, down=False)
        if failed:
            first, error = failed[0]
            log.info(
                "delivery failed",
                division=division,
                failed=len(failed),
                sa_id=first.sa_id,
                wo_no=first.wo_no,
                code=error.code,
                unreachable=error.unreachable,
            )

    async def _mark(self, division: str, *, down: bool, error: str | None = None) -> None:
        if not down:
            record = await self.division_record(division)
            if record is not None and record.down_until is None:
                return  # not marked down (as of a second ago): no write per success
        self._rows.pop(division, None)
        await service.mark_division(
            self.pool, division, down=down, error=error, hold_s=self.settings.down_hold_s
        )

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
        # Commands delivered and not yet logged, so the log (written with the ack) does
        # not validate each payload a second time; what a lost ack leaves behind is
        # dropped past the cap and, if acked after all, read from its entry again.
        self._sent: dict[int, ProvisioningCommand] = {}
        self._sent_cap = 4 * settings.backup_batch * settings.backup_concurrency
        self.worker = Worker(
            journal,
            lane_of(division),
            {},
            listen_url=listen_url,
            concurrency=concurrency or settings.backup_concurrency,
            batch_size=batch_size or settings.backup_batch,
            gate=self._division_in_use,
            after_ack=self._log,
            batch_handler=self._deliver_batch,
        )

    async def _division_in_use(self) -> bool:
        # SERVER_USED off: the buffer keeps filling and nothing is sent until it is on
        # again. The row is the deliverer's, read at most once a second.
        record = await self.deliverer.division_record(self.division)
        return record is not None and record.division.server_used

    async def _deliver_batch(self, entries: list[Entry]) -> dict[int, Failure | None]:
        # One entry per contract in a batch: delivered together, in one round trip where
        # the adapter can (a Lua pipeline, one SQL transaction with a savepoint each).
        # Each command is rendered from the plan version its payload names; a payload
        # that names none, or another division, is refused and never sent.
        outcome: dict[int, Failure | None] = {}
        parsed: dict[int, ProvisioningCommand] = {}
        for entry in entries:
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
        plans = await self.deliverer.plan_versions([c.plan_key for c in parsed.values()])
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
        if len(self._sent) > self._sent_cap:
            self._sent.clear()
        for entry_id, error in results.items():
            if error is None:
                outcome[entry_id] = None
                self._sent[entry_id] = parsed[entry_id]
            else:
                outcome[entry_id] = Failure(entry_id, error.code, error.message)
        return outcome

    async def _log(self, conn: Conn, entries: list[Entry]) -> None:
        # P11, written with the ack: a logged delivery is an acked one.
        deliveries = [
            Delivery(e.id, self._sent_command(e), DeliveryMode.BACKUP, e.attempts) for e in entries
        ]
        await service.log_deliveries(conn, deliveries)

    def _sent_command(self, entry: Entry) -> ProvisioningCommand:
        sent = self._sent.pop(entry.id, None)
        return sent if sent is not None else ProvisioningCommand.from_entry(entry)

    async def run(self, *, once: bool = False, install_signal_handlers: bool = False) -> None:
        sweep = None if once else asyncio.create_task(self._recover_orders())
        try:
            await self.worker.run(until_idle=once, install_signal_handlers=install_signal_handlers)
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
