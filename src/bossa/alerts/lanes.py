"""The alerts daemon (`bossa alerts serve`): SIP intake, the database monitor, the SMS
lane's consumer and the outage mode, in one process.

With the database up, a missed call is committed to PostgreSQL before the SIP answer;
closed windows become notices and SMS lane entries (service.flush_due); the lane's
worker submits them over SMPP, once per entry: a resubmission after a crash or a lost
bind carries the same reference, `n<notice id>.<part>`.

With the database down (the monitor's word), nothing touches PostgreSQL: the call is
appended to the spool and fsynced before the SIP answer; windows are kept in memory; a
closed window whose callee is in the registration copy gets message 1 straight over
SMPP, and the spool records it (its reference is derived from its calls, so a restart
that rebuilds the same window from the spool resubmits under the same reference). When
the monitor says up again, the spool is written to PostgreSQL in one transaction and its
files removed; calls that no message 1 told are decided there as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from bossa.alerts import metrics, service
from bossa.alerts.adapters.sip import Diverted, SipServer
from bossa.alerts.adapters.smpp import (
    ESME_ROK,
    ESME_RX_T_APPN,
    Esme,
    EsmeConfig,
    Inbound,
    SubmitRejected,
)
from bossa.alerts.adapters.spool import Spool
from bossa.alerts.models import (
    SMS_KIND,
    Language,
    MessageKind,
    MissedCall,
    Reason,
    SmsOrder,
    encode_sms,
    parse_receipt,
    receipt_id_keys,
    render,
    utcnow,
)
from bossa.alerts.service import DATABASE_ERRORS, SMS_LANE, DatabaseMonitor
from bossa.alerts.settings import AlertsSettings
from bossa.db import Conn, DatabaseSettings, Pool
from bossa.errors import ConfigError, InvalidInput
from bossa.journal import (
    DatabaseLost,
    Entry,
    Failure,
    HandlerError,
    Journal,
    JournalSettings,
    Worker,
)
from bossa.logs import get_logger

__all__ = ["SMS_LANE", "AlertsDaemon", "serve"]

log = get_logger("bossa.alerts.daemon")

_REF_NAMESPACE = uuid.UUID("6f1c8a52-4d0e-4f55-9f49-5b7f0c1f3a10")
#: How long an intake transaction may take before the call goes to the spool instead.
_DB_TIMEOUT_S = 1.0
#: Calls committed in one intake transaction at most.
_MAX_BATCH = 500
#: The largest intake batch whose notices are decided in its own transaction (window 0).
_INLINE_DECIDE_MAX = 100

T = TypeVar("T")
R = TypeVar("R")


class _GroupCommit(Generic[T, R]):
    """Items that arrive while a batch is being written go together in the next one, so a
    burst costs a few transactions, not one per item; each caller gets its own result
    (or the batch's exception: no waiter may hang), within `_DB_TIMEOUT_S`."""

    def __init__(self, write: Callable[[list[T]], Awaitable[list[R]]], max_batch: int) -> None:
        self.write = write
        self.max_batch = max_batch
        self._batch: list[tuple[T, asyncio.Future[R]]] = []
        self._writing = False
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._batch.append((item, future))
        if not self._writing:
            self._writing = True
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._batch:
                batch = self._batch[: self.max_batch]
                self._batch = self._batch[self.max_batch :]
                try:
                    async with asyncio.timeout(_DB_TIMEOUT_S):
                        results = await self.write([item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._writing = False


class AlertsDaemon:
    def __init__(self, url: str, pool: Pool, journal: Journal, settings: AlertsSettings) -> None:
        self.url = url
        self.pool = pool
        self.journal = journal
        self.settings = settings
        self.spool = Spool(settings.spool_dir)
        self.monitor = DatabaseMonitor(url, settings, self._database_changed)
        self.esme = Esme(
            EsmeConfig(
                host=settings.smpp_host,
                port=settings.smpp_port,
                system_id=settings.smpp_system_id,
                password=settings.smpp_password.get_secret_value(),
                source_addr=settings.smpp_source_addr,
                binds=settings.smpp_binds,
                window=settings.smpp_window,
                rate_per_s=settings.smpp_rate_per_s,
                enquire_link_s=settings.smpp_enquire_link_s,
                response_timeout_s=settings.smpp_response_timeout_s,
                throttle_pause_s=settings.smpp_throttle_pause_s,
                throttle_max_pause_s=settings.smpp_throttle_max_pause_s,
                reconnect_max_s=settings.smpp_reconnect_max_s,
            ),
            self._inbound,
        )
        self.sip = SipServer(settings.sip_host, settings.sip_port, self._invite)
        self.worker = self._sms_worker()
        self.registry: dict[str, str] = self.spool.load_registry()
        # Ids of submitted notices by entry, written with the entry's ack.
        self._submitted: dict[int, tuple[int, list[str]]] = {}
        # Outage windows: (callee, caller) -> calls, and when each closes.
        self._windows: dict[tuple[str, str], list[MissedCall]] = {}
        self._due: dict[tuple[str, str], float] = {}
        self._spooled_refs: set[str] = set()
        self._outage_sends: set[asyncio.Task[None]] = set()
        self._flush_now = asyncio.Event()
        self._spool_dirty = False
        self._record_calls = _GroupCommit(self._write_calls, _MAX_BATCH)
        self._record_receipts = _GroupCommit(self._write_receipts, _MAX_BATCH)
        self._in_doubt: set[uuid.UUID] = set()
        #: Calls whose message 1 is being submitted (not yet recorded as sent).
        self._being_told: set[str] = set()
        #: Calls of the sealed spool files being replayed now.
        self._replaying_ids: set[str] = set()
        self._replaying = asyncio.Lock()
        self._tasks: list[asyncio.Task[Any]] = []
        self._status: asyncio.Server | None = None
        self._restore()

    # -- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        await self.esme.start()
        self._tasks.append(asyncio.create_task(self.monitor.run()))
        await self.monitor.first_check()
        await self.sip.start(list(self.settings.sip_transports))
        self._tasks += [
            asyncio.create_task(self._flusher()),
            asyncio.create_task(self._registry_refresher()),
            asyncio.create_task(self._sms_lane()),
        ]
        if self.settings.status_port:
            self._status = await asyncio.start_server(
                self._serve_status, self.settings.status_host, self.settings.status_port
            )

    async def close(self) -> None:
        await self.sip.close()
        self.worker.stop()
        if self._status is not None:
            self._status.close()
        for task in self._tasks:
            task.cancel()
        for task in [*self._tasks, *self._outage_sends]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.esme.close()
        self.spool.close()

    async def run(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    # -- intake ----------------------------------------------------------------------

    async def _invite(self, diverted: Diverted) -> tuple[int, str]:
        try:
            call = service.missed_call(
                caller=diverted.caller,
                callee=diverted.callee,
                reason=diverted.reason,
                via="sip",
                call_ref=diverted.call_ref,
            )
        except InvalidInput as exc:
            metrics.INTAKE_REJECTED.labels(exc.field or "invalid").inc()
            log.warning("alerts.invite_rejected", field=exc.field, reason=str(exc))
            return 400, f"Bad Request ({exc.field} {exc})"[:120]
        await self.intake(call)
        if call.reason == Reason.BUSY:
            return 486, "Busy Here"
        code = self.settings.sip_answer
        return code, {480: "Temporarily Unavailable", 486: "Busy Here"}.get(code, "Declined")

    async def intake(self, call: MissedCall) -> None:
        """Record a missed call durably: in PostgreSQL when up, else in the spool."""
        if self.monitor.up:
            try:
                inserted = await self._record(call)
            except DATABASE_ERRORS as exc:
                # The transaction may have committed all the same: the call is in doubt.
                # It is spooled (replay skips it if the database has it) and gets no
                # message 1, which would double the database's own notice; it is decided
                # with the database when the spool is replayed.
                self._in_doubt.add(call.id)
                await self.monitor.failed(exc)
            else:
                if inserted:
                    metrics.CALLS.labels(call.via, "up").inc()
                # With a window of 0 the intake transaction decided it already; a decision
                # that failed there is retried by the flusher's next round (every 50 ms).
                return
        if call.call_ref in self._spooled_refs:
            return
        doubt = call.id in self._in_doubt
        await self.spool.append({"t": "call", **call.to_record(), "doubt": doubt})
        self._spooled_refs.add(call.call_ref)
        # Spooled while the monitor still says up (a transaction that timed out): replay
        # it without waiting for an outage to end.
        self._spool_dirty = True
        metrics.CALLS.labels(call.via, "down").inc()
        metrics.SPOOL_DEPTH.inc()
        self._window(call)

    async def _record(self, call: MissedCall) -> bool:
        """Group commit: calls that arrive while a transaction is committing go together
        in the next one, so a burst costs a few commits, not one per call."""
        return await self._record_calls(call)

    async def _write_calls(self, calls: list[MissedCall]) -> list[bool]:
        # Small bursts are decided in their intake transaction; a large one (the database
        # is falling behind) keeps that transaction short, since the SIP answers wait for
        # it, and leaves the deciding to the flusher.
        inline = len(calls) <= _INLINE_DECIDE_MAX
        inserted = await service.record_calls(
            self.pool,
            calls,
            window_s=self.settings.window_s,
            decide=(self.journal, self.settings) if inline else None,
        )
        if not inline and self.settings.window_s == 0:
            self._flush_now.set()
        return [call.id in inserted for call in calls]

    async def _write_receipts(
        self, receipts: list[tuple[int | None, list[str], str]]
    ) -> list[int | None]:
        return await service.record_deliveries(self.pool, receipts)

    def _window(self, call: MissedCall) -> None:
        key = (call.callee, call.caller)
        if key not in self._windows:
            self._windows[key] = []
            self._due[key] = time.monotonic() + self.settings.window_s
        self._windows[key].append(call)
        if self.settings.window_s == 0:
            self._flush_now.set()

    def _restore(self) -> None:
        """After a restart: the spooled calls that no message 1 told are windows again."""
        told: set[str] = set()
        calls: list[MissedCall] = []
        for record in self.spool.records():
            if record.get("t") == "sent":
                told.update(str(i) for i in record["calls"])
            elif record.get("t") == "call":
                with contextlib.suppress(KeyError, ValueError):
                    calls.append(MissedCall.from_record(record))
                    if record.get("doubt"):
                        self._in_doubt.add(calls[-1].id)
        self._spool_dirty = bool(calls)
        for call in calls:
            self._spooled_refs.add(call.call_ref)
            if str(call.id) not in told:
                self._window(call)
        metrics.SPOOL_DEPTH.set(len(calls))

    # -- deciding and sending ------------------------------------------------------------

    async def _flusher(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), 0.05)
            self._flush_now.clear()
            if self.monitor.up and self._spool_dirty and not self._replaying.locked():
                self._spool_dirty = False
                self._tasks.append(asyncio.get_running_loop().create_task(self._recover()))
            if self.monitor.up and not self._replaying.locked():
                try:
                    # Bounded: a pool waiting for a server that just died must not hold
                    # up message 1 once the monitor says down.
                    async with asyncio.timeout(_DB_TIMEOUT_S * 5):
                        while await service.flush_due(self.pool, self.journal, self.settings):
                            pass
                except DATABASE_ERRORS as exc:
                    await self.monitor.failed(exc)
                except Exception:  # this loop must outlive any one failure
                    log.exception("alerts.flush_failed")
            if not self.monitor.up:
                try:
                    self._flush_outage()
                except Exception:
                    log.exception("alerts.outage_flush_failed")

    def _flush_outage(self) -> None:
        now = time.monotonic()
        for key in [k for k, due in self._due.items() if due <= now]:
            if any(str(c.id) in self._replaying_ids for c in self._windows[key]):
                # The replay under way decides these calls with the database; a message 1
                # now would double it. Left in place: if the replay fails, they go later.
                continue
            calls = [c for c in self._windows.pop(key) if c.id not in self._in_doubt]
            del self._due[key]
            if not calls:
                continue
            lang = self.registry.get(key[0])
            if lang is None:
                # Not registered (as far as the copy knows): replay decides, with the
                # database, whether the trial set offers message 3.
                continue
            task = asyncio.get_running_loop().create_task(self._send_outage(calls, lang))
            self._outage_sends.add(task)
            task.add_done_callback(self._outage_sends.discard)

    async def _send_outage(self, calls: list[MissedCall], lang: str) -> None:
        ids = {str(call.id) for call in calls}
        self._being_told |= ids
        try:
            await self._submit_outage(calls, lang)
        finally:
            self._being_told -= ids

    async def _submit_outage(self, calls: list[MissedCall], lang: str) -> None:
        callee, caller = calls[0].callee, calls[0].caller
        last_at = max(call.called_at for call in calls)
        text = render(
            MessageKind.OUTAGE,
            Language(lang),
            caller=caller,
            count=len(calls),
            last_at=last_at,
            zone=self.settings.zone,
        )
        ref = uuid.uuid5(_REF_NAMESPACE, ",".join(sorted(str(c.id) for c in calls)))
        sms = encode_sms(text, reference=ref.int)
        try:
            ids = await self.esme.submit(callee, sms, reference=f"o{ref.hex}", tag=0)
        except SubmitRejected as exc:
            log.warning("alerts.outage_sms_rejected", to=callee, status=exc.status)
            return
        await self.spool.append(
            {
                "t": "sent",
                "ref": str(ref),
                "callee": callee,
                "caller": caller,
                "count": len(calls),
                "last_at": last_at.isoformat(),
                "text": text,
                "at": utcnow().isoformat(),
                "ids": ids,
                "calls": [str(c.id) for c in calls],
            }
        )
        # If the database came back meanwhile, this record still has to reach it.
        self._spool_dirty = True
        metrics.NOTICES.labels(str(int(MessageKind.OUTAGE))).inc()

    async def _may_send(self) -> bool:
        return self.monitor.up and self.esme.bound_links > 0

    def _sms_worker(self) -> Worker:
        # A batch handler: every entry of a take (one per subscriber, so a subscriber's
        # messages stay in order) is submitted at once and the SMPP window keeps them in
        # flight together; one ack (with its submissions recorded) per take.
        return Worker(
            self.journal,
            SMS_LANE,
            {SMS_KIND: self._send},
            listen_url=self.url,
            # A take's ack waits for its slowest SMS, so a slot is held for an SMSC round
            # trip: enough slots that a slow SMSC does not cap the rate at slots x batch /
            # round trip (the SMPP window bounds what is in flight), and few enough that
            # takes and acks leave pool connections to the intake, whose SIP answers wait.
            concurrency=8,
            batch_size=500,
            gate=self._may_send,
            after_ack=self._after_ack,
            batch_handler=self._send_batch,
        )

    async def _send_batch(self, entries: list[Entry]) -> dict[int, Failure | None]:
        async def one(entry: Entry) -> Failure | None:
            try:
                await self._send(entry)
            except HandlerError as exc:
                return Failure(entry.id, exc.code, exc.message)
            except Exception as exc:  # one entry's bug fails that entry, not its batch
                return Failure(entry.id, type(exc).__name__, str(exc) or repr(exc))
            return None

        outcomes = await asyncio.gather(*(one(entry) for entry in entries))
        return {entry.id: outcome for entry, outcome in zip(entries, outcomes, strict=True)}

    async def _send(self, entry: Entry) -> None:
        try:
            order = SmsOrder.from_entry(entry.payload)
            sms = encode_sms(order.text, reference=order.notice_id)
        except (ValueError, InvalidInput) as exc:
            raise HandlerError("BadPayload", str(exc)) from exc
        try:
            ids = await self.esme.submit(
                order.to, sms, reference=f"n{order.notice_id}", tag=order.notice_id
            )
        except SubmitRejected as exc:
            raise HandlerError("SubmitRejected", str(exc)) from exc
        self._submitted[entry.id] = (order.notice_id, ids)

    async def _after_ack(self, conn: Conn, entries: list[Entry]) -> None:
        done = [self._submitted.pop(e.id) for e in entries if e.id in self._submitted]
        await service.record_submissions(conn, done)

    async def _sms_lane(self) -> None:
        """The lane's worker, restarted when it gives up on a long outage."""
        while True:
            if not self.monitor.up:
                await asyncio.sleep(self.settings.monitor_interval_s)
                continue
            try:
                await self.worker.run()
            except DatabaseLost:
                log.warning("alerts.sms_lane_waiting_for_database")
                self.worker = self._sms_worker()
            else:
                return

    # -- inbound: receipts and uplinks ---------------------------------------------------

    async def _inbound(self, message: Inbound, tag: int | None) -> int:
        if message.is_receipt:
            parsed = parse_receipt(message.text)
            if parsed is None:
                log.warning("alerts.receipt_unreadable")
                return ESME_ROK
            keys = receipt_id_keys(parsed[0])
            if self.monitor.up:
                try:
                    await self._record_receipts((tag or None, keys, parsed[1]))
                except DATABASE_ERRORS as exc:
                    await self.monitor.failed(exc)
                else:
                    return ESME_ROK
            await self.spool.append({"t": "receipt", "keys": keys, "stat": parsed[1]})
            return ESME_ROK
        if not self.monitor.up:
            return ESME_RX_T_APPN  # the SMSC retries the uplink later
        try:
            async with asyncio.timeout(_DB_TIMEOUT_S * 5):
                await service.verify_uplink(
                    self.pool,
                    self.journal,
                    self.settings,
                    sender=message.source,
                    text=message.text,
                )
        except DATABASE_ERRORS as exc:
            await self.monitor.failed(exc)
            return ESME_RX_T_APPN
        return ESME_ROK

    # -- the database coming and going ------------------------------------------------

    async def _database_changed(self, up: bool) -> None:
        if up:
            task = asyncio.get_running_loop().create_task(self._recover())
            self._tasks.append(task)

    async def _recover(self) -> None:
        async with self._replaying:
            sealed = await self.spool.seal()
            if not sealed:
                return
            records = [r for path in sealed for r in Spool.read(path)]
            self._replaying_ids = {str(r["id"]) for r in records if r.get("t") == "call"}
            try:
                # Bounded, so that a server dying mid-replay cannot hold the replay lock
                # (and with it every message 1) for the pool's whole timeout. Calls whose
                # message 1 is on its way count as told: its record comes in a later replay.
                async with asyncio.timeout(10 + 0.01 * len(records)):
                    written = await service.replay(
                        self.pool,
                        records,
                        window_s=self.settings.window_s,
                        being_told=frozenset(self._being_told),
                    )
            except DATABASE_ERRORS as exc:
                self._spool_dirty = True  # the sealed files stay; try again when up
                self._replaying_ids = set()
                await self.monitor.failed(exc)
                return
            for path in sealed:
                self.spool.remove(path)
            replayed = {str(r["id"]) for r in records if r.get("t") == "call"}
            replayed_ids = {uuid.UUID(i) for i in replayed}
            for key in list(self._windows):
                self._windows[key] = [c for c in self._windows[key] if str(c.id) not in replayed]
                if not self._windows[key]:
                    del self._windows[key]
                    del self._due[key]
            self._spooled_refs.clear()
            self._in_doubt -= replayed_ids
            self._replaying_ids = set()
            metrics.SPOOL_DEPTH.set(0)
            log.info("alerts.spool_replayed", calls=written, records=len(records))
        await self._refresh_registry()

    async def _refresh_registry(self) -> None:
        try:
            async with asyncio.timeout(_DB_TIMEOUT_S * 10):
                registry = await service.registry(self.pool)
        except DATABASE_ERRORS as exc:
            await self.monitor.failed(exc)
            return
        self.registry = registry
        await asyncio.to_thread(self.spool.save_registry, registry)

    async def _registry_refresher(self) -> None:
        while True:
            if self.monitor.up:
                await self._refresh_registry()
            await asyncio.sleep(self.settings.registry_refresh_s)

    # -- status port -------------------------------------------------------------------

    async def _serve_status(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b"/"
            if path == b"/metrics":
                code, body, kind = 200, generate_latest(), CONTENT_TYPE_LATEST
            elif path == b"/readyz":
                ready = self.esme.bound_links > 0
                state = {
                    "status": "ready" if ready else "unavailable",
                    "database": "up" if self.monitor.up else "down",
                    "smpp_links": self.esme.bound_links,
                }
                code, body, kind = (
                    (200 if ready else 503),
                    json.dumps(state).encode(),
                    "application/json",
                )
            else:
                code, body, kind = 404, b"{}", "application/json"
            head = (
                f"HTTP/1.1 {code} {'OK' if code == 200 else 'Error'}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()


async def serve(
    database: DatabaseSettings, journal_settings: JournalSettings, settings: AlertsSettings
) -> None:
    """`bossa alerts serve`: unlike other commands it starts, and goes on, with its
    database down, so it neither checks the schema nor waits for the pool to connect."""
    if database.database_url is None:
        raise ConfigError(
            "alerts serve must outlive its database: set an operator's PostgreSQL",
            field="BOSSA_DATABASE_URL",
        )
    url = database.database_url.get_secret_value()
    pool: Pool = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=database.pool_max_size,
        name="bossa-alerts",
        open=False,
        kwargs={"row_factory": dict_row, "autocommit": True},
        reconnect_timeout=86_400,
    )
    await pool.open(wait=False)
    try:
        daemon = AlertsDaemon(url, pool, Journal(pool, journal_settings, actor="alerts"), settings)
        await daemon.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await daemon.close()
    finally:
        await pool.close()
