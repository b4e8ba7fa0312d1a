"""What customers holds, as plain values and typed requests: the catalogue (products and
their versioned prices), customers, and their contracts (SA_ID). No I/O.

Names follow the TM Forum Open APIs where that costs little (docs/catalogue-and-customers.md
says which and what differs): a product is TMF620's productOffering, a price version its
productOfferingPrice, a customer TMF629's customer, a contract TMF637's product.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from bossa.errors import InvalidInput

__all__ = [
    "CODE_PATTERN",
    "DEFAULT_PAGE",
    "MAX_DATE",
    "MAX_PAGE",
    "MIN_DATE",
    "AccountView",
    "Contract",
    "ContractChange",
    "ContractRequest",
    "ContractStatus",
    "ContractView",
    "Customer",
    "CustomerRequest",
    "CustomerStatus",
    "CustomerUpdate",
    "CustomerView",
    "Lifecycle",
    "Page",
    "PriceKind",
    "PricePeriod",
    "PriceRequest",
    "PriceView",
    "Product",
    "ProductChange",
    "ProductRequest",
    "ProductStatus",
    "ProductUpdate",
    "ProductView",
    "TermsChange",
    "check_key",
    "contract_status",
    "page_limit",
]

#: A product code (TMF620 productOffering id).
CODE_PATTERN = r"^[A-Z][A-Z0-9_]{0,31}$"
#: A page holds at most this many rows (keyset paging: `after` the last key seen).
MAX_PAGE = 500
DEFAULT_PAGE = 100
#: The dates bossa stores: a bill period, a price version or a contract lies between them.
MIN_DATE = date(1900, 1, 1)
MAX_DATE = date(9999, 12, 31)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TEXT = r"^[^\x00-\x1f\x7f]*$"
_KEY = r"^[^\x00-\x20\x7f]+$"


def _plain(value: str) -> str:
    if _CONTROL.search(value):
        raise PydanticCustomError(
            "control_character", "must not contain control characters (NUL, tab, newline...)"
        )
    return value


#: A name as typed: no control characters (PostgreSQL cannot store NUL in text).
Text = Annotated[str, AfterValidator(_plain), Field(json_schema_extra={"pattern": _TEXT})]
#: An id (CUST_ID, SA_ID, account): 1-64 printable characters without spaces.
Key = Annotated[str, Field(min_length=1, max_length=64, pattern=_KEY)]
Code = Annotated[str, Field(min_length=1, max_length=32, pattern=CODE_PATTERN)]
Day = Annotated[date, Field(ge=MIN_DATE, le=MAX_DATE)]
Msisdn = Annotated[str, Field(pattern=r"^\+?[0-9]{3,20}$", description="E.164 digits")]
Email = Annotated[
    str, Field(max_length=254, pattern=r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,189}$")
]
Reason = Annotated[str, AfterValidator(_plain), Field(min_length=1, max_length=500)]
#: An order's bind data, handed to provisioning, which checks it against the plan.
BindData = Annotated[
    dict[Annotated[str, Field(max_length=64)], str | int | float | bool | None],
    Field(max_length=32),
]
#: A price as typed: a decimal string in the currency ('12.50') or an integer of units.
Money = Annotated[
    Any,
    Field(
        json_schema_extra={
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]{1,16}(\.[0-9]{1,4})?$"},
                {"type": "integer", "minimum": 0},
            ]
        },
        description="A decimal string in the currency ('12.50', '0' for free); at most "
        "10^15 minor units",
    ),
]

_STRICT = ConfigDict(extra="forbid", str_strip_whitespace=True)


def check_key(value: str, field: str) -> str:
    """A path's id: one that no row can have is refused before it reaches SQL."""
    if not 1 <= len(value) <= 64 or not value.isprintable() or " " in value:
        raise InvalidInput("must be 1-64 printable characters without spaces", field=field)
    return value


def page_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"must be between 1 and {MAX_PAGE}", field="limit")
    return limit


class ContractStatus(StrEnum):
    """A contract's service state (TMF637 product status): billing's dunning suspends it, a
    payment restores it, the operator terminates it."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


class ProductStatus(StrEnum):
    """TMF620 lifecycleStatus, reduced: a retired product takes no new contracts."""

    ACTIVE = "active"
    RETIRED = "retired"


class CustomerStatus(StrEnum):
    ACTIVE = "active"
    CLOSED = "closed"


class PriceKind(StrEnum):
    """TMF620 priceType: recurring, or one_off (TMF's oneTime)."""

    RECURRING = "recurring"
    ONE_OFF = "one_off"


class PricePeriod(StrEnum):
    """TMF620 recurringChargePeriodType."""

    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    YEARLY = "yearly"


class Lifecycle(StrEnum):
    """A contract's lifecycle changes, each a provisioning order (INTF_CODE)."""

    NEW = "4201"
    CHANGE = "4202"
    TERMINATE = "4203"
    SUSPEND = "4204"
    RESUME = "4205"


def contract_status(value: str | ContractStatus) -> ContractStatus:
    try:
        return ContractStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in ContractStatus)
        raise InvalidInput(
            f"{value!r} is not a contract status ({known})", field="status"
        ) from None


# -- what other modules read --------------------------------------------------------------


@dataclass(frozen=True)
class Product:
    code: str
    name: str


@dataclass(frozen=True)
class Customer:
    id: str  # CUST_ID
    name: str
    msisdn: str | None


@dataclass(frozen=True)
class Contract:
    sa_id: str  # SA_ID: the contract, the seeds' ordering key
    customer_id: str
    product_code: str
    status: ContractStatus
    account_id: str | None = None


# -- requests -----------------------------------------------------------------------------


class PriceRequest(BaseModel):
    """A price version (TMF620 productOfferingPrice): from `valid_from` on, until the next
    version's; a change from a date closes the open version of its kind at that date."""

    model_config = _STRICT

    kind: PriceKind
    period: PricePeriod | None = Field(
        default=None, description="Required for recurring prices, refused for one-off fees"
    )
    amount: Money
    currency: str = Field(min_length=3, max_length=3, pattern=r"^[A-Za-z]{3}$")
    valid_from: Day = Field(description="TMF validFor.startDateTime: the first day it applies")

    @model_validator(mode="after")
    def _period_of_kind(self) -> Self:
        if self.kind is PriceKind.RECURRING and self.period is None:
            raise PydanticCustomError("period", "a recurring price needs a period")
        if self.kind is PriceKind.ONE_OFF and self.period is not None:
            raise PydanticCustomError("period", "a one-off fee has no period")
        return self


class ProductRequest(BaseModel):
    """A new product (TMF620 productOffering), with its first prices."""

    model_config = _STRICT

    code: Code = Field(description="The product's code, e.g. ADSL: A-Z, 0-9 and _")
    name: Text = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=2000)
    prices: list[PriceRequest] = Field(default_factory=list, max_length=8)


class ProductUpdate(BaseModel):
    model_config = _STRICT

    name: Text | None = Field(default=None, min_length=1, max_length=200)
    description: Text | None = Field(default=None, max_length=2000)


class CustomerRequest(BaseModel):
    """A new customer (TMF629 customer); `id` is the CUST_ID."""

    model_config = _STRICT

    id: Key
    name: Text = Field(min_length=1, max_length=200)
    msisdn: Msisdn | None = None
    email: Email | None = None


class CustomerUpdate(BaseModel):
    """A field left out keeps its value; `msisdn: null` or `email: null` clears it."""

    model_config = _STRICT

    name: Text | None = Field(default=None, min_length=1, max_length=200)
    msisdn: Msisdn | None = None
    email: Email | None = None


class ContractRequest(BaseModel):
    """A new contract (TMF637 product): a customer's product, billed to one of the
    customer's accounts; provisioned with an order 4201 where the product has a plan."""

    model_config = _STRICT

    sa_id: Key = Field(description="SA_ID: the contract's id")
    customer: Key = Field(description="The customer (CUST_ID)")
    account: Key = Field(description="The billing account it is billed to (TMF666)")
    product: Code
    start_date: Day | None = Field(default=None, description="First day billed; today if left out")
    bind_data: BindData = Field(default_factory=dict, description="For the provisioning order")


class ContractChange(BaseModel):
    """Suspend, resume or terminate: why (recorded with who and when), and for a
    termination the day the contract ends (exclusive; today if left out)."""

    model_config = _STRICT

    reason: Reason | None = None
    end_date: Day | None = Field(default=None, description="Terminate only: the end (exclusive)")
    bind_data: BindData = Field(default_factory=dict)


class ProductChange(BaseModel):
    """Move a contract to another product: an order 4202 for the new product."""

    model_config = _STRICT

    product: Code
    reason: Reason | None = None
    bind_data: BindData = Field(default_factory=dict)


class TermsChange(BaseModel):
    """Move a contract to another account of its customer (no provisioning order)."""

    model_config = _STRICT

    account: Key


# -- answers ------------------------------------------------------------------------------

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A page of a listing in key order; pass `next` as `after` for the following page
    (null: this was the last)."""

    items: list[T]
    next: str | None


class PriceView(BaseModel):
    id: int
    product_code: str
    kind: PriceKind
    period: PricePeriod | None
    amount: str = Field(description="In the currency, e.g. '12.50'")
    amount_minor: int
    currency: str
    valid_from: date
    valid_to: date | None = Field(description="Exclusive; null while the version is open")
    created_at: datetime
    created_by: str


class ProductView(BaseModel):
    code: str
    name: str
    description: str
    status: ProductStatus
    created_at: datetime
    created_by: str
    updated_at: datetime | None
    updated_by: str | None
    prices: list[PriceView] = Field(default_factory=list, description="Every version")


class CustomerView(BaseModel):
    id: str
    name: str
    msisdn: str | None
    email: str | None
    status: CustomerStatus
    created_at: datetime
    created_by: str
    updated_at: datetime | None
    updated_by: str | None


class ContractView(BaseModel):
    sa_id: str
    customer_id: str
    account_id: str | None
    product_code: str
    status: ContractStatus
    start_date: date
    end_date: date | None
    status_changed_at: datetime | None
    status_changed_by: str | None
    status_reason: str | None
    created_at: datetime
    created_by: str
    updated_at: datetime | None
    updated_by: str | None
    order: dict[str, Any] | None = Field(
        default=None,
        description="The provisioning order this change made, or null when the product "
        "has no plan for it (see `provisioning`)",
    )
    provisioning: str | None = Field(
        default=None, description="Why no order was made, when none was"
    )


class AccountView(BaseModel):
    """A billing account's terms (TMF666 billingAccount); its books are
    `GET /ledger/accounts/{account}`."""

    id: str
    customer_id: str
    currency: str
    status: str
    bill_cycle: str
    grace_days: int
    credit_limit: str | None = Field(description="In the currency; null = no limit")
    dunning_profile: str
