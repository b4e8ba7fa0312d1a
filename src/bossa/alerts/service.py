"""Missed-call alerts: one function per use case, and the database monitor (M1).

Each function opens its own transaction on the pool. The intake daemon (lanes.py) calls
them only while the monitor says the database is up; while it is down nothing here runs
and the daemon works from its spool and registration copy (M2).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from bossa.alerts import metrics, store
from bossa.alerts.models import (
    SMS_KIND,
    CallView,
    History,
    Language,
    MessageKind,
    MissedCall,
    MissedCallRequest,
    NoticeView,
    Reason,
    Recorded,
    SmsOrder,
    SubscriberView,
    TrialSet,
    in_trial,
    new_code,
    normalize_number,
    render,
    uplink_code,
    utcnow,
)
from bossa.alerts.settings import AlertsSettings
from bossa.db import Conn, Pool
from bossa.errors import InvalidInput, NotFound
from bossa.journal import Journal, NewEntry
from bossa.logs import get_logger

__all__ = [
    "SMS_LANE",
    "DatabaseMonitor",
    "UplinkOutcome",
    "add_trial_range",
    "flush_due",
    "history",
    "record_call",
    "record_calls",
    "record_delivery",
    "record_submissions",
    "register",
    "registry",
    "remove_trial_range",
    "replay",
    "report_call",
    "set_trial_quota",
    "trial_set",
    "unregister",
    "verify_uplink",
]

log = get_logger("bossa.alerts")
_T = TypeVar("_T")

#: The SMS lane: one entry per notice, keyed by the destination (in order per subscriber).
SMS_LANE = "alerts.sms"


# -- the database monitor (M1) ------------------------------------------------------------


class DatabaseMonitor:
    """Health checks on a connection of its own every `monitor_interval_s`, plus a breaker:
    `breaker_errors` query errors in a row reported by the callers open it at once. Down
    is declared within interval + timeout of the first failed check (0.75 s by default),
    up again at the first check that answers; `on_change(up)` runs at each switch."""

    def __init__(
        self,
        url: str,
        settings: AlertsSettings,
        on_change: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self.url = url
        self.settings = settings
        self.on_change = on_change
        self.up = False
        self.changed_at = time.monotonic()
        self._errors = 0
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._checked = asyncio.Event()

    async def _check(self) -> bool:
        timeout = self.settings.monitor_timeout_s
        try:
            async with asyncio.timeout(timeout):
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self.url, autocommit=True, row_factory=dict_row, connect_timeout=2
                    )
                return await store.health(self._conn)
        except (OSError, TimeoutError, psycopg.Error) as exc:
            if self.up:
                log.warning("alerts.database_check_failed", error=type(exc).__name__)
            await self._drop()
            return False

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 0.2)

    async def _set(self, up: bool) -> None:
        if up == self.up:
            return
        self.up = up
        self.changed_at = time.monotonic()
        metrics.DATABASE_UP.set(1 if up else 0)
        if up:
            log.info("alerts.database_up")
        else:
            log.warning("alerts.database_down")
        if self.on_change is not None:
            await self.on_change(up)

    async def run(self) -> None:
        try:
            while True:
                ok = await self._check()
                if ok:
                    self._errors = 0
                await self._set(ok)
                self._checked.set()
                await asyncio.sleep(self.settings.monitor_interval_s)
        finally:
            await self._drop()

    async def first_check(self, timeout_s: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._checked.wait(), timeout_s)

    async def failed(self, exc: BaseException) -> None:
        """A caller's query failed on the database (not on its input)."""
        self._errors += 1
        log.warning("alerts.database_error", error=type(exc).__name__, errors=self._errors)
        if self._errors >= self.settings.breaker_errors:
            await self._set(False)


#: Errors that mean the database, not the request, failed.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    TimeoutError,
    OSError,
)


# -- intake (database up) ------------------------------------------------------------------


def missed_call(
    *,
    caller: str | None,
    callee: str | None,
    reason: Reason,
    via: str,
    call_ref: str,
    called_at: datetime | None = None,
) -> MissedCall:
    """A validated missed call (numbers normalised to E.164 digits), or InvalidInput."""
    return MissedCall(
        caller=normalize_number(caller, field="caller"),
        callee=normalize_number(callee, field="callee"),
        reason=reason,
        called_at=called_at or utcnow(),
        via=via,
        call_ref=call_ref,
    )


async def record_call(pool: Pool, call: MissedCall, *, window_s: float) -> bool:
    """Record the call and count it into its window; False when it was recorded already
    (the same intake reference or id)."""
    return call.id in await record_calls(pool, [call], window_s=window_s)


async def record_calls(
    pool: Pool,
    calls: list[MissedCall],
    *,
    window_s: float,
    decide: tuple[Journal, AlertsSettings] | None = None,
) -> set[uuid.UUID]:
    """Record calls in one transaction (one commit, one WAL flush for a burst); the ids
    of those that were not recorded already.

    With `decide` and a window of 0 (one SMS per call, at once), their notices are
    decided and queued in the same transaction, from the rows just inserted (no pending
    window to write and take back), in pipeline mode: one commit and a handful of round
    trips for the burst instead of two transactions and a dozen. If deciding fails on
    anything but the database, that transaction is rolled back whole and the calls are
    recorded again without it: their windows then wait for `flush_due` as with a window."""
    if decide is not None and window_s == 0:
        try:
            async with pool.connection() as conn, conn.pipeline(), conn.transaction():
                # Both statements go in one round trip: the languages do not depend on
                # which calls were new (a callee's registration is read either way).
                inserting = await store.start_insert_missed_calls(conn, calls)
                reading = await store.start_subscriber_langs(
                    conn, sorted({c.callee for c in calls})
                )
                rows = await inserting.fetchall()
                langs = await store.langs_of(reading)
                if rows:
                    await _decide(
                        conn, *decide, limit=len(rows), due=_closed_windows(rows), langs=langs
                    )
            return {row["id"] for row in rows}
        except DATABASE_ERRORS:
            raise
        except Exception:
            log.exception("alerts.decide_failed")
    async with pool.connection() as conn, conn.transaction():
        rows = await store.insert_missed_calls(conn, calls)
        if rows:
            await store.add_pending_many(conn, rows, window_s)
    return {row["id"] for row in rows}


def _closed_windows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls just inserted as the windows `take_due` would give back with a window of 0."""
    windows: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (str(row["callee"]), str(row["caller"]))
        window = windows.get(key)
        if window is None:
            windows[key] = {
                "callee": key[0],
                "caller": key[1],
                "calls": 1,
                "first_at": row["called_at"],
                "last_at": row["called_at"],
            }
        else:
            window["calls"] += 1
            window["first_at"] = min(window["first_at"], row["called_at"])
            window["last_at"] = max(window["last_at"], row["called_at"])
    return list(windows.values())


@dataclass(frozen=True, slots=True)
class Decided:
    notice_id: int
    kind: MessageKind
    callee: str


async def flush_due(
    pool: Pool, journal: Journal, settings: AlertsSettings, *, limit: int = 500
) -> list[Decided]:
    """Decide the notice of every closed window (M3) and queue its SMS, in one
    transaction: a registered callee gets message 2; an unregistered one in the trial set
    (its range, and a member or room under the quota) message 3 with a reply code; others
    nothing (their calls stay recorded)."""
    async with pool.connection() as conn, conn.transaction():
        return await _decide(conn, journal, settings, limit=limit)


async def _decide(
    conn: Conn,
    journal: Journal,
    settings: AlertsSettings,
    *,
    limit: int,
    due: list[dict[str, Any]] | None = None,
    langs: dict[str, str] | None = None,
) -> list[Decided]:
    decided: list[Decided] = []
    if due is None:
        due = await store.take_due(conn, limit)
    if not due:
        return decided
    if langs is None:
        langs = await store.subscriber_langs(conn, sorted({str(w["callee"]) for w in due}))
    prefixes: list[str] | None = None
    planned: list[tuple[int, str, str, int, datetime, str]] = []
    codes: dict[tuple[str, str], str] = {}
    for window in due:
        callee, caller = str(window["callee"]), str(window["caller"])
        lang = langs.get(callee)
        code = ""
        if lang is not None:
            kind = MessageKind.REGISTERED
        else:
            if prefixes is None:
                prefixes = await store.trial_ranges(conn)
            if not in_trial(callee, prefixes) or not await store.join_trial(conn, callee):
                metrics.NOTICES.labels("none").inc()
                continue
            kind, lang, code = MessageKind.TRIAL, settings.default_language, new_code()
            codes[(callee, caller)] = code
        text = render(
            kind,
            Language(lang),
            caller=caller,
            count=int(window["calls"]),
            last_at=window["last_at"],
            zone=settings.zone,
            code=code,
            hours=settings.uplink_validity_h,
        )
        planned.append((int(kind), callee, caller, int(window["calls"]), window["last_at"], text))
    ids = await store.insert_notices(conn, planned)
    await store.link_calls_many(conn, [(ids[(n[1], n[2])], n[1], n[2]) for n in planned])
    entries: list[NewEntry] = []
    for kind_value, callee, caller, _calls, _last, text in planned:
        notice_id = ids[(callee, caller)]
        kind = MessageKind(kind_value)
        if (callee, caller) in codes:
            await store.add_offer(
                conn, callee, codes[(callee, caller)], notice_id, settings.uplink_validity_h
            )
        order = SmsOrder(notice_id, callee, text, kind)
        entries.append(NewEntry(SMS_LANE, SMS_KIND, order.to_payload(), key=callee))
        decided.append(Decided(notice_id, kind, callee))
        metrics.NOTICES.labels(str(kind_value)).inc()
    if entries:
        await journal.enqueue(entries, conn=conn)
    return decided


async def record_submissions(conn: Conn, submitted: list[tuple[int, list[str]]]) -> None:
    """The SMS centre's ids of submitted notices, in the caller's transaction (the SMS
    lane's ack: the record commits with the entry's completion or not at all)."""
    await store.mark_submitted_many(conn, submitted)


async def record_delivery(
    pool: Pool, *, notice_id: int | None, receipt_keys: list[str], stat: str
) -> int | None:
    """Mark a notice delivered (by its id, or by the receipt's id keys); the notice id or
    None when no notice matches."""
    return (await record_deliveries(pool, [(notice_id, receipt_keys, stat)]))[0]


async def record_deliveries(
    pool: Pool, receipts: list[tuple[int | None, list[str], str]]
) -> list[int | None]:
    """`record_delivery` for a burst of receipts (notice id or None, id keys, stat), in
    one transaction: receipts come one per SMS, so one commit each would cost the
    database a WAL flush per message."""
    async with pool.connection() as conn, conn.transaction():
        resolved: list[int | None] = []
        for notice_id, keys, _stat in receipts:
            resolved.append(
                notice_id if notice_id is not None else await store.notice_by_keys(conn, keys)
            )
        matched = await store.mark_delivered_many(
            conn,
            [(n, r[2]) for n, r in zip(resolved, receipts, strict=True) if n is not None],
        )
    return [n if n in matched else None for n in resolved]


# -- uplink (M4) -----------------------------------------------------------------------


class UplinkOutcome:
    VERIFIED = "verified"
    NO_OFFER = "no_offer"
    WRONG_CODE = "wrong_code"


async def verify_uplink(
    pool: Pool, journal: Journal, settings: AlertsSettings, *, sender: str, text: str
) -> str:
    """An unregistered user's reply to message 3: from a number that has an open offer,
    naming its code, within its validity: message 2 is queued to it and the offer spent.
    Wrong codes count against the offer (closed after `uplink_attempts`)."""
    try:
        callee = normalize_number(sender, field="source_addr")
    except InvalidInput:
        metrics.UPLINKS.labels(UplinkOutcome.NO_OFFER).inc()
        log.warning("alerts.uplink_rejected", why="sender is not E.164")
        return UplinkOutcome.NO_OFFER
    code = uplink_code(text)
    async with pool.connection() as conn, conn.transaction():
        offers = await store.open_offers(conn, callee)
        offer = next((o for o in offers if o["code"] == code), None)
        if not offers or offer is None:
            outcome = UplinkOutcome.NO_OFFER if not offers else UplinkOutcome.WRONG_CODE
            if offers:
                await store.count_attempt(conn, callee, settings.uplink_attempts)
            metrics.UPLINKS.labels(outcome).inc()
            log.warning("alerts.uplink_rejected", why=outcome, sender=callee)
            return outcome
        await store.use_offer(conn, callee, str(offer["code"]))
        body = render(
            MessageKind.REGISTERED,
            Language(settings.default_language),
            caller=str(offer["caller"]),
            count=int(offer["calls"]),
            last_at=offer["last_at"],
            zone=settings.zone,
        )
        notice_id = await store.insert_notice(
            conn,
            kind=int(MessageKind.REGISTERED),
            callee=callee,
            caller=str(offer["caller"]),
            calls=int(offer["calls"]),
            last_at=offer["last_at"],
            text=body,
        )
        order = SmsOrder(notice_id, callee, body, MessageKind.REGISTERED)
        await journal.enqueue(
            [NewEntry(SMS_LANE, SMS_KIND, order.to_payload(), key=callee)], conn=conn
        )
    metrics.UPLINKS.labels(UplinkOutcome.VERIFIED).inc()
    metrics.NOTICES.labels(str(int(MessageKind.REGISTERED))).inc()
    return UplinkOutcome.VERIFIED


# -- replay of the spool (M2) ----------------------------------------------------------


async def replay(
    pool: Pool,
    records: list[dict[str, Any]],
    *,
    window_s: float,
    being_told: frozenset[str] = frozenset(),
) -> int:
    """Write an outage's spool into PostgreSQL in one transaction: every missed call once
    (their ids are unique), every message 1 once (its spool id is unique) with its calls
    linked, every receipt applied. Calls that no message 1 told are counted into windows,
    so they are decided as with the database up; `being_told` are calls whose message 1
    is on its way (its record will come in a later replay). The number of calls newly
    written."""
    written = 0
    calls = [MissedCall.from_record(r) for r in records if r.get("t") == "call"]
    sent: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("t") == "sent":
            sent.setdefault(str(record["ref"]), record)  # the first, should one be there twice
    receipts = [r for r in records if r.get("t") == "receipt"]
    told: set[str] = set(being_told)
    for record in sent.values():
        told.update(str(i) for i in record["calls"])
    async with pool.connection() as conn, conn.transaction():
        # In chunks of a few thousand rows: a handful of statements each, not one or more
        # per record, so that a long outage's spool is written back in seconds.
        for chunk in _chunks(calls):
            rows = await store.insert_spooled_calls(conn, chunk)
            written += len(rows)
            untold = [r for r in rows if str(r["id"]) not in told]
            if untold:
                await store.add_pending_many(conn, untold, window_s)
        for told_chunk in _chunks(list(sent.values())):
            ids = await store.insert_outage_notices(
                conn,
                [
                    {
                        "callee": str(r["callee"]),
                        "caller": str(r["caller"]),
                        "calls": int(r["count"]),
                        "last_at": r["last_at"],
                        "text": str(r["text"]),
                        "created_at": r["at"],
                        "ids": list(r["ids"]),
                        "ref": str(r["ref"]),
                    }
                    for r in told_chunk
                ],
            )
            notices = [(ids[str(uuid.UUID(r["ref"]))], r) for r in told_chunk]
            await store.link_calls_to_notices(
                conn, [(uuid.UUID(i), n) for n, r in notices for i in r["calls"]]
            )
            await store.mark_submitted_many(conn, [(n, list(r["ids"])) for n, r in notices])
        for receipt_chunk in _chunks(receipts):
            matched = await store.notices_by_receipt_keys(
                conn, [list(r["keys"]) for r in receipt_chunk]
            )
            await store.mark_delivered_many(
                conn, [(notice, str(receipt_chunk[n]["stat"])) for n, notice in matched.items()]
            )
    metrics.REPLAYED.inc(written)
    return written


def _chunks(items: list[_T], size: int = 5000) -> list[list[_T]]:
    return [items[n : n + size] for n in range(0, len(items), size)]


async def registry(pool: Pool) -> dict[str, str]:
    async with pool.connection() as conn:
        return await store.registry(conn)


# -- subscribers and the trial set (M5) ------------------------------------------------


def _prefix(value: str) -> str:
    if not value.isdigit() or not 1 <= len(value) <= 15 or value.startswith("0"):
        raise InvalidInput("is not a number range (1 to 15 digits, no leading 0)", field="prefix")
    return value


async def register(pool: Pool, msisdn: str, lang: str, *, actor: str) -> SubscriberView:
    number = normalize_number(msisdn, field="msisdn")
    if lang not in {x.value for x in Language}:
        raise InvalidInput("is not one of en, zh, ko", field="lang")
    async with pool.connection() as conn, conn.transaction():
        row = await store.add_subscriber(conn, number, lang, actor)
    return SubscriberView.model_validate(row)


async def report_call(pool: Pool, request: MissedCallRequest, *, window_s: float) -> Recorded:
    """The HTTP intake: a missed call reported by the network (database up only; while it
    is down the API cannot authenticate anyway, and the SIP intake spools)."""
    call = missed_call(
        caller=request.caller,
        callee=request.callee,
        reason=request.reason,
        via="http",
        call_ref=f"http:{request.reference}",
        called_at=request.called_at,
    )
    recorded = await record_call(pool, call, window_s=window_s)
    if recorded:
        metrics.CALLS.labels("http", "up").inc()
    return Recorded(id=call.id, recorded=recorded)


async def history(pool: Pool, callee: str, *, limit: int = 50) -> History:
    """A callee's latest missed calls and notices."""
    number = normalize_number(callee, field="callee")
    async with pool.connection() as conn:
        calls = await store.calls_of(conn, number, limit)
        notices = await store.notices_of(conn, number, limit)
    return History(
        callee=number,
        calls=[CallView.model_validate(row) for row in calls],
        notices=[NoticeView.model_validate(row) for row in notices],
    )


async def unregister(pool: Pool, msisdn: str) -> None:
    number = normalize_number(msisdn, field="msisdn")
    async with pool.connection() as conn, conn.transaction():
        if not await store.remove_subscriber(conn, number):
            raise NotFound(f"no subscriber {number}", field="msisdn")


async def trial_set(pool: Pool) -> TrialSet:
    async with pool.connection() as conn:
        ranges = await store.trial_ranges(conn)
        quota = await store.trial_quota(conn)
    return TrialSet(
        ranges=ranges,
        quota=int(quota["quota"]),
        members=int(quota["members"]),
        changed_at=quota["changed_at"],
        changed_by=str(quota["changed_by"]),
    )


async def add_trial_range(pool: Pool, prefix: str, *, actor: str) -> TrialSet:
    async with pool.connection() as conn, conn.transaction():
        await store.add_trial_range(conn, _prefix(prefix), actor)
    return await trial_set(pool)


async def remove_trial_range(pool: Pool, prefix: str) -> TrialSet:
    async with pool.connection() as conn, conn.transaction():
        if not await store.remove_trial_range(conn, _prefix(prefix)):
            raise NotFound(f"no trial range {prefix}", field="prefix")
    return await trial_set(pool)


async def set_trial_quota(pool: Pool, quota: int, *, actor: str) -> TrialSet:
    if not 0 <= quota <= 100_000_000:
        raise InvalidInput("is not between 0 and 100000000", field="quota")
    async with pool.connection() as conn, conn.transaction():
        await store.set_trial_quota(conn, quota, actor)
    return await trial_set(pool)
