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

import asyncio
import json
import time
import tomllib
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import yaml
from pydantic import ValidationError

from bossa import config, ledger, rating
from bossa.db import Conn, Pool
from bossa.errors import Conflict, InvalidInput, NotFound
from bossa.journal import Journal, JournalSettings, NewEntry, WorkerStats
from bossa.logs import get_logger
from bossa.sync import metrics, store
from bossa.sync.models import (
    ACCOUNT_SYNC_KIND,
    BUSINESS_KIND,
    DEFAULT_EVENTS_YAML,
    AccountEvent,
    BusinessEvent,
    BusinessType,
    EventConfig,
    EventState,
    EventType,
    HeldEvent,
    InternalEvent,
    LaneReport,
    ListenerState,
    PipelineStats,
    PolicyHook,
    PublisherState,
    assemble,
    lane_of_instance,
    number_of,
    parse_event_config,
    resolve_policy,
    start_of,
)
from bossa.sync.settings import SyncSettings

__all__ = [
    "MODULES",
    "Module",
    "ModuleContext",
    "apply",
    "contract_changed",
    "default_config",
    "event_config",
    "held",
    "instance_of",
    "listen",
    "listener_state",
    "load_event_config",
    "module",
    "pipeline",
    "publish",
    "publish_each",
    "publisher",
    "ready_events",
    "report",
    "request_recycle",
    "set_route",
    "switch_listener",
    "switch_publisher",
]

log = get_logger("bossa.sync.service")

#: Seconds without a sign of life after which a listener is reported stopped (it says
#: so every 2 s while it runs).
LISTENER_SILENT_S = 15.0

#: Held events a report lists at most.
MAX_HELD_LISTED = 100


async def contract_changed(
    conn: Conn,
    journal: Journal | None,
    sa_id: str,
    change: EventType,
    settings: SyncSettings | None = None,
) -> AccountEvent | None:
    """Publish the business event of a contract's change, in the caller's transaction
    (after the change is written: the event carries the contract as it now is). The
    notification list and the policy hook apply (S2): returns the event as published,
    or None when it is not. The settings, when not given, are read from the environment
    as at start-up."""
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
    events = event_config(settings)
    notified = _notified(
        events,
        InternalEvent(
            name=f"customers.{change.value}",
            customer_id=event.customer_id,
            data=event.to_payload(),
        ),
    )
    if notified is None:
        return None
    try:
        event = AccountEvent.model_validate(notified.data)
    except ValidationError as exc:
        raise InvalidInput(
            f"the policy hook made the event invalid: {exc.errors()[0]['msg']}",
            field="policy_hook",
        ) from None
    routed = await instance_of(conn, event.customer_id, settings)
    await _enqueue(
        conn,
        journal,
        [
            NewEntry(
                lane=lane_of_instance(routed),
                kind=ACCOUNT_SYNC_KIND,
                payload=event.to_payload(),
                # Per-account order: all of a customer's contracts share its number.
                key=event.customer_id,
            )
        ],
    )
    metrics.PUBLISHED.labels(event.type.value).inc()
    return event


# -- S2-S4: the notification list, the policy hook, assembly, the publisher ----------------

_CONFIGS: dict[Path | None, tuple[EventConfig, PolicyHook]] = {}


def event_config(settings: SyncSettings) -> EventConfig:
    """The checked business-event file of the settings (read once per process)."""
    return _config(settings)[0]


def _config(settings: SyncSettings) -> tuple[EventConfig, PolicyHook]:
    found = _CONFIGS.get(settings.events)
    if found is None:
        checked = load_event_config(settings.events)
        checked.check_modules(MODULES)
        found = (checked, resolve_policy(checked.policy_hook))
        _CONFIGS[settings.events] = found
    return found


def check_event_file(path: Path | None) -> EventConfig:
    """A business-event file checked as the listener and the publisher will check it."""
    checked = load_event_config(path)
    checked.check_modules(MODULES)
    resolve_policy(checked.policy_hook)
    return checked


def forget_configs() -> None:
    """Read the business-event files again at their next use (tests, a reload)."""
    _CONFIGS.clear()


def _notified(
    events: EventConfig, event: InternalEvent, hook: PolicyHook | None = None
) -> InternalEvent | None:
    """S2: the event as the notification list and the policy hook let it through."""
    how = events.published(event.name)
    if how is None:
        return None
    if how == "policy":
        if hook is None:
            hook = resolve_policy(events.policy_hook)
        changed = hook(event)
        if changed is None:
            metrics.DROPPED.labels(event.name).inc()
            return None
        if not isinstance(changed, InternalEvent):
            raise InvalidInput(
                f"the policy hook returned {type(changed).__name__}, not an event or None",
                field="policy_hook",
            )
        return changed
    return event


async def publish(
    conn: Conn,
    journal: Journal | None,
    raised: Sequence[InternalEvent],
    *,
    settings: SyncSettings | None = None,
) -> list[BusinessEvent]:
    """Publish the internal events of one business operation, in the caller's
    transaction (S1-S4): through the notification list and the policy hook, assembled
    into complete business events, routed to their instances' lanes (or kept in the
    outbox while the publisher is disconnected). Returns the business events published.
    `journal` may be None for a caller that has none at hand (the ledger): publishing
    only enqueues on the caller's connection."""
    return await publish_each(conn, journal, [raised], settings=settings)


async def publish_each(
    conn: Conn,
    journal: Journal | None,
    operations: Sequence[Sequence[InternalEvent]],
    *,
    settings: SyncSettings | None = None,
) -> list[BusinessEvent]:
    """`publish` for several business operations of one transaction, each assembled on
    its own (a bill run's chunk: each fee charged is a CycleFeeApplied of its own, even
    two of one customer), routed with one lookup and enqueued with one insert."""
    settings = settings or config.load(SyncSettings)
    events, hook = _config(settings)
    built: list[BusinessEvent] = []
    for raised in operations:
        passed = [n for e in raised if (n := _notified(events, e, hook)) is not None]
        if not passed:
            continue
        assembled = assemble(events, passed)
        used = {id(i) for b in assembled for i in b.events}
        for left in (e for e in passed if id(e) not in used):
            log.debug("internal event completes no business event", internal=left.name)
        built.extend(assembled)
    if not built:
        return []
    routes = await _instances_of(
        conn, {b.customer_id for b in built if b.customer_id is not None}, settings
    )
    entries: list[NewEntry] = []
    for business in built:
        routed = None if business.customer_id is None else routes[business.customer_id]
        cycle = business.value("cycle")
        key = business.customer_id or (f"cycle:{cycle}" if isinstance(cycle, str) else None)
        entries.extend(
            NewEntry(
                lane=lane_of_instance(instance),
                kind=BUSINESS_KIND,
                payload=business.to_payload(),
                key=key,
            )
            for instance in events.instances_of(business.type, routed, settings.instances)
        )
        metrics.PUBLISHED.labels(business.type).inc()
    await _enqueue(conn, journal, entries)
    return built


async def _enqueue(conn: Conn, journal: Journal | None, entries: list[NewEntry]) -> None:
    """S4: onto the lanes, READY; or, while the publisher is disconnected, into the
    outbox in the same transaction (nothing is lost; `connect` moves them on in order)."""
    if not entries:
        return
    if journal is None:
        # Enqueueing on a given connection uses neither the pool nor a second connection.
        journal = Journal(cast(Pool, None), config.load(JournalSettings))
    await store.publisher_lock(conn, exclusive=False)
    if (await store.publisher(conn))["connected"]:
        await journal.enqueue(entries, conn=conn)
        return
    await store.outbox_add(
        conn,
        [e.lane for e in entries],
        [e.key for e in entries],
        [e.kind for e in entries],
        [json.dumps(e.payload) for e in entries],
    )
    metrics.OUTBOXED.inc(len(entries))


async def instance_of(conn: Conn, customer_id: str, settings: SyncSettings) -> int:
    """S12, the account router: the customer's pipeline instance (its assignment, else
    its id's hash; always 0 with one instance)."""
    return (await _instances_of(conn, {customer_id}, settings))[customer_id]


async def _instances_of(conn: Conn, customers: set[str], settings: SyncSettings) -> dict[str, int]:
    """`instance_of` for several customers with one query."""
    if settings.instances == 1 or not customers:
        return dict.fromkeys(customers, 0)
    assigned = await store.routes_of(conn, sorted(customers))
    return {
        c: a
        if (a := assigned.get(c)) is not None and a < settings.instances
        else zlib.crc32(c.encode()) % settings.instances
        for c in customers
    }


async def set_route(
    pool: Pool, customer_id: str, instance: int, settings: SyncSettings, *, actor: str
) -> int:
    """Assign a customer to a pipeline instance for its future events (S12). Events
    already queued stay on the lane they were routed to: move a customer while its
    instance's lane has none of its events READY."""
    if not 0 <= instance < settings.instances:
        raise InvalidInput(
            f"must be between 0 and {settings.instances - 1} (BOSSA_SYNC_INSTANCES)",
            field="instance",
        )
    async with pool.connection() as conn, conn.transaction():
        await store.set_route(conn, customer_id, instance, actor=actor)
    return instance


async def publisher(pool: Pool) -> PublisherState:
    async with pool.connection() as conn:
        row = await store.publisher(conn)
        box = await store.outbox(conn)
    return PublisherState(
        connected=bool(row["connected"]),
        changed_by=row["changed_by"],
        changed_at=row["changed_at"],
        outbox=int(box["n"]),
        oldest_outbox_s=float(box["oldest_s"]),
    )


async def switch_publisher(
    pool: Pool, journal: Journal, *, connected: bool, actor: str, reason: str | None = None
) -> PublisherState:
    """S4: `bossa sync publisher disconnect|connect`. Disconnected, business transactions
    keep committing and their events wait in the outbox; connecting moves them to their
    lanes, oldest first, in one transaction with the switch. Audited."""
    moved = 0
    async with pool.connection() as conn, conn.transaction():
        await store.publisher_lock(conn, exclusive=True)
        was = bool((await store.publisher(conn))["connected"])
        if connected:
            rows = await store.outbox_take(conn)
            await journal.enqueue(
                [
                    NewEntry(lane=r["lane"], kind=r["kind"], payload=r["payload"], key=r["key"])
                    for r in rows
                ],
                conn=conn,
                actor=actor,
            )
            moved = len(rows)
        await store.set_publisher(conn, connected=connected, actor=actor)
        await store.log_control(
            conn,
            target="publisher",
            instance=None,
            action="connect" if connected else "disconnect",
            actor=actor,
            reason=reason,
            moved=moved,
        )
    metrics.PUBLISHER_CONNECTED.set(int(connected))
    log.warning(
        "sync publisher connected" if connected else "sync publisher disconnected",
        actor=actor,
        was_connected=was,
        moved=moved,
        reason=reason,
    )
    return await publisher(pool)


async def request_recycle(
    pool: Pool,
    journal: Journal,
    *,
    actor: str,
    reason: str | None = None,
    settings: SyncSettings | None = None,
) -> list[BusinessEvent]:
    """Publish a RecycleRequest (the operator asks the pipeline to recycle suspense)."""
    async with pool.connection() as conn, conn.transaction():
        return await publish(
            conn,
            journal,
            [
                InternalEvent(
                    name="sync.recycle_requested",
                    data={"requested_by": actor, "reason": reason},
                )
            ],
            settings=settings,
        )


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


async def ready_events(pool: Pool, lane: str) -> int:
    """S13: how many events of the lane are READY (the only ones interleaving counts)."""
    async with pool.connection() as conn:
        return await store.ready_count(conn, lane)


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
        publisher=await publisher(pool),
        listener=await listener_state(pool, settings.instance),
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


async def listener_state(pool: Pool, instance: int) -> ListenerState:
    async with pool.connection() as conn:
        await store.listener_register(conn, instance)
        row = await store.listener(conn, instance)
    assert row is not None
    return _listener_state(row)


def _listener_state(row: dict[str, Any]) -> ListenerState:
    state = str(row["state"])
    seen = row["seen_at"]
    # A listener killed (SIGKILL, power) cannot say it stopped: silent for longer than
    # it ever is while alive, it is reported stopped.
    if state != "stopped" and (
        seen is None or (datetime.now(UTC) - seen).total_seconds() > LISTENER_SILENT_S
    ):
        state = "stopped"
    return ListenerState(
        instance=int(row["instance"]),
        connected=bool(row["connected"]),
        state=state,
        changed_by=row["changed_by"],
        changed_at=row["changed_at"],
        seen_at=seen,
    )


async def switch_listener(
    pool: Pool,
    instance: int,
    *,
    connected: bool,
    actor: str,
    reason: str | None = None,
    wait_s: float = 60.0,
) -> ListenerState:
    """S9: `bossa sync listener disconnect|connect`. Disconnect returns once the
    instance's listener has finished the events in hand and deactivated its threads (or
    no listener runs); connect once it is active again (or none runs: the next one
    starts connected). Audited. A listener that does not answer within `wait_s` is a
    Conflict naming it; the wish stays recorded and it acts on it when it can."""
    if not 0 <= instance <= 7:
        raise InvalidInput("must be between 0 and 7", field="instance")
    async with pool.connection() as conn, conn.transaction():
        await store.set_listener_wish(conn, instance, connected=connected, actor=actor)
        await store.log_control(
            conn,
            target="listener",
            instance=instance,
            action="connect" if connected else "disconnect",
            actor=actor,
            reason=reason,
        )
    log.warning(
        "sync listener connect asked" if connected else "sync listener disconnect asked",
        instance=instance,
        actor=actor,
        reason=reason,
    )
    wanted = {"active", "stopped"} if connected else {"disconnected", "stopped"}
    deadline = time.monotonic() + wait_s
    while True:
        state = await listener_state(pool, instance)
        if state.state in wanted:
            return state
        if time.monotonic() >= deadline:
            raise Conflict(
                f"the listener of instance {instance} is still {state.state} after"
                f" {wait_s:g} s; it will act on the request when it can",
                field="instance",
            )
        await asyncio.sleep(0.05)


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


async def pipeline(
    journal: Journal,
    settings: SyncSettings,
    inbox: Path,
    *,
    listen_url: str | None,
    once: bool = False,
    poll_s: float = 2.0,
    install_signal_handlers: bool = False,
) -> PipelineStats:
    """S13: one process that rates the CDR files of `inbox` and processes the instance's
    business events in turn, switching on the settings' thresholds, until SIGTERM (or,
    `once`, until no file waits and no event is READY); returns what it did."""
    from bossa.sync.lanes import interleaver  # lanes builds on this module

    worker = interleaver(journal, settings, inbox, listen_url=listen_url, poll_s=poll_s)
    try:
        await worker.run(install_signal_handlers=install_signal_handlers, until_idle=once)
    finally:
        worker.close()
    return worker.stats


# -- reading the business-event file -------------------------------------------------------
#
# The file as `BOSSA_SYNC_EVENTS` names it, checked; the packaged default when unset.


def load_event_config(path: Path | None) -> EventConfig:
    """Read and check the file (YAML, TOML or JSON by its suffix); None: the default."""
    if path is None:
        return default_config()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}", field="BOSSA_SYNC_EVENTS") from None
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise InvalidInput(
                f"{path}: must end in .yaml, .yml, .toml or .json", field="BOSSA_SYNC_EVENTS"
            )
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path} is not readable: {exc}", field="BOSSA_SYNC_EVENTS") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: must be a mapping", field="BOSSA_SYNC_EVENTS")
    return parse_event_config(data, source=str(path))


def default_config() -> EventConfig:
    return parse_event_config(yaml.safe_load(DEFAULT_EVENTS_YAML), source="the default")


# -- the pipeline modules (S6, S11) --------------------------------------------------------
#
# The pipeline modules the listener routes business events to (S6; BRM DAT_AccountBatch,
# DAT_BalanceBatch, DAT_Discount and the modules that take a process's events).
#
# A module is registered under a name with `@module`; the business-event file lists, per
# type, the modules that get it. Each gets the event inside the transaction that marks it
# PROCESSED: what it changes commits with the ack or not at all (applied once). A module
# may have an `init`, run when the listener starts and before it takes any event (S11:
# events that arrive while the pipeline starts wait until its modules are ready).
#
# What each keeps:
#
# - `account_data`: contracts' account-sync events become rating's subscriptions (the
#   existing `service.apply`); AccountCreated announces an account (S10: its details are
#   loaded only on its first usage, by rating), AccountCancelled closes it; either way
#   rating is told the account changed (`rating.account_changed`).
# - `balance_data`: the account's balances, read from the ledger when the event applies
#   (the seed: a module may use the event's data or read the current data at the source).
# - `discount_data`: the discount fields (`discount_*`) an event carries, per account.
# - `billing`: which cycles a bill run is billing, and rating's S14 hold on their
#   accounts from BillingStarted to BillingCompleted.
# - `recycle`: each recycle request, processed once: recorded, and rating's suspended
#   records whose cause is gone recycled in the same transaction.


@dataclass(frozen=True, slots=True)
class ModuleContext:
    instance: int
    entry_id: int
    #: The listener's thread processing the event (S7), as logs and tests name it.
    thread: str = "default#1"


Apply = Callable[[Conn, ModuleContext, BusinessEvent], Awaitable[None]]
Init = Callable[[Pool], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    apply: Apply
    init: Init | None = None


MODULES: dict[str, Module] = {}


def module(name: str, *, init: Init | None = None) -> Callable[[Apply], Apply]:
    """Register `apply` as the pipeline module `name` (replacing one of that name: a
    deployment may put its own in place of bossa's)."""

    def register(apply: Apply) -> Apply:
        MODULES[name] = Module(name, apply, init)
        return apply

    return register


def _account(event: BusinessEvent) -> str:
    account = event.value("account")
    if not isinstance(account, str) or not account:
        raise InvalidInput(f"{event.type} names no account", field="payload.events.data.account")
    return account


@module("account_data")
async def account_data(conn: Conn, ctx: ModuleContext, event: BusinessEvent) -> None:
    if event.type == BusinessType.ACCOUNT_CREATED:
        status = "announced"
    elif event.type == BusinessType.ACCOUNT_CANCELLED:
        status = "closed"
    else:
        status = str(event.value("status") or "open")
    account = _account(event)
    await store.account_announced(
        conn,
        instance=ctx.instance,
        account=account,
        customer=event.customer_id,
        status=status,
        entry=ctx.entry_id,
    )
    # What rating holds of the account (S10: loaded on first usage) is read again; an
    # opened account may also fix usage waiting in suspense (automatic recycling).
    await rating.account_changed(conn, accounts=[account])


@module("balance_data")
async def balance_data(conn: Conn, ctx: ModuleContext, event: BusinessEvent) -> None:
    account = _account(event)
    balances = await ledger.balances(conn, account)
    await store.account_balances(
        conn,
        instance=ctx.instance,
        account=account,
        customer=event.customer_id,
        balances=json.dumps(balances),
        entry=ctx.entry_id,
    )


@module("discount_data")
async def discount_data(conn: Conn, ctx: ModuleContext, event: BusinessEvent) -> None:
    discounts: dict[str, Any] = {}
    for internal in event.events:
        discounts.update({k: v for k, v in internal.data.items() if k.startswith("discount_")})
    await store.account_discounts(
        conn,
        instance=ctx.instance,
        account=_account(event),
        customer=event.customer_id,
        discounts=json.dumps(discounts),
        entry=ctx.entry_id,
    )


@module("billing")
async def billing(conn: Conn, ctx: ModuleContext, event: BusinessEvent) -> None:
    cycle = event.value("cycle")
    if not isinstance(cycle, str) or not cycle:
        raise InvalidInput(f"{event.type} names no cycle", field="payload.events.data.cycle")
    run = event.value("run_id")
    started = event.type == BusinessType.BILLING_STARTED
    await store.billing_mark(
        conn,
        started=started,
        instance=ctx.instance,
        cycle=cycle,
        run=int(run) if isinstance(run, int) else None,
        entry=ctx.entry_id,
    )
    # S14: the cycle's accounts' new usage waits in suspense while they are billed, and
    # is recycled by the pipeline once billing completes (rating's holds).
    accounts = await store.cycle_accounts(conn, cycle)
    if started:
        await rating.billing_started(conn, accounts, run=f"{cycle}:{run}")
    else:
        await rating.billing_completed(conn, accounts)


@module("recycle")
async def recycle(conn: Conn, ctx: ModuleContext, event: BusinessEvent) -> None:
    by, reason = event.value("requested_by"), event.value("reason")
    await store.recycle_processed(
        conn,
        entry=ctx.entry_id,
        instance=ctx.instance,
        by=by if isinstance(by, str) else None,
        reason=reason if isinstance(reason, str) else None,
    )
    # The request is carried out in the ack's transaction: its suspended records whose
    # cause is gone are rated (and leave suspense) exactly when the request is marked
    # PROCESSED. A listener killed before the commit recycles on the next delivery; one
    # killed after it has nothing left to do. RecycleRequest has at most one thread
    # (S7), so two recycles of one listener never run at once.
    done = await rating.recycle_requested(
        conn, instance=ctx.instance, actor=f"sync:{by}" if isinstance(by, str) else "sync"
    )
    log.info(
        "recycle request processed",
        entry=ctx.entry_id,
        thread=ctx.thread,
        taken=done.taken,
        rated=done.rated,
        still_suspended=done.suspended,
    )
