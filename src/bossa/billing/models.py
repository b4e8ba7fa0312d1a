"""Billing's values and pure rules: periods and run states, payments and whether they are
staged or posted, what the edges send and receive, and the typed payloads of the service
lane's entries. No I/O."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from bossa.errors import InvalidInput
from bossa.ledger import (
    BOOK_LIMIT,
    DEPOSIT,
    MAX_MINOR,
    WRITEOFF,
    PlainText,
    Recipe,
    format_minor,
    parse_model,
)
from bossa.provisioning import OrderType

if TYPE_CHECKING:
    from bossa.journal import Entry

__all__ = [
    "DEFAULT_MAX_BALANCE",
    "DEFAULT_MAX_PAYMENT",
    "IDEMPOTENCY_KEY",
    "KEY_PATTERN",
    "MAX_DUE_DAYS",
    "MAX_PERIOD_DAYS",
    "MAX_WINDOW",
    "MIN_DUE_DAYS",
    "AccountOpened",
    "AccountSummary",
    "AccountView",
    "Arrears",
    "Authorization",
    "BillPeriodState",
    "Charge",
    "ChargeKind",
    "Difference",
    "Funds",
    "PaymentKind",
    "PaymentLimits",
    "PaymentOutcome",
    "PaymentRequest",
    "PaymentStatus",
    "PriceVersion",
    "ProductPeriod",
    "ReconcileReport",
    "Restore",
    "RunCancelled",
    "RunPhase",
    "RunProgress",
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
    "bill_total",
    "charges",
    "check_due_days",
    "check_idempotency_key",
    "check_payment_limits",
    "check_period",
    "check_planned_end",
    "check_window",
    "overrunning",
    "payment_status",
    "product_period",
    "prorate",
    "recipe_of",
    "restores_service",
    "run_progress",
    "split_arrears_payment",
]


class RunStatus(StrEnum):
    """A run's real state (B5): staging follows it, not the planned window."""

    #: Billing accounts; payments are staged.
    RUNNING = "running"
    #: Every account billed; settlement applies what was staged (payments still staged).
    SETTLING = "settling"
    #: Normal processing: payments post online.
    SETTLED = "settled"
    #: Cancelled before any account was billed; what it staged was settled.
    CANCELLED = "cancelled"


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


@dataclass(frozen=True)
class Arrears:
    """An account's arrears: the past-due amount, one meaning everywhere (dunning,
    payments, restores). Bills are paid oldest first, so what the account owes on bills
    whose due date has passed is its receivable less what it owes on bills not yet due,
    never below zero. A bill of the run that holds the books counts as not yet due until
    the run has settled, so the amount does not change because a run reached the
    account; write-offs staged during the run count as paid."""

    #: The receivable book, minor units (bills issued less what was paid off).
    receivable: int
    #: What is owed on bills not yet past due, and on the open run's bills.
    not_yet_due: int
    #: Write-offs staged for the account and not yet settled.
    staged_writeoffs: int

    @property
    def amount(self) -> int:
        return max(self.receivable - self.not_yet_due - self.staged_writeoffs, 0)


def split_arrears_payment(minor: int, arrears: int) -> tuple[int, int]:
    """(write-off, deposit): an arrears payment pays off the arrears; whatever is paid
    beyond them is a deposit (prepaid funds), not an error."""
    paid_off = min(minor, max(arrears, 0))
    return paid_off, minor - paid_off


def restores_service(*, suspended: bool, minor: int, arrears: int) -> bool:
    """B3: a suspended account whose payment covers all its arrears (the past-due amount)
    is restored at once; paying more restores it too, the rest becoming a deposit."""
    return suspended and minor >= arrears


def overrunning(planned_end: datetime | None, now: datetime) -> bool:
    """B5: the run is past its planned end (staging goes on all the same)."""
    return planned_end is not None and now > planned_end


# -- charges: proration, product periods, price versions, one-off fees -------------------
#
# The row-at-a-time reference of what `billing.bill_chunk` computes set-based in SQL
# (tests compare the two). docs/billing.md states the rules with worked examples.


class ProductPeriod(StrEnum):
    """The period a recurring price is for; product periods are calendar months,
    quarters (from January, April, July, October) and years."""

    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    YEARLY = "yearly"

    @property
    def months(self) -> int:
        return {"monthly": 1, "quarterly": 3, "yearly": 12}[self.value]


class ChargeKind(StrEnum):
    RECURRING = "recurring"
    ONE_OFF = "one_off"


@dataclass(frozen=True)
class PriceVersion:
    """A product's price of one kind, valid from a date (inclusive) to a date (exclusive;
    None: open). Versions of the same product and kind never overlap."""

    kind: ChargeKind
    amount: int
    valid_from: date
    valid_to: date | None = None
    #: Recurring prices only.
    period: ProductPeriod | None = None


@dataclass(frozen=True)
class Charge:
    """One line of a bill: days [start, end) of a contract at one price version, or a
    one-off fee (start = end = the contract's first day)."""

    kind: ChargeKind
    start: date
    end: date
    #: The day that decides which bill carries the charge: the later of the product
    #: period's first day and the contract's first day.
    anchor: date
    days: int
    period_days: int
    price: int
    amount: int


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def product_period(day: date, period: ProductPeriod) -> tuple[date, date]:
    """The calendar product period containing `day`: (first day, first day after)."""
    first_month = (day.month - 1) // period.months * period.months + 1
    start = date(day.year, first_month, 1)
    return start, _add_months(start, period.months)


def prorate(price: int, days: int, period_days: int) -> int:
    """price x days / period_days in minor units, rounded half to even (bankers'
    rounding: a half unit goes to the even neighbour, so rounding errors do not drift
    one way over many bills). Exact integers: no float ever touches money."""
    if not (price >= 0 and 0 <= days <= period_days and period_days > 0):
        raise ValueError(f"cannot prorate {price} for {days} of {period_days} days")
    quotient, remainder = divmod(price * days, period_days)
    if 2 * remainder > period_days or (2 * remainder == period_days and quotient % 2):
        quotient += 1
    return quotient


def charges(
    *,
    start: date,
    end: date | None,
    prices: Iterable[PriceVersion],
    bill_start: date,
    bill_end: date,
) -> list[Charge]:
    """What a bill for [bill_start, bill_end] (inclusive) charges a contract active from
    `start` (inclusive) to `end` (exclusive; None: open) with its product's `prices`.

    - The contract's days are split by price version, then by the version's product
      period; each piece is charged round_half_even(price x days / days of the period).
      A whole period at one price is exactly the price.
    - A piece is billed by the bill whose period contains its anchor: the later of its
      product period's first day and the contract's first day. Recurring charges are
      thus in advance for the product period (a quarter is billed by the bill of its
      first month), from the contract's first day, never for a period before it began;
      each day of the contract belongs to one piece and each piece has one anchor, so
      consecutive bills never charge a day twice.
    - A one-off fee (the one-off version valid on the contract's first day) is charged
      once, by the bill whose period contains that day.
    """
    stop = end if end is not None else date.max
    found: list[Charge] = []
    if stop <= start:
        return found
    for version in prices:
        if version.kind is ChargeKind.ONE_OFF:
            valid = version.valid_from <= start and (
                version.valid_to is None or start < version.valid_to
            )
            if valid and bill_start <= start <= bill_end:
                found.append(
                    Charge(
                        ChargeKind.ONE_OFF,
                        start,
                        start,
                        start,
                        0,
                        0,
                        version.amount,
                        version.amount,
                    )
                )
            continue
        if version.period is None:
            raise ValueError("a recurring price needs its period")
        low = max(start, version.valid_from)
        high = min(stop, version.valid_to or date.max)
        if low >= high:
            continue
        period_start, period_end = product_period(bill_start, version.period)
        while period_start <= bill_end:
            piece_start, piece_end = max(period_start, low), min(period_end, high)
            anchor = max(period_start, start)
            if piece_start < piece_end and bill_start <= anchor <= bill_end:
                days = (piece_end - piece_start).days
                period_days = (period_end - period_start).days
                found.append(
                    Charge(
                        ChargeKind.RECURRING,
                        piece_start,
                        piece_end,
                        anchor,
                        days,
                        period_days,
                        version.amount,
                        prorate(version.amount, days, period_days),
                    )
                )
            period_start, period_end = period_end, _add_months(period_end, version.period.months)
    return sorted(found, key=lambda c: (c.start, c.kind))


def bill_total(found: Sequence[Charge]) -> int:
    return sum(c.amount for c in found)


# -- limits ------------------------------------------------------------------------------

#: The header (and, in the CLI, `--idempotency-key`) that makes a payment safe to send again.
IDEMPOTENCY_KEY = "Idempotency-Key"
#: 1 to 128 printable ASCII characters, no spaces: a UUID, a till's receipt number.
KEY_PATTERN = r"^[!-~]{1,128}$"
_KEY = re.compile(KEY_PATTERN)

#: A bill's due date is 1 to 90 days after its period's end.
MIN_DUE_DAYS = 1
MAX_DUE_DAYS = 90
#: The longest bill period a run may cover (a year, leap day included).
MAX_PERIOD_DAYS = 366
#: The longest bill-run window (B1 plans 4 to 12 hours; a week is already a lot).
MAX_WINDOW = timedelta(days=7)
#: How far ahead a window may be planned.
MAX_PLANNING = timedelta(days=366)

#: The largest single payment per currency, in minor units (BOSSA_BILLING_MAX_PAYMENT).
DEFAULT_MAX_PAYMENT: dict[str, int] = {
    "KRW": 100_000_000,  # 100 million won
    "JPY": 10_000_000,  # 10 million yen
    "CNY": 50_000_000,  # 500,000.00 yuan
    "USD": 10_000_000,  # 100,000.00 dollars
    "EUR": 10_000_000,  # 100,000.00 euros
    "GBP": 10_000_000,  # 100,000.00 pounds
    "INR": 500_000_000,  # 5,000,000.00 rupees
    "BHD": 50_000_000,  # 50,000.000 dinars
    "KWD": 50_000_000,  # 50,000.000 dinars
}
#: The most prepaid funds an account may hold, per currency, in minor units: its prepaid
#: book plus the deposits staged for it (BOSSA_BILLING_MAX_BALANCE).
DEFAULT_MAX_BALANCE: dict[str, int] = {
    "KRW": 1_000_000_000,  # 1 billion won
    "JPY": 100_000_000,
    "CNY": 500_000_000,  # 5,000,000.00 yuan
    "USD": 100_000_000,  # 1,000,000.00 dollars
    "EUR": 100_000_000,
    "GBP": 100_000_000,
    "INR": 5_000_000_000,  # 50,000,000.00 rupees
    "BHD": 500_000_000,  # 500,000.000 dinars
    "KWD": 500_000_000,
}


@dataclass(frozen=True)
class PaymentLimits:
    """Per-currency maximums, minor units: one payment, and an account's prepaid funds."""

    max_payment: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_PAYMENT))
    max_balance: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_BALANCE))

    def of(self, currency: str) -> tuple[int, int]:
        """(largest payment, most prepaid funds) of the currency."""
        payment, balance = self.max_payment.get(currency), self.max_balance.get(currency)
        if payment is None or balance is None:
            raise InvalidInput(
                f"no payment limits are set for {currency} (BOSSA_BILLING_MAX_PAYMENT and "
                "BOSSA_BILLING_MAX_BALANCE)",
                field="currency",
            )
        return payment, balance


@dataclass(frozen=True)
class Funds:
    """An account's books and staged items as one payment reads them (minor units)."""

    #: A credit: negative when the customer has funds.
    prepaid: int
    receivable: int
    cash: int
    staged_deposits: int
    staged_writeoffs: int
    #: What is owed on bills not yet past due (and on the open run's bills).
    not_yet_due: int = 0

    @property
    def arrears(self) -> Arrears:
        return Arrears(self.receivable, self.not_yet_due, self.staged_writeoffs)


def check_idempotency_key(key: str | None) -> str:
    """A payment's idempotency key: required, 1-128 printable ASCII characters."""
    if key is None or key == "":
        raise InvalidInput(
            "is required on every payment: send the same key again to get the first "
            "answer instead of paying twice",
            field=IDEMPOTENCY_KEY,
        )
    if not _KEY.match(key):
        raise InvalidInput(
            "must be 1 to 128 printable ASCII characters without spaces", field=IDEMPOTENCY_KEY
        )
    return key


def check_payment_limits(
    minor: int,
    *,
    deposit: int,
    funds: Funds,
    limits: PaymentLimits,
    currency: str,
    exponent: int,
) -> None:
    """The payment's own maximum; the room under the account's maximum for the part of it
    that is a deposit (`deposit`: all of a deposit, what an arrears payment pays beyond
    the arrears; staged deposits count); and the ledger's ceiling on the cash book, so
    that settling what is staged can never overflow a balance."""
    most, room = limits.of(currency)
    if minor > most:
        raise InvalidInput(
            f"is over the largest payment allowed, {format_minor(most, exponent)} {currency}",
            field="amount",
        )
    if deposit > 0:
        held = -funds.prepaid + funds.staged_deposits
        if held + deposit > room:
            left = format_minor(max(room - held, 0), exponent)
            raise InvalidInput(
                f"would take the account's prepaid funds over their maximum of "
                f"{format_minor(room, exponent)} {currency}; at most {left} more can be deposited",
                field="amount",
            )
    if funds.cash + funds.staged_deposits + funds.staged_writeoffs + minor > BOOK_LIMIT:
        raise InvalidInput(
            "would take the account's cash book past the ledger's ceiling of 10^18 minor units",
            field="amount",
        )


def check_due_days(due_days: int) -> int:
    if not MIN_DUE_DAYS <= due_days <= MAX_DUE_DAYS:
        raise InvalidInput(f"must be between {MIN_DUE_DAYS} and {MAX_DUE_DAYS}", field="due_days")
    return due_days


def check_period(start: date, end: date, *, today: date, lookback_days: int) -> None:
    """A run's period: begun already (not a future one), ended no longer ago than the
    cycle allows (`lookback_days`), and at most a year long."""
    if end < start:
        raise InvalidInput("must not be before period_start", field="period_end")
    if start > today:
        raise InvalidInput(
            f"{start} is in the future: a period is billed once it has begun",
            field="period_start",
        )
    if (today - end).days > lookback_days:
        raise InvalidInput(
            f"{end} is more than {lookback_days} days ago (BOSSA_BILLING_PERIOD_LOOKBACK_DAYS)",
            field="period_end",
        )
    if (end - start).days + 1 > MAX_PERIOD_DAYS:
        raise InvalidInput(f"a period is at most {MAX_PERIOD_DAYS} days long", field="period_end")


def check_window(start: datetime, end: datetime, *, now: datetime) -> None:
    """B1: a window ends after it starts and in the future, lasts at most MAX_WINDOW, and
    starts within a year."""
    if end <= start:
        raise InvalidInput("must be after planned_start", field="planned_end")
    if end - start > MAX_WINDOW:
        raise InvalidInput(f"a window lasts at most {MAX_WINDOW.days} days", field="planned_end")
    if end <= now:
        raise InvalidInput(
            "is in the past: plan a window that is still to come", field="planned_end"
        )
    if start - now > MAX_PLANNING:
        raise InvalidInput(f"is more than {MAX_PLANNING.days} days ahead", field="planned_start")


def check_planned_end(planned_end: datetime, *, now: datetime) -> None:
    if planned_end <= now:
        raise InvalidInput("is in the past", field="planned_end")
    if planned_end - now > MAX_WINDOW:
        raise InvalidInput(
            f"is more than {MAX_WINDOW.days} days ahead (a window's longest)", field="planned_end"
        )


def _sane_time(value: datetime) -> datetime:
    # Before any arithmetic: a year near 1 or 9999 overflows once moved to UTC.
    if not 1970 <= value.year <= 9000:
        raise PydanticCustomError("time_range", "must be between the years 1970 and 9000")
    return value


#: A point in time of a request: with its UTC offset, within years 1970-9000.
Moment = Annotated[AwareDatetime, AfterValidator(_sane_time)]


# -- requests ----------------------------------------------------------------------------


class PaymentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    account: PlainText = Field(min_length=1, max_length=64)
    # Any: to_minor checks it and says why (a float, too many decimals, not a number).
    amount: Any = Field(
        json_schema_extra={
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]{1,16}(\.[0-9]{1,4})?$"},
                {"type": "integer", "minimum": 1},
            ]
        },
        description=(
            "A decimal string in the currency ('12.50') or minor units as an integer string; "
            f"at most the currency's largest payment (and never over {MAX_MINOR} minor units)"
        ),
    )
    currency: PlainText = Field(min_length=3, max_length=3)

    @classmethod
    def parse(cls, data: Any) -> Self:
        return parse_model(cls, data)

    def fingerprint(self, kind: str) -> str:
        text = json.dumps({"kind": kind, **self.model_dump()}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


class RunRequest(BaseModel):
    """Open a bill run over the accounts of one bill cycle."""

    model_config = ConfigDict(extra="forbid")

    period_start: date = Field(description="Begun already, not a future period")
    period_end: date = Field(
        description="Ended at most BOSSA_BILLING_PERIOD_LOOKBACK_DAYS ago; a period is at most "
        f"{MAX_PERIOD_DAYS} days"
    )
    bill_cycle: PlainText = Field(
        default="MONTHLY",
        min_length=1,
        max_length=32,
        description="A cycle whose bill-run window (POST /billing/windows) contains now",
    )
    due_days: int | None = Field(
        default=None,
        ge=MIN_DUE_DAYS,
        le=MAX_DUE_DAYS,
        description="Days from the period's end to the due date (default: the billing settings')",
    )
    planned_end: Moment | None = Field(
        default=None,
        description="When the run should be over (B5: informative; default: its window's end)",
    )

    @classmethod
    def parse(cls, data: Any) -> Self:
        return parse_model(cls, data)


class WindowRequest(BaseModel):
    """B1: plan a bill-run window."""

    model_config = ConfigDict(extra="forbid")

    bill_cycle: PlainText = Field(min_length=1, max_length=32)
    planned_start: Moment
    planned_end: Moment = Field(
        description=f"After planned_start, in the future, at most {MAX_WINDOW.days} days later"
    )

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


class Restore(BaseModel):
    """A contract restored by an arrears payment (B3): the payment's idempotency key (the
    key of its write-off, staged or posted), when the restore order was queued, and when
    the service lane sent it to provisioning (null until then)."""

    payment: str
    sa_id: str
    queued_at: datetime
    sent_at: datetime | None


class AccountSummary(BaseModel):
    account: AccountView
    #: Balance per book, minor units (prepaid is a credit: negative when funded).
    books: dict[str, int]
    available: int
    staged: StagedTotals
    #: The past-due amount, minor units: what an arrears payment must cover to restore a
    #: suspended account (docs/billing.md, "Arrears").
    arrears: int = 0
    #: The latest restores of the account's contracts by arrears payments, newest first.
    restores: list[Restore] = []


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
    #: An arrears payment: the part that paid off arrears (a write-off) and the part paid
    #: beyond them, kept as a deposit; minor units.
    writeoff_minor: int | None = None
    deposit_minor: int | None = None
    #: An arrears payment with both parts: the deposit part's staged item or transaction
    #: (`staged_id` / `transaction_id` are the write-off's).
    deposit_staged_id: int | None = None
    deposit_transaction_id: int | None = None
    #: The key this payment was taken with (the CLI makes one unless given one).
    idempotency_key: str | None = None
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
    bill_cycle: PlainText = Field(min_length=1, max_length=32)
    planned_start: Moment
    planned_end: Moment = Field(
        description=f"After planned_start, in the future, at most {MAX_WINDOW.days} days later"
    )
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
    cancelled_at: datetime | None = None
    cancelled_by: str | None = None
    billed: int
    #: Share of the run's accounts billed, 0 to 1.
    progress: float


class RunPhase(StrEnum):
    """Where a bill run is, as an operator follows it (`RunProgress.phase`)."""

    #: Open; no chunk committed yet (no worker started, or the first chunk under way).
    WAITING = "waiting"
    #: Accounts are being billed.
    BILLING = "billing"
    #: Every account billed; staged payments are being applied.
    SETTLING = "settling"
    SETTLED = "settled"
    CANCELLED = "cancelled"


#: The rate is measured over the chunks that ended in the last minute.
RATE_WINDOW_S = 60.0


class RunProgress(BaseModel):
    """A bill run's progress: one shape for the API (`GET /billing/runs/{run}/progress`)
    and the CLI (`bossa billing run progress RUN --follow`, `bossa billing run bill`)."""

    run: int
    phase: RunPhase
    status: RunStatus
    accounts_total: int
    accounts_billed: int
    #: accounts_billed / accounts_total, 0 to 1 (1 for a run with no account).
    ratio: float
    #: Accounts billed per second over the last minute (over the whole billing once it
    #: is over); 0 while billing with no chunk finished in the last minute (stalled);
    #: null before the first chunk.
    rate_per_s: float | None
    #: Seconds until every account is billed at that rate; null when unknown (no rate)
    #: and 0 once billing is over.
    eta_s: float | None
    #: Staged deposits and write-offs of the run not yet settled.
    staged_unsettled: int
    started_at: datetime
    billed_at: datetime | None
    settled_at: datetime | None


def run_progress(row: Mapping[str, Any]) -> RunProgress:
    """The progress of a run from its row and its chunks' sums (store.progress)."""
    status = RunStatus(row["status"])
    total, billed = int(row["accounts_total"]), int(row["billed"])
    remaining = max(total - billed, 0)
    rate: float | None = None
    eta: float | None = None
    if status is RunStatus.RUNNING:
        phase = RunPhase.BILLING if billed else RunPhase.WAITING
        if row["recent_since"] is not None:
            span = (row["now"] - row["recent_since"]).total_seconds()
            rate = int(row["recent_billed"]) / max(span, 1e-3)
        elif billed:
            rate = 0.0  # chunks were committed, none in the last minute: stalled
        if rate:
            eta = remaining / rate
    else:
        phase = {
            RunStatus.SETTLING: RunPhase.SETTLING,
            RunStatus.SETTLED: RunPhase.SETTLED,
            RunStatus.CANCELLED: RunPhase.CANCELLED,
        }[status]
        if row["first_started"] is not None and row["last_finished"] is not None:
            span = (row["last_finished"] - row["first_started"]).total_seconds()
            rate = billed / max(span, 1e-3)
        eta = 0.0 if status is not RunStatus.CANCELLED else None
    return RunProgress(
        run=int(row["id"]),
        phase=phase,
        status=status,
        accounts_total=total,
        accounts_billed=billed,
        ratio=billed / total if total else 1.0,
        rate_per_s=rate,
        eta_s=eta,
        staged_unsettled=int(row["staged_unsettled"]),
        started_at=row["started_at"],
        billed_at=row["billed_at"],
        settled_at=row["settled_at"],
    )


class RunCancelled(BaseModel):
    """A run cancelled before billing began: what it staged was settled, as if no run had
    been open."""

    run: int
    status: RunStatus
    #: Staged deposits and write-offs applied by this call.
    staged_applied: int


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
    INTF_CODES: ClassVar[dict[str, OrderType]] = {
        SUSPEND: OrderType.SUSPEND,
        RESUME: OrderType.RESUME,
    }

    kind: Literal["service.suspend", "service.resume"]
    account: str
    sa_id: str  # SA_ID: also the entry's key, so a contract's orders go in order
    product: str
    reason: str
    #: The arrears payment (its idempotency key) whose write-off triggered a restore:
    #: the daemon records against it when the restore was sent. None for dunning.
    payment: str | None = None

    @property
    def intf_code(self) -> str:
        """INTF_CODE of the provisioning order: 4204 suspends, 4205 restores."""
        return self.INTF_CODES[self.kind].value

    @classmethod
    def change(
        cls,
        *,
        restore: bool,
        account: str,
        sa_id: str,
        product: str,
        reason: str,
        payment: str | None = None,
    ) -> ServiceOrder:
        kind = cls.RESUME if restore else cls.SUSPEND
        return cls.model_validate(
            {
                "kind": kind,
                "account": account,
                "sa_id": sa_id,
                "product": product,
                "reason": reason,
                "payment": payment,
            }
        )

    def to_payload(self) -> dict[str, str]:
        """The entry's payload (the kind is the entry's own `kind`); `payment` only when
        a payment triggered the order."""
        payload = {
            "account": self.account,
            "sa_id": self.sa_id,
            "product": self.product,
            "intf_code": self.intf_code,
            "reason": self.reason,
        }
        if self.payment is not None:
            payload["payment"] = self.payment
        return payload

    @classmethod
    def from_entry(cls, entry: Entry) -> ServiceOrder:
        payload = dict(entry.payload)
        intf_code = payload.pop("intf_code", None)
        order = cls.model_validate({**payload, "kind": entry.kind})
        if intf_code is not None and intf_code != order.intf_code:
            raise ValueError(f"intf_code {intf_code} does not match {entry.kind}")
        return order
