"""What the sync pipeline carries, with no I/O: the business events (S1) that a change of
account data publishes to the rating pipeline, as typed journal payloads.

One kind of journal entry, `account-sync`, keyed by the customer: every change of one
customer's contracts (and so of the one number rating knows the customer by) is applied
in the order it was committed. The event says what changed and from when (`at`, the
local wall-clock time CDRs carry), so a usage record is rated with the account data valid
at its own start, whenever the listener gets to the event.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bossa.errors import InvalidInput

__all__ = [
    "ACCOUNT_SYNC_KIND",
    "BUSINESS_KIND",
    "DEFAULT_EVENTS_YAML",
    "DEFAULT_POOL",
    "ENTRY_POINT_GROUP",
    "AccountEvent",
    "BusinessDefinition",
    "BusinessEvent",
    "BusinessType",
    "Dispatcher",
    "EventConfig",
    "EventState",
    "EventType",
    "InternalEvent",
    "LaneReport",
    "ListenerState",
    "Mode",
    "Outcome",
    "PipelineStats",
    "PolicyHook",
    "PublisherState",
    "SwitchReason",
    "Thresholds",
    "assemble",
    "lane_of_instance",
    "next_mode",
    "number_of",
    "parse_event_config",
    "policy",
    "registered_policies",
    "resolve_policy",
    "start_of",
]

#: The journal kind of an account-sync event (S8: these are taken in batches).
ACCOUNT_SYNC_KIND = "account-sync"


def lane_of_instance(instance: int) -> str:
    """S4/S5: one queue (journal lane) per pipeline instance."""
    return f"sync.pipeline.{instance}"


class EventType(StrEnum):
    """The business events of account data a contract's lifecycle publishes."""

    #: A new contract: the customer bought a product (BRM ProductPurchase).
    PRODUCT_PURCHASED = "product_purchased"
    #: The contract moved to another product.
    PRODUCT_CHANGED = "product_changed"
    #: Suspended or resumed: the number keeps its product (see docs: usage still rates).
    STATUS_CHANGED = "status_changed"
    #: Terminated: the product ends at the contract's end date (BRM ProductCancel).
    PRODUCT_CANCELLED = "product_cancelled"


class EventState(StrEnum):
    """S6's states, from the journal's: READY (waiting or due), PROCESSED (done), and
    the two an operator must look at."""

    READY = "ready"
    IN_PROCESS = "in_process"
    HELD = "held"
    PROCESSED = "processed"
    DISCARDED = "discarded"

    @classmethod
    def of_journal(cls, state: str) -> EventState:
        return {
            "waiting": cls.READY,
            "ready": cls.READY,
            "taken": cls.IN_PROCESS,
            "parked": cls.HELD,
            "done": cls.PROCESSED,
            "discarded": cls.DISCARDED,
        }[state]


def number_of(msisdn: str | None) -> str | None:
    """The number as rating keys it: E.164 digits without the '+'."""
    if msisdn is None:
        return None
    return msisdn.removeprefix("+") or None


def start_of(day: date) -> datetime:
    """A contract's date as the local time its product starts or ends (midnight)."""
    return datetime.combine(day, time())


class AccountEvent(BaseModel):
    """One business event of account data, as enqueued and as the listener reads it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: EventType
    sa_id: str = Field(min_length=1, max_length=200)
    customer_id: str = Field(min_length=1, max_length=200)
    account_id: str | None = Field(default=None, max_length=200)
    #: The customer's number without '+', or None when the customer has none (then
    #: rating has nothing to rate for it).
    msisdn: str | None = Field(default=None, max_length=32)
    product_code: str = Field(min_length=1, max_length=32)
    status: str = Field(min_length=1, max_length=32)
    #: From when the change holds, in the local time usage records carry.
    at: datetime
    #: When the change was committed (UTC), for the delay an operator watches.
    occurred_at: datetime

    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_entry(cls, payload: Any) -> AccountEvent:
        """The event of a journal entry's payload; InvalidInput naming the field when the
        payload is not one (an entry edited by hand, a producer of another version)."""
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            raise InvalidInput(first["msg"], field=f"payload.{where}") from None


class LaneReport(BaseModel):
    """`bossa sync report`: one lane's events by state (S6), its backlog and speed."""

    lane: str
    by_state: dict[EventState, int]
    #: The oldest READY event's age, seconds (0 when none waits).
    oldest_ready_s: float
    #: Events processed per second over the window.
    processed_per_s: float
    window_s: float
    #: The events an operator must fix before processing goes on (S8).
    held: list[HeldEvent] = Field(default_factory=list)
    #: S4: the publisher's connection and its outbox; S9, S11: this instance's listener.
    publisher: PublisherState | None = None
    listener: ListenerState | None = None


class HeldEvent(BaseModel):
    entry_id: int
    key: str | None
    code: str | None
    message: str | None


# -- the generic business events (S1-S4) -------------------------------------------------

#: The journal kind of every business event that is not a contract's account-sync event.
BUSINESS_KIND = "business-event"

#: An event's name: internal `module.what` (`customers.account_opened`), business
#: CamelCase (`AccountCreated`), as in the seed's payload configuration.
INTERNAL_NAME = r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$"
BUSINESS_NAME = r"^[A-Z][A-Za-z0-9]{0,63}$"


class BusinessType(StrEnum):
    """The business events bossa's modules publish (S1), in the seed's names where BRM
    has one. A deployment may define more in its payload configuration."""

    ACCOUNT_CREATED = "AccountCreated"
    ACCOUNT_CANCELLED = "AccountCancelled"
    BALANCE_ADJUSTED = "BalanceAdjusted"
    CYCLE_FEE_APPLIED = "CycleFeeApplied"
    BILLING_STARTED = "BillingStarted"
    BILLING_COMPLETED = "BillingCompleted"
    RECYCLE_REQUEST = "RecycleRequest"


class InternalEvent(BaseModel):
    """One event a module raises inside its transaction (BRM: an event of the event
    notification list), before the notification list, the policy hook and assembly."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=INTERNAL_NAME, max_length=64)
    #: The customer the event is about (the key of per-account order and of the account
    #: router), or None for an event about no one customer (a bill run).
    customer_id: str | None = Field(default=None, max_length=200)
    #: JSON-safe data of the event (amounts in minor units, ids, dates as text).
    data: dict[str, Any] = Field(default_factory=dict)


class BusinessEvent(BaseModel):
    """A complete business event (S3) as enqueued (kind `business-event`) and read back."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = Field(pattern=BUSINESS_NAME)
    customer_id: str | None = Field(default=None, max_length=200)
    #: The internal events it is made of, in the order they were raised.
    events: list[InternalEvent] = Field(min_length=1)
    occurred_at: datetime

    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_entry(cls, payload: Any) -> BusinessEvent:
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            raise InvalidInput(first["msg"], field=f"payload.{where}") from None

    def first(self, name: str) -> InternalEvent | None:
        return next((e for e in self.events if e.name == name), None)

    def value(self, key: str) -> Any:
        """The first value of `key` in its internal events' data (None when none has it)."""
        return next((e.data[key] for e in self.events if key in e.data), None)


class PublisherState(BaseModel):
    """S4: the publisher's connection to the queues and the events it holds meanwhile."""

    connected: bool
    changed_by: str
    changed_at: datetime
    #: Events published while disconnected, waiting for `connect`.
    outbox: int
    oldest_outbox_s: float


class ListenerState(BaseModel):
    """S9, S11: an instance's listener: the operator's wish and what it reports."""

    instance: int
    connected: bool
    #: stopped (no listener runs), starting (modules initialising: events wait),
    #: active, disconnected (its threads are finished and inactive).
    state: str
    changed_by: str
    changed_at: datetime
    seen_at: datetime | None


# -- the business-event file (S2-S4, S6, S7) and payload assembly (S3) ---------------------
#
# The operator's description of business events, with no I/O (service reads the file):
# the event notification list and policy hook (S2), the payload configuration that assembles
# internal events into business events (S3), the queue map (S4), the modules each type is
# routed to (S6) and the thread allocation (S7).
#
# BRM keeps these in four files (pin_notify_ifw_sync, payloadconfig_ifw_sync.xml,
# ifw_sync_queuenames, the DAT_Listener registry); bossa keeps them in one YAML or TOML
# file (`BOSSA_SYNC_EVENTS`), checked at start with errors naming the field, so that the
# four cannot disagree. DEFAULT_EVENTS_YAML (at the end) is the default and documents
# itself.


#: The seed allows at most one thread for recycle requests.
RECYCLE_MAX_THREADS = 1
MAX_THREADS_PER_TYPE = 16

Publishing = Literal["publish", "policy"]
QueueTarget = Literal["routed", "all"] | list[int]


class BusinessDefinition(BaseModel):
    """One business event of the payload configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Internal events that must all be raised by one business operation (one
    #: transaction) for this business event to be complete.
    requires: list[str] = Field(min_length=1, max_length=32)
    #: Internal events it carries too when the same operation raised them.
    collect: list[str] = Field(default_factory=list, max_length=32)
    #: Account-synchronisation data (S8: dequeued in batches) or a process to invoke
    #: (a recycle, a bill run's start: one at a time).
    batch: bool = False
    #: The pipeline modules registered for it (S6), in the order they get it.
    modules: list[str] = Field(min_length=1, max_length=8)

    @model_validator(mode="after")
    def _names(self) -> BusinessDefinition:
        for where, names in (("requires", self.requires), ("collect", self.collect)):
            for n, name in enumerate(names):
                if not re.match(INTERNAL_NAME, name):
                    raise ValueError(f"{where}[{n}]: {name!r} is not an internal event name")
        return self


class EventConfig(BaseModel):
    """The whole file. Field names are the file's keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: S2, the event notification list: each internal event that is published, and how:
    #: `publish` straight to payload assembly, `policy` through the policy hook first.
    #: An internal event not listed is not published.
    notify: dict[str, Publishing] = Field(default_factory=dict)
    #: S2: the registered name of the policy hook (see bossa.sync.policies).
    policy_hook: str = Field(default="passthrough", min_length=1, max_length=100)
    #: S3, the payload configuration: business event type -> its definition.
    business_events: dict[str, BusinessDefinition] = Field(default_factory=dict)
    #: S4: business event type -> the pipeline instances whose queue gets it: `routed`
    #: (the customer's instance by the account router; every instance when the event
    #: has no customer), `all`, or a list of instance numbers. Unlisted types: routed.
    queues: dict[str, QueueTarget] = Field(default_factory=dict)
    #: S7, EventThreadAllocation: business event type -> its own threads. Every other
    #: type shares the one default thread.
    threads: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> EventConfig:
        for name in self.notify:
            if not re.match(INTERNAL_NAME, name):
                raise _Problem(f"notify.{name}", "is not an internal event name (module.what)")
        for btype, definition in self.business_events.items():
            if not re.match(BUSINESS_NAME, btype):
                raise _Problem(f"business_events.{btype}", "is not a business event name")
            for name in (*definition.requires, *definition.collect):
                if name not in self.notify:
                    raise _Problem(
                        f"business_events.{btype}",
                        f"{name} is not in the notification list (notify), so it is never"
                        " published",
                    )
        for where, table in (("queues", self.queues), ("threads", self.threads)):
            for btype in table:
                if btype not in self.business_events:
                    raise _Problem(f"{where}.{btype}", "is not a business event of the file")
        for btype, target in self.queues.items():
            if isinstance(target, list) and (
                not target or any(not 0 <= i <= 7 for i in target) or len(set(target)) < len(target)
            ):
                raise _Problem(f"queues.{btype}", "must list distinct instances 0-7")
        for btype, n in self.threads.items():
            if not 1 <= n <= MAX_THREADS_PER_TYPE:
                raise _Problem(f"threads.{btype}", f"must be between 1 and {MAX_THREADS_PER_TYPE}")
            if btype == BusinessType.RECYCLE_REQUEST and n > RECYCLE_MAX_THREADS:
                raise _Problem(
                    f"threads.{btype}", "recycle requests get at most one thread (seed 002)"
                )
            if self.business_events[btype].batch:
                raise _Problem(
                    f"threads.{btype}",
                    "an account-sync (batch: true) type is applied in batches on the"
                    " default thread, in queue order; it cannot have threads of its own",
                )
        return self

    def published(self, name: str) -> Publishing | None:
        return self.notify.get(name)

    def instances_of(self, btype: str, routed: int | None, instances: int) -> list[int]:
        """S4: the instances whose queues get an event of `btype`; `routed` is the
        customer's instance (None for an event about no customer)."""
        target = self.queues.get(btype, "routed")
        if target == "all" or (target == "routed" and routed is None):
            return list(range(instances))
        if target == "routed":
            assert routed is not None
            return [routed]
        assert isinstance(target, list)
        return [i for i in target if i < instances]

    def check_modules(self, known: Iterable[str]) -> None:
        names = set(known)
        for btype, definition in self.business_events.items():
            for n, module in enumerate(definition.modules):
                if module not in names:
                    raise InvalidInput(
                        f"no pipeline module {module!r} (registered: {', '.join(sorted(names))})",
                        field=f"business_events.{btype}.modules[{n}]",
                    )


class _Problem(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def parse_event_config(data: Any, *, source: str = "events") -> EventConfig:
    """The checked configuration of parsed file content; InvalidInput naming the field."""
    try:
        return EventConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        ctx = first.get("ctx") or {}
        cause = ctx.get("error")
        if isinstance(cause, _Problem):
            raise InvalidInput(f"{source}: {cause.reason}", field=cause.field) from None
        where = ".".join(str(p) for p in first["loc"]) or "file"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(f"{source}: {message}", field=where) from None


def assemble(
    config: EventConfig, raised: Sequence[InternalEvent], *, now: datetime | None = None
) -> list[BusinessEvent]:
    """S3: the complete business events that the internal events of one business
    operation make up, per customer, in the payload configuration's order. An internal
    event may be carried by several business events; one that completes none is not
    published (the caller logs it)."""
    now = now or datetime.now(UTC)
    by_customer: dict[str | None, list[InternalEvent]] = {}
    for event in raised:
        by_customer.setdefault(event.customer_id, []).append(event)
    found: list[BusinessEvent] = []
    for customer, events in by_customer.items():
        names = {e.name for e in events}
        for btype, definition in config.business_events.items():
            if not set(definition.requires) <= names:
                continue
            wanted = {*definition.requires, *definition.collect}
            found.append(
                BusinessEvent(
                    type=btype,
                    customer_id=customer,
                    events=[e for e in events if e.name in wanted],
                    occurred_at=now,
                )
            )
    return found


# -- the policy hook (S2) ------------------------------------------------------------------
#
# S2's policy hook (BRM PCM_OP_IFW_SYNC_POL_PUBLISH_EVENT): a registered Python callable
# that may change an internal event before it is published, or drop it (return None).
#
# The business-event file names the hook; the name is looked up here, among the hooks
# registered in this module (`@policy`) and the entry points of installed packages in the
# group `bossa.sync.policies`. That is the allow-list: no code ever comes from the
# configuration file's values, from an event's payload or from a request, and a name that
# is not registered is refused at start, naming the field.
#
# A hook runs inside the business transaction that raised the event: it must be quick and
# do no I/O. Whatever it raises fails that transaction, the change with it, as any other
# error in it would: the event is never silently lost.


PolicyHook = Callable[[InternalEvent], InternalEvent | None]
ENTRY_POINT_GROUP = "bossa.sync.policies"

_REGISTRY: dict[str, PolicyHook] = {}


def policy(name: str) -> Callable[[PolicyHook], PolicyHook]:
    """Register a hook under `name` (code of bossa or of a deployment's own package)."""

    def register(hook: PolicyHook) -> PolicyHook:
        if name in _REGISTRY and _REGISTRY[name] is not hook:
            raise ValueError(f"policy hook {name!r} is registered already")
        _REGISTRY[name] = hook
        return hook

    return register


def registered_policies() -> list[str]:
    installed = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted({*_REGISTRY, *installed})


def resolve_policy(name: str) -> PolicyHook:
    """The hook registered as `name`; InvalidInput naming `policy_hook` otherwise."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        hook = ep.load()
        if not callable(hook):
            raise InvalidInput(f"entry point {name!r} is not callable", field="policy_hook")
        return hook  # type: ignore[no-any-return]
    raise InvalidInput(
        f"no policy hook {name!r} (registered: {', '.join(registered_policies())})",
        field="policy_hook",
    )


@policy("passthrough")
def passthrough(event: InternalEvent) -> InternalEvent | None:
    """Publish every event as raised."""
    return event


@policy("drop_zero_amounts")
def drop_zero_amounts(event: InternalEvent) -> InternalEvent | None:
    """Drop events whose `amount_minor` is 0: nothing changed in a balance, the pipeline
    has nothing to learn (an example of a policy that filters)."""
    if event.data.get("amount_minor") == 0:
        return None
    return event


# -- the listener's threads (S7) -----------------------------------------------------------
#
# S7: the listener's threads (DAT_Listener EventThreadAllocation), with no I/O.
#
# One default thread takes every event type without an allocation, strictly in queue
# order. A type with an allocation gets that many threads of its own. Items are started
# in queue order: the dispatcher waits until a thread of the item's pool is free, starts
# the item there, and waits until its processing has begun before it looks at the next
# (the seed: "a new thread can begin processing an event as soon as processing for the
# previous event has begun"). So with RecycleRequest = 1 and OpenNewActgCycle = 2, a
# slow recycle request does not hold CycleForward events back, but the next recycle
# request waits for it, and nothing overtakes an earlier event in the queue to start.
#
# The threads are asyncio tasks: the listener's work is database round trips, and one
# event loop runs them concurrently; "thread" is the seed's word and the operator's.
#
# `halt()` stops the dispatch (an event is held, or the listener is being disconnected):
# items not started are given back to the caller, those running finish.


DEFAULT_POOL = "default"

_T = TypeVar("_T")


@dataclass
class Outcome(Generic[_T]):
    started: list[_T] = field(default_factory=list)
    unstarted: list[_T] = field(default_factory=list)


class Dispatcher(Generic[_T]):
    """Runs items on the threads of their pools, started in the order given."""

    def __init__(self, allocation: Mapping[str, int]) -> None:
        self.sizes = {DEFAULT_POOL: 1, **allocation}
        self._free: dict[str, asyncio.Queue[str]] = {}
        for pool, n in self.sizes.items():
            queue: asyncio.Queue[str] = asyncio.Queue()
            for i in range(1, n + 1):
                queue.put_nowait(f"{pool}#{i}")
            self._free[pool] = queue
        self._halted = asyncio.Event()
        #: Threads processing an event now (the seed's "total counter of active threads").
        self.active = 0

    def pool_of(self, event_type: str) -> str:
        return event_type if event_type in self.sizes else DEFAULT_POOL

    def halt(self) -> None:
        self._halted.set()

    @property
    def halted(self) -> bool:
        return self._halted.is_set()

    def resume(self) -> None:
        self._halted.clear()

    async def run(
        self,
        items: Sequence[tuple[str, _T]],
        work: Callable[[_T, str, Callable[[], None]], Awaitable[None]],
    ) -> Outcome[_T]:
        """Start each (pool, item) in order on a free thread of its pool; returns once
        every started item is done. `work(item, thread, began)` calls `began()` when its
        processing has begun (the next item may start from then on; returning counts as
        begun too); it must not raise: it settles its own item (a failure halts the
        dispatcher through `halt`)."""
        outcome: Outcome[_T] = Outcome()
        tasks: list[asyncio.Task[None]] = []
        for n, (pool, item) in enumerate(items):
            thread = await self._acquire(pool)
            if thread is None:
                outcome.unstarted.extend(i for _, i in items[n:])
                break
            began = asyncio.Event()
            tasks.append(asyncio.create_task(self._one(pool, thread, item, work, began)))
            outcome.started.append(item)
            await began.wait()
        if tasks:
            await asyncio.gather(*tasks)
        return outcome

    async def _acquire(self, pool: str) -> str | None:
        """A free thread of the pool, or None once halted (nothing more starts)."""
        if self.halted:
            return None
        getter = asyncio.ensure_future(self._free[pool].get())
        halted = asyncio.ensure_future(self._halted.wait())
        try:
            await asyncio.wait([getter, halted], return_when=asyncio.FIRST_COMPLETED)
        finally:
            halted.cancel()
        if getter.done() and not self.halted:
            return getter.result()
        if getter.done():
            self._free[pool].put_nowait(getter.result())
        else:
            getter.cancel()
        return None

    async def _one(
        self,
        pool: str,
        thread: str,
        item: _T,
        work: Callable[[_T, str, Callable[[], None]], Awaitable[None]],
        began: asyncio.Event,
    ) -> None:
        self.active += 1
        try:
            await work(item, thread, began.set)
        finally:
            began.set()
            self.active -= 1
            self._free[pool].put_nowait(thread)


#: The packaged business-event file: `bossa sync check-events --default` prints it to
#: copy and change; BOSSA_SYNC_EVENTS names the copy.
DEFAULT_EVENTS_YAML = """\
# The business events bossa publishes to the rating pipeline (docs/sync-and-rating.md,
# "Business events"). Copy this file, change it, and point BOSSA_SYNC_EVENTS at the copy.

# S2, the event notification list (BRM pin_notify_ifw_sync): each internal event a module
# raises in its transaction that is published, and how. `policy`: through the policy hook
# (policy_hook below), which may change it or drop it; `publish`: straight on. An
# internal event not listed here is not published.
notify:
  customers.account_opened: publish
  customers.account_closed: publish
  # A contract's change is published as its account-sync event (bossa.sync.EventType).
  customers.product_purchased: policy
  customers.product_changed: policy
  customers.status_changed: policy
  customers.product_cancelled: policy
  billing.payment_taken: policy
  billing.cycle_fee_applied: policy
  billing.run_started: publish
  billing.run_completed: publish
  sync.recycle_requested: publish

# S2: the policy hook, by its registered name (bossa's: passthrough, drop_zero_amounts;
# a deployment's: registered with @bossa.sync.policy, or an installed package's entry
# point in group bossa.sync.policies). Never code: a name from this allow-list.
policy_hook: passthrough

# S3, the payload configuration (BRM payloadconfig_ifw_sync.xml): a business event is
# complete when one business operation (one transaction) raised every internal event it
# `requires`; it also carries those it `collect`s. `batch: true` marks account
# synchronisation data (S8: taken in batches); `modules` are the pipeline modules it is
# routed to (S6: account_data, balance_data, discount_data, billing, recycle).
business_events:
  AccountCreated:
    requires: [customers.account_opened]
    batch: true
    modules: [account_data]
  AccountCancelled:
    requires: [customers.account_closed]
    batch: true
    modules: [account_data]
  BalanceAdjusted:
    requires: [billing.payment_taken]
    batch: true
    modules: [balance_data]
  # A bill run's fee charged to one account (recurring and one-off fees of the period):
  # one per fee, published in the transaction of the charge.
  CycleFeeApplied:
    requires: [billing.cycle_fee_applied]
    batch: true
    modules: [balance_data]
  BillingStarted:
    requires: [billing.run_started]
    modules: [billing]
  BillingCompleted:
    requires: [billing.run_completed]
    modules: [billing]
  RecycleRequest:
    requires: [sync.recycle_requested]
    modules: [recycle]

# S4 (BRM ifw_sync_queuenames): which pipeline instances' queues get each type: `routed`
# (the customer's instance by the account router; all instances for an event about no
# customer), `all`, or a list such as [0, 2]. Unlisted types are routed.
queues:
  BillingStarted: all
  BillingCompleted: all

# S7 (DAT_Listener EventThreadAllocation): types with threads of their own; all others
# share one default thread, strictly in queue order. Recycle requests: at most 1.
threads:
  RecycleRequest: 1
"""


LaneReport.model_rebuild()


# -- S13: interleaving rating and business events ------------------------------------------


class Mode(StrEnum):
    """What the interleaving pipeline does now (S13): rate CDRs or process events."""

    CDRS = "cdrs"
    EVENTS = "events"


class SwitchReason(StrEnum):
    """Why the pipeline switched (the seed's criteria, and one of bossa's)."""

    #: To events: READY events reached the maximum threshold.
    MAX_EVENTS = "max_events"
    #: To events: the maximum CDR processing time was spent.
    CDR_TIME = "cdr_time"
    #: To events: no CDR file waits and events are READY (the optional switch).
    NO_CDRS = "no_cdrs"
    #: To CDRs: READY events fell to the minimum threshold.
    MIN_EVENTS = "min_events"
    #: To CDRs: the maximum business event processing time was spent.
    EVENT_TIME = "event_time"
    #: To CDRs: the listener may not take (an event is held for an operator, S8, or the
    #: listener is disconnected, S9): rating goes on meanwhile.
    EVENTS_BLOCKED = "events_blocked"


@dataclass(frozen=True)
class Thresholds:
    """The seed's interleaving thresholds (`BOSSA_SYNC_MAX_EVENTS` ...); a time of 0 is
    no limit."""

    max_events: int
    min_events: int
    max_cdr_time_s: float
    max_event_time_s: float
    events_when_no_cdrs: bool

    def keep_events(self, cdrs_waiting: bool) -> bool:
        """With the optional switch on and no CDR waiting, nothing else is to be done:
        the pipeline stays on events whatever the thresholds."""
        return self.events_when_no_cdrs and not cdrs_waiting

    def take_limit(self, ready: int, cdrs_waiting: bool, batch: int) -> int:
        """Events to take next in events mode: no more than bring READY down to the
        minimum (the seed stops dequeuing there), at most a batch."""
        if self.keep_events(cdrs_waiting):
            return batch
        return max(1, min(batch, ready - self.min_events))


def next_mode(
    mode: Mode, limits: Thresholds, *, ready: int, elapsed_s: float, cdrs_waiting: bool
) -> SwitchReason | None:
    """S13, pure: whether to switch now, and why; None to stay. `ready` counts the
    READY events only; `elapsed_s` is the time spent in `mode` since the last switch.

    Rating stops when READY events reach the maximum or the CDR time is spent; event
    processing stops when READY events fall to the minimum or the event time is spent.
    A time limit switches only when the other mode has something to do (more events
    READY than the minimum, for a switch to events; CDRs waiting, for a switch back
    when the optional switch keeps the pipeline on events): a switch undone at the next
    look would only log."""
    if mode is Mode.CDRS:
        if ready >= limits.max_events:
            return SwitchReason.MAX_EVENTS
        timed = limits.max_cdr_time_s > 0 and elapsed_s >= limits.max_cdr_time_s
        if timed and ready > limits.min_events:
            return SwitchReason.CDR_TIME
        if limits.events_when_no_cdrs and not cdrs_waiting and ready > 0:
            return SwitchReason.NO_CDRS
        return None
    if limits.keep_events(cdrs_waiting):
        return None
    if ready <= limits.min_events:
        return SwitchReason.MIN_EVENTS
    if limits.max_event_time_s > 0 and elapsed_s >= limits.max_event_time_s:
        return SwitchReason.EVENT_TIME
    return None


@dataclass
class PipelineStats:
    """What an interleaving pipeline did (`bossa sync pipeline`)."""

    #: Business events processed (marked PROCESSED and applied).
    events: int = 0
    #: CDR files rated (a file rated before and dropped again counts, as `repeated`).
    files: int = 0
    rated: int = 0
    suspended: int = 0
    malformed: int = 0
    #: Suspended records the automatic recycling rated.
    recycled: int = 0
    #: Every switch, in order: the mode switched to, and why.
    switches: list[tuple[Mode, SwitchReason]] = field(default_factory=list)
