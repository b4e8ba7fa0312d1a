"""Billing's values and pure rules: periods and run states, payments and whether they are
staged or posted, what the edges send and receive, and the typed payloads of the service
lane's entries. No I/O."""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from bossa.errors import InvalidInput
from bossa.ledger import DEPOSIT, WRITEOFF, Recipe, format_minor, parse_model

if TYPE_CHECKING:
    from bossa.journal import Entry

__all__ = [
    "AccountOpened",
    "AccountSummary",
    "AccountView",
    "Authorization",
    "BillPeriodState",
    "Difference",
    "PaymentKind",
    "PaymentOutcome",
    "PaymentRequest",
    "PaymentStatus",
    "ReconcileReport",
    "RunRequest",
    "RunStarted",
    "RunState",
    "RunStatus",
    "RunTotals",
    "ServiceOrder",
    "StagedTotals",
    "Window",
    "WindowPlanned",
    "WindowRequest",
    "arrears_left",
    "check_arrears_payment",
    "overrunning",
    "payment_status",
    "recipe_of",
    "restores_service",
]


class RunStatus(StrEnum):
    """A run's real state (B5): staging follows it, not the planned window."""

    #: Billing accounts; payments are staged.
    RUNNING = "running"
    #: Every account billed; settlement applies what was staged (payments still staged).
    SETTLING = "settling"
    #: Normal processing: payments post online.
    SETTLED = "settled"


class PaymentKind(StrEnum):
    DEPOSIT = "deposit"  # a prepayment
    ARREARS = "arrears"  # paying off what is owed: a write-off


class PaymentStatus(StrEnum):
    STAGED = "staged"  # taken during a run, applied by its settlement (B2, B4)
    POSTED = "posted"  # on the online books at once


# -- rules -------------------------------------------------------------------------------


def payment_status(run_holds_the_books: bool) -> PaymentStatus:
    """B2: while a run holds the books (running or settling), a payment is staged."""
    return PaymentStatus.STAGED if run_holds_the_books else PaymentStatus.POSTED


def recipe_of(kind: PaymentKind) -> Recipe:
    return DEPOSIT if kind is PaymentKind.DEPOSIT else WRITEOFF


def arrears_left(receivable: int, staged_writeoffs: int) -> int:
    """What the account still owes: the online receivable less write-offs staged for it."""
    return receivable - staged_writeoffs


def check_arrears_payment(minor: int, arrears: int, *, exponent: int, currency: str) -> None:
    """An arrears payment pays off at most what is owed; the rest is a deposit."""
    if arrears <= 0:
        raise InvalidInput("the account has no arrears; pay a deposit instead", field="amount")
    if minor > arrears:
        raise InvalidInput(
            f"exceeds the arrears of {format_minor(arrears, exponent)} "
            f"{currency}; pay the rest as a deposit",
            field="amount",
        )


def restores_service(*, suspended: bool, minor: int, arrears: int) -> bool:
    """B3: paying all the arrears of a suspended account restores its service at once."""
    return suspended and minor == arrears


def overrunning(planned_end: datetime | None, now: datetime) -> bool:
    """B5: the run is past its planned end (staging goes on all the same)."""
    return planned_end is not None and now > planned_end


# -- requests ----------------------------------------------------------------------------


class PaymentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    account: str = Field(min_length=1, max_length=64)
    # Any: to_minor checks it and says why (a float, too many decimals, not a number).
    amount: Any = Field(
        description="A decimal string in the currency ('12.50') or minor units as an integer string"
    )
    currency: str = Field(min_length=3, max_length=3)

    @classmethod
    def parse(cls, data: Any) -> Self:
        return parse_model(cls, data)

    def fingerprint(self, kind: str) -> str:
        text = json.dumps({"kind": kind, **self.model_dump()}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


class RunRequest(BaseModel):
    """Open a bill run over the accounts of one bill cycle."""

    model_config = ConfigDict(extra="forbid")

    period_start: date
    period_end: date
    bill_cycle: str = "MONTHLY"
    due_days: int | None = Field(
        default=None,
        ge=0,
        le=366,
        description="Days from the period's end to the due date (default: the billing settings')",
    )
    planned_end: datetime | None = Field(
        default=None, description="When the planned window ends (B5: informative)"
    )

    @classmethod
    def parse(cls, data: Any) -> Self:
        return parse_model(cls, data)


class WindowRequest(BaseModel):
    """B1: plan a bill-run window."""

    model_config = ConfigDict(extra="forbid")

    bill_cycle: str
    planned_start: datetime
    planned_end: datetime

    @classmethod
    def parse(cls, data: Any) -> Self:
        return parse_model(cls, data)


# -- results (the API's response bodies) -------------------------------------------------


class AccountOpened(BaseModel):
    account: str
    #: False when the account existed already (nothing changed).
    created: bool


class AccountView(BaseModel):
    id: str
    customer_id: str
    currency: str
    exponent: int
    status: str
    grace_days: int
    bill_cycle: str


class StagedTotals(BaseModel):
    """Minor units staged for an account and not yet settled."""

    deposits: int
    writeoffs: int


class AccountSummary(BaseModel):
    account: AccountView
    #: Balance per book, minor units (prepaid is a credit: negative when funded).
    books: dict[str, int]
    available: int
    staged: StagedTotals


class PaymentOutcome(BaseModel):
    """What the front office is answered, staged or posted; replays answer the same."""

    account: str
    kind: PaymentKind
    amount: str
    amount_minor: int
    currency: str
    #: Contracts whose service this payment restored (B3).
    restored: list[str]
    status: PaymentStatus
    run_id: int | None = None
    staged_id: int | None = None
    received_at: str | None = None
    transaction_id: int | None = None
    #: True when this answers a replayed idempotency key.
    replay: bool | None = None


class Authorization(BaseModel):
    account: str
    authorized: bool
    funds: str
    amount: str
    currency: str


class Window(BaseModel):
    id: int
    bill_cycle: str
    planned_start: datetime
    planned_end: datetime
    created_at: datetime
    created_by: str


class WindowPlanned(BaseModel):
    window: int


class BillPeriodState(BaseModel):
    """B1: is a bill run in progress? The planned calendar and the run's real state."""

    #: A run holds the books: payments are staged.
    staging: bool
    run_id: int | None
    run_status: RunStatus | None
    #: The planned window now falls in, if any (informative: staging follows the run).
    planned_window: Window | None
    overrunning: bool


class RunStarted(BaseModel):
    run: int


class RunState(BaseModel):
    """A run and how far its billing got."""

    id: int
    bill_cycle: str
    period_start: date
    period_end: date
    due_days: int
    status: RunStatus
    planned_end: datetime | None
    accounts_total: int
    started_at: datetime
    billed_at: datetime | None
    settled_at: datetime | None
    settled_through: int | None
    started_by: str
    billed: int
    #: Share of the run's accounts billed, 0 to 1.
    progress: float


class Difference(BaseModel):
    account_id: str
    book: str
    expected: int
    final: int


class RunTotals(BaseModel):
    bills: int
    billed: int
    staged_deposits: int
    staged_deposit_amount: int
    staged_writeoffs: int
    staged_writeoff_amount: int
    unsettled: int


class ReconcileReport(BaseModel):
    """B6: snapshot + the run's charges + the settled staged items = the final books."""

    run: int
    status: RunStatus
    reconciled: bool
    differences: list[Difference]
    totals: RunTotals
    started_at: datetime
    billed_at: datetime | None
    settled_at: datetime | None


# -- the service lane's payloads ---------------------------------------------------------


class ServiceOrder(BaseModel):
    """The payload of a `service.suspend` or `service.resume` entry on billing's service
    lane: one contract to suspend (dunning) or restore (arrears paid), sent to
    provisioning as order 4204 or 4205."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    SUSPEND: ClassVar[str] = "service.suspend"
    RESUME: ClassVar[str] = "service.resume"
    INTF_CODES: ClassVar[dict[str, str]] = {SUSPEND: "4204", RESUME: "4205"}

    kind: Literal["service.suspend", "service.resume"]
    account: str
    sa_id: str  # SA_ID: also the entry's key, so a contract's orders go in order
    product: str
    reason: str

    @property
    def intf_code(self) -> str:
        """INTF_CODE of the provisioning order: 4204 suspends, 4205 restores."""
        return self.INTF_CODES[self.kind]

    @classmethod
    def change(
        cls, *, restore: bool, account: str, sa_id: str, product: str, reason: str
    ) -> ServiceOrder:
        kind = cls.RESUME if restore else cls.SUSPEND
        return cls.model_validate(
            {"kind": kind, "account": account, "sa_id": sa_id, "product": product, "reason": reason}
        )

    def to_payload(self) -> dict[str, str]:
        """The entry's payload (the kind is the entry's own `kind`)."""
        return {
            "account": self.account,
            "sa_id": self.sa_id,
            "product": self.product,
            "intf_code": self.intf_code,
            "reason": self.reason,
        }

    @classmethod
    def from_entry(cls, entry: Entry) -> ServiceOrder:
        payload = dict(entry.payload)
        intf_code = payload.pop("intf_code", None)
        order = cls.model_validate({**payload, "kind": entry.kind})
        if intf_code is not None and intf_code != order.intf_code:
            raise ValueError(f"intf_code {intf_code} does not match {entry.kind}")
        return order
