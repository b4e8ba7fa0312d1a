"""Sync's use cases: publish a business event inside the transaction of the change (S1,
S4), apply a batch of them to the pipeline's account data (S6, S8), and report the queue
by state (S6).

Publishing joins the caller's transaction (the contract's change and its event commit
together or not at all); the listener's `apply` joins the ack's transaction (an event is
applied exactly when it is acked: a listener killed at any point applies it again only
if it never committed). `report` and `held` own their connection.

The account-data module is rating's: a product purchased or changed becomes the number's
subscription from the event's time (`rating.subscribe`), a product cancelled ends it
(`rating.unsubscribe`). A suspension or resumption leaves the subscription as it is: a
call a suspended line still makes (emergency numbers, a barring that is not in place
yet) is usage to charge, and barring it is provisioning's work.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bossa import config, rating
from bossa.db import Conn, Pool
from bossa.errors import NotFound
from bossa.journal import Journal, NewEntry, WorkerStats
from bossa.sync import metrics, store
from bossa.sync.models import (
    ACCOUNT_SYNC_KIND,
    AccountEvent,
    EventState,
    EventType,
    HeldEvent,
    LaneReport,
    number_of,
    start_of,
)
from bossa.sync.settings import SyncSettings

__all__ = ["apply", "contract_changed", "held", "listen", "report"]

#: Held events a report lists at most.
MAX_HELD_LISTED = 100


async def contract_changed(
    conn: Conn,
    journal: Journal,
    sa_id: str,
    change: EventType,
    settings: SyncSettings | None = None,
) -> AccountEvent:
    """Publish the business event of a contract's change, in the caller's transaction
    (after the change is written: the event carries the contract as it now is). The
    settings, when not given, are read from the environment as at start-up."""
    settings = settings or config.load(SyncSettings)
    row = await store.contract_event(conn, sa_id)
    if row is None:
        raise NotFound(f"no contract {sa_id}", field="sa_id")
    now = datetime.now(UTC)
    at = now.astimezone(settings.zone).replace(tzinfo=None)
    # The change holds from the moment it is made, unless the contract names another
    # day for it (a start ahead or back, a termination backdated): then from that day.
    day = {
        EventType.PRODUCT_PURCHASED: row["start_date"],
        EventType.PRODUCT_CANCELLED: row["end_date"],
    }.get(change)
    if day is not None and day != at.date():
        at = start_of(day)
    event = AccountEvent(
        type=change,
        sa_id=row["sa_id"],
        customer_id=row["customer_id"],
        account_id=row["account_id"],
        msisdn=number_of(row["msisdn"]),
        product_code=row["product_code"],
        status=row["status"],
        at=at,
        occurred_at=now,
    )
    await journal.enqueue_one(
        NewEntry(
            lane=settings.lane,
            kind=ACCOUNT_SYNC_KIND,
            payload=event.to_payload(),
            # Per-account order: all of a customer's contracts share its number.
            key=event.customer_id,
        ),
        conn=conn,
    )
    metrics.PUBLISHED.labels(change.value).inc()
    return event


async def apply(conn: Conn, events: Sequence[AccountEvent]) -> int:
    """Apply events to rating's account data, in order, in the caller's transaction;
    returns how many changed it. Raises on the first that cannot be applied (the caller
    rolls the whole batch back, S8)."""
    changed = 0
    for event in events:
        if event.msisdn is None or event.account_id is None:
            # No number, or a contract billed to no account: no usage can name it.
            metrics.APPLIED.labels(event.type.value, "nothing_to_rate").inc()
            continue
        if event.type in (EventType.PRODUCT_PURCHASED, EventType.PRODUCT_CHANGED):
            await rating.subscribe(
                conn,
                msisdn=event.msisdn,
                account_id=event.account_id,
                product_code=event.product_code,
                at=event.at,
            )
            changed += 1
        elif event.type is EventType.PRODUCT_CANCELLED:
            changed += await rating.unsubscribe(
                conn, msisdn=event.msisdn, product_code=event.product_code, at=event.at
            )
        metrics.APPLIED.labels(event.type.value, "applied").inc()
    return changed


async def held(pool: Pool, lane: str) -> bool:
    """Is an event of the lane held for an operator (S8: processing waits)?"""
    async with pool.connection() as conn:
        return await store.held(conn, lane)


async def report(pool: Pool, settings: SyncSettings, *, window_s: float = 60.0) -> LaneReport:
    """S6's queue report: the lane's events by state, the READY backlog's age, events
    processed per second over `window_s`, and the held events with why."""
    lane = settings.lane
    async with pool.connection() as conn:
        states = await store.by_state(conn, lane)
        backlog = await store.backlog(conn, lane, window_s)
        held_rows = await store.held_events(conn, lane, MAX_HELD_LISTED)
    by_state: dict[EventState, int] = dict.fromkeys(EventState, 0)
    for state, n in states.items():
        by_state[EventState.of_journal(state)] += n
    metrics.READY.labels(lane).set(by_state[EventState.READY])
    return LaneReport(
        lane=lane,
        by_state=by_state,
        oldest_ready_s=float(backlog["oldest_ready_s"]),
        processed_per_s=int(backlog["processed"]) / window_s,
        window_s=window_s,
        held=[_held(r) for r in held_rows],
    )


def _held(row: dict[str, Any]) -> HeldEvent:
    return HeldEvent(
        entry_id=int(row["id"]),
        key=row["key"],
        code=row["last_error_code"],
        message=row["last_error_message"],
    )


async def listen(
    journal: Journal,
    settings: SyncSettings,
    *,
    listen_url: str | None,
    once: bool = False,
    install_signal_handlers: bool = False,
) -> WorkerStats:
    """Run the listener of the settings' pipeline instance until SIGTERM (or, `once`,
    until nothing is READY or an event is held); returns what it did."""
    from bossa.sync.lanes import listener  # lanes builds on this module

    worker = listener(journal, settings, listen_url=listen_url)
    await worker.run(install_signal_handlers=install_signal_handlers, until_idle=once)
    return worker.stats
