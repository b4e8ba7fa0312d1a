"""What the sync pipeline carries, with no I/O: the business events (S1) that a change of
account data publishes to the rating pipeline, as typed journal payloads.

One kind of journal entry, `account-sync`, keyed by the customer: every change of one
customer's contracts (and so of the one number rating knows the customer by) is applied
in the order it was committed. The event says what changed and from when (`at`, the
local wall-clock time CDRs carry), so a usage record is rated with the account data valid
at its own start, whenever the listener gets to the event.
"""

from __future__ import annotations

from datetime import date, datetime, time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bossa.errors import InvalidInput

__all__ = [
    "ACCOUNT_SYNC_KIND",
    "AccountEvent",
    "EventState",
    "EventType",
    "LaneReport",
    "lane_of_instance",
    "number_of",
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


LaneReport.model_rebuild()
