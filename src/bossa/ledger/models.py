"""The ledger's values and pure rules: accounts, the books, money in minor units, and the
double-entry recipe of each movement. No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from bossa.errors import InvalidInput

__all__ = [
    "BOOK_LIMIT",
    "DEPOSIT",
    "MAX_MINOR",
    "MONEY_SCHEMA",
    "PROFILE_PATTERN",
    "TEXT_PATTERN",
    "WRITEOFF",
    "Account",
    "AccountRequest",
    "AccountStatus",
    "AccountUpdate",
    "Book",
    "PlainText",
    "Recipe",
    "available",
    "check_text",
    "format_minor",
    "parse_model",
    "to_minor",
    "to_minor_or_zero",
]

#: The largest amount bossa reads, in minor units (10^15: a thousand trillion won, ten
#: trillion dollars). Every amount typed or sent is refused above it.
MAX_MINOR = 10**15
#: No book of an account may hold more than this, in minor units: payments that would
#: take one past it are refused at intake, so a posting never overflows `bigint`
#: (9.2 x 10^18) and settlement never fails on one. See docs/billing.md, "Limits".
BOOK_LIMIT = 10**18

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ZERO = re.compile(r"^0+(\.0+)?$")
#: A dunning profile's name.
PROFILE_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
#: What an amount may be in a request, as a JSON schema: a decimal string or an integer.
MONEY_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": r"^[0-9]{1,16}(\.[0-9]{1,4})?$"},
        {"type": "integer", "minimum": 0},
        {"type": "null"},
    ]
}
#: What `PlainText` admits, as a JSON-schema pattern (documented in /openapi.json).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"


def check_text(value: str, field: str) -> str:
    """A name or code as typed (an account, a customer, a currency): no control
    characters, NUL among them (PostgreSQL cannot store it in text)."""
    if _CONTROL.search(value):
        raise InvalidInput(
            "must not contain control characters (NUL, tab, newline...)", field=field
        )
    return value


def _plain(value: str) -> str:
    if _CONTROL.search(value):
        raise PydanticCustomError(
            "control_character", "must not contain control characters (NUL, tab, newline...)"
        )
    return value


#: A request's name or code field: refused naming the field if it holds a control character.
PlainText = Annotated[
    str, AfterValidator(_plain), Field(json_schema_extra={"pattern": TEXT_PATTERN})
]

M = TypeVar("M", bound=BaseModel)


class Book(StrEnum):
    """Where an amount sits (`ledger.book`). Customer books are per account; operator books
    (cash, revenue) are kept per account too, so every posting is attributable."""

    #: What the customer paid in advance (a liability: credit balance).
    PREPAID = "prepaid"
    #: What the customer owes: bills issued and not yet paid (debit balance).
    RECEIVABLE = "receivable"
    CASH = "cash"
    REVENUE = "revenue"


class AccountStatus(StrEnum):
    """Service state as billing sees it: suspended by dunning, restored on payment."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    #: Done with: billed no more, takes no payments, keeps its history.
    CLOSED = "closed"


@dataclass(frozen=True)
class Account:
    id: str
    customer_id: str
    currency: str
    #: Minor units of the currency: 10^exponent of them make one (KRW 0, USD 2, KWD 3).
    exponent: int
    status: AccountStatus
    grace_days: int
    bill_cycle: str
    #: Minor units of the currency; None = no limit.
    credit_limit: int | None = None
    dunning_profile: str = "standard"


@dataclass(frozen=True)
class Recipe:
    """The double-entry shape of a movement: each book with its sign, positive = debit.
    The legs sum to zero, so any amount posted with a recipe balances."""

    kind: str
    legs: tuple[tuple[Book, int], ...]

    def postings(self, amount: int) -> tuple[list[str], list[int]]:
        """The books and signed amounts `ledger.post` takes."""
        return [book.value for book, _ in self.legs], [sign * amount for _, sign in self.legs]


#: Money in, owed back as service.
DEPOSIT = Recipe("deposit", ((Book.CASH, 1), (Book.PREPAID, -1)))
#: Arrears paid off.
WRITEOFF = Recipe("writeoff", ((Book.CASH, 1), (Book.RECEIVABLE, -1)))
# A bill (receivable +a, revenue -a) and a bill paid from prepaid funds (prepaid +a,
# receivable -a) are posted only by `ledger.issue_bill`, in SQL, inside a bill run's chunk.


def available(books: dict[str, int]) -> int:
    """Funds the customer can spend: prepaid (a credit, so negated) less what is owed."""
    return -books["prepaid"] - books["receivable"]


def parse_model(model: type[M], data: Any) -> M:
    """`data` as `model`, a validation failure as `InvalidInput` naming the first field,
    with pydantic's message: the API's request validation says the same."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or model.__name__
        raise InvalidInput(first["msg"], field=field) from exc


class AccountRequest(BaseModel):
    """Open a billing account for a customer."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    account: PlainText = Field(
        min_length=1, max_length=64, description="The account id, e.g. A-1001"
    )
    customer: PlainText = Field(min_length=1, max_length=64, description="The customer (CUST_ID)")
    currency: PlainText = Field(
        min_length=3, max_length=3, description="ISO 4217 code, in ledger.currencies"
    )
    bill_cycle: PlainText = Field(default="MONTHLY", min_length=1, max_length=32)
    grace_days: int = Field(
        default=14, ge=0, le=3650, description="Days past a bill's due date before dunning"
    )
    credit_limit: Any = Field(
        default=None,
        json_schema_extra=MONEY_SCHEMA,
        description="TMF666 creditLimit: a decimal string in the currency ('500.00'), or "
        f"null for none; at most {MAX_MINOR} minor units",
    )
    dunning_profile: str = Field(
        default="standard",
        pattern=PROFILE_PATTERN,
        description="The dunning profile billing applies (docs/billing.md)",
    )

    @classmethod
    def parse(cls, data: Any) -> Self:
        return parse_model(cls, data)


class AccountUpdate(BaseModel):
    """Change an account's terms; a field left out keeps its value, `credit_limit: null`
    removes the limit. The currency and the customer never change: bills are in them."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    bill_cycle: PlainText | None = Field(default=None, min_length=1, max_length=32)
    grace_days: int | None = Field(default=None, ge=0, le=3650)
    credit_limit: Any = Field(default=None, json_schema_extra=MONEY_SCHEMA)
    dunning_profile: str | None = Field(default=None, pattern=PROFILE_PATTERN)

    @classmethod
    def parse(cls, data: Any) -> Self:
        return parse_model(cls, data)


def to_minor_or_zero(
    value: object, exponent: int, *, field: str = "amount", currency: str = ""
) -> int:
    """`to_minor`, admitting zero (a free product, a credit limit of nothing)."""
    if isinstance(value, str) and value.strip() and _ZERO.match(value.strip()):
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0
    return to_minor(value, exponent, field=field, currency=currency)


def to_minor(value: object, exponent: int, *, field: str = "amount", currency: str = "") -> int:
    """'12.50' in a 2-decimal currency -> 1250. Refuses floats, zero, negatives, and more
    decimals than the currency has."""
    if isinstance(value, (bool, float)):
        raise InvalidInput("must be a decimal string or an integer, not a float", field=field)
    try:
        amount = Decimal(str(value).strip()) if isinstance(value, str | int | Decimal) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise InvalidInput(f"{value!r} is not an amount", field=field)
    if amount <= 0:
        raise InvalidInput("must be greater than zero", field=field)
    if amount.adjusted() > 15:  # before any scaling: '1e300000' is a few typed characters
        raise InvalidInput("is too large", field=field)
    exponent_of_value = amount.as_tuple().exponent
    assert isinstance(exponent_of_value, int)
    if -exponent_of_value > exponent:
        raise InvalidInput(
            f"has more decimals than {currency or 'the currency'} has ({exponent})", field=field
        )
    minor = int(amount.scaleb(exponent))
    if minor > MAX_MINOR:
        raise InvalidInput("is too large", field=field)
    return minor


def format_minor(minor: int, exponent: int) -> str:
    if exponent == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**exponent)
    return f"{sign}{whole}.{fraction:0{exponent}d}"
