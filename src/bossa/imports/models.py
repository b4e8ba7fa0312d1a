"""What bulk import and export know, as plain values: the four kinds of file (customers,
accounts, contracts, products) described as data, the job that records an import's
progress, and the results the edges render. No I/O.

Each kind is a `Kind`: its columns (type, required, bounds), the checks that span columns,
the references it makes to rows that must exist, the relation whose keys it must not
repeat, the published function of the owning module that applies a chunk of good rows,
and the published view that export reads. One engine (store, service) turns these into
SQL, so a new column is one line here and one argument of the owner's function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from bossa.errors import InvalidInput

__all__ = [
    "KINDS",
    "MAX_AMOUNT",
    "Column",
    "ColumnType",
    "DateOrder",
    "ExportResult",
    "FileFormat",
    "ImportJob",
    "ImportOutcome",
    "JobStatus",
    "Kind",
    "KindName",
    "Progress",
    "Reference",
    "Relation",
    "RowError",
    "SameValue",
    "TogetherOrNone",
    "format_of",
    "kind_of",
    "map_header",
]

#: Money and every count are bounded like the ledger's amounts (10^15 minor units).
MAX_AMOUNT = 1_000_000_000_000_000


class KindName(StrEnum):
    CUSTOMERS = "customers"
    ACCOUNTS = "accounts"
    CONTRACTS = "contracts"
    PRODUCTS = "products"


class FileFormat(StrEnum):
    CSV = "csv"
    #: JSON lines: one JSON object per line, keys named like the CSV header.
    JSONL = "jsonl"


class JobStatus(StrEnum):
    #: Staged, being checked or applied (or killed while it was: run it again).
    RUNNING = "running"
    #: Every good row applied; rejected rows are in the error file.
    DONE = "done"
    #: --all-or-nothing and some row was bad: nothing applied.
    REJECTED = "rejected"
    #: Stopped by an error (the database changed under it, lost connection): run it again.
    FAILED = "failed"


class ColumnType(StrEnum):
    TEXT = "text"
    #: A whole number, written without separators (amounts in minor units).
    INTEGER = "integer"
    #: An ISO date, YYYY-MM-DD.
    DATE = "date"


@dataclass(frozen=True)
class Relation:
    """A published view or function of another module (`schema.name`)."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType = ColumnType.TEXT
    required: bool = False
    #: The longest text accepted, in characters (every column has one).
    max_length: int = 200
    #: A POSIX regular expression the whole value must match (PostgreSQL's `~`).
    pattern: str | None = None
    #: What the pattern means, for the error file ("like +821012345678").
    pattern_says: str = ""
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    #: What a missing value becomes (the owner's function applies it); for the docs.
    default: str | None = None
    doc: str = ""


@dataclass(frozen=True)
class Reference:
    """`column` must name a row of `relation` (by `key`) that exists."""

    column: str
    relation: Relation
    key: str
    what: str


@dataclass(frozen=True)
class SameValue:
    """The row that `column` references (in `relation` by `key`) must have `attribute` equal
    to this row's `equals` (a contract's account belongs to the contract's customer)."""

    column: str
    relation: Relation
    key: str
    attribute: str
    equals: str
    reason: str


@dataclass(frozen=True)
class DateOrder:
    """`later` (when given) is on or after `earlier` (or strictly after)."""

    earlier: str
    later: str
    strict: bool = False


@dataclass(frozen=True)
class TogetherOrNone:
    """When `when` is given, every one of `needs` must be too."""

    when: str
    needs: tuple[str, ...]


Check = DateOrder | TogetherOrNone


@dataclass(frozen=True)
class Kind:
    name: KindName
    #: The row's identity: unique inside a file and not yet in `existing`.
    key: str
    columns: tuple[Column, ...]
    #: Where keys that exist already are (a published view of the owner).
    existing: Relation
    #: The owner's published function that inserts a chunk: one array per column, in
    #: the order of `columns`, then the actor; it returns the rows it inserted.
    apply: Relation
    #: The owner's published view export reads: one column per column of `columns`.
    export: Relation
    references: tuple[Reference, ...] = ()
    same_values: tuple[SameValue, ...] = ()
    checks: tuple[Check, ...] = ()
    doc: str = ""
    #: What must be imported before this kind (for the docs).
    after: tuple[KindName, ...] = field(default=())

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)


# What an identifier may look like: printable, no spaces or separators a shell or a CSV
# reader would trip on. The same rule for CUST_ID, account ids and SA_ID. Patterns use
# `*` and `+`, never a bounded `{m,n}`: PostgreSQL's regex engine unrolls a bounded
# repeat into that many states (`{0,63}` made the check ten times slower); every column's
# max_length, checked before its pattern, bounds the length instead.
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$"
_ID_SAYS = "1-64 letters, digits and _ . : / - (starting with a letter or digit)"
_CODE = r"^[A-Z][A-Z0-9_]*$"
_CODE_SAYS = "an upper-case letter, then up to 31 upper-case letters, digits or _"
_NAME = r"^[^\x01-\x1f\x7f]*$"
_NAME_SAYS = "free of control characters"
_CURRENCY = r"^[A-Z][A-Z][A-Z]$"
_CURRENCY_SAYS = "an ISO 4217 code such as KRW"

CUSTOMER_IDS = Relation("customers", "customer_rows")
ACCOUNT_ROWS = Relation("ledger", "account_rows")
PRODUCT_CODES = Relation("customers", "product_codes")
CURRENCIES = Relation("ledger", "currency_codes")

KINDS: dict[KindName, Kind] = {
    KindName.CUSTOMERS: Kind(
        name=KindName.CUSTOMERS,
        key="id",
        columns=(
            Column(
                "id",
                required=True,
                max_length=64,
                pattern=_ID,
                pattern_says=_ID_SAYS,
                doc="CUST_ID",
            ),
            Column("name", required=True, max_length=200, pattern=_NAME, pattern_says=_NAME_SAYS),
            Column(
                "msisdn",
                max_length=20,
                pattern=r"^\+?[0-9][0-9][0-9][0-9][0-9]+$",
                pattern_says="5-19 digits, optionally after a +",
                doc="E.164 number",
            ),
            Column(
                "email",
                max_length=254,
                pattern=r"^[^@\s]+@[^@\s]+$",
                pattern_says="an address like name@example.com",
            ),
            Column("status", max_length=16, choices=("active", "closed"), default="active"),
        ),
        existing=CUSTOMER_IDS,
        apply=Relation("customers", "import_customers"),
        export=CUSTOMER_IDS,
        doc="One row per customer.",
    ),
    KindName.ACCOUNTS: Kind(
        name=KindName.ACCOUNTS,
        key="id",
        columns=(
            Column(
                "id",
                required=True,
                max_length=64,
                pattern=_ID,
                pattern_says=_ID_SAYS,
                doc="the billing account",
            ),
            Column("customer_id", required=True, max_length=64, doc="CUST_ID, must exist"),
            Column(
                "currency",
                required=True,
                max_length=3,
                pattern=_CURRENCY,
                pattern_says=_CURRENCY_SAYS,
                doc="one of ledger.currencies",
            ),
            Column(
                "bill_cycle",
                max_length=32,
                pattern=_NAME,
                pattern_says=_NAME_SAYS,
                default="MONTHLY",
            ),
            Column(
                "credit_limit",
                ColumnType.INTEGER,
                max_length=20,
                minimum=0,
                maximum=MAX_AMOUNT,
                doc="minor units of the currency; empty: no limit",
            ),
            Column(
                "dunning_profile",
                max_length=32,
                pattern=r"^[a-z][a-z0-9_]*$",
                pattern_says="lower-case letters, digits and _",
                default="standard",
            ),
            Column(
                "grace_days",
                ColumnType.INTEGER,
                max_length=5,
                minimum=0,
                maximum=3650,
                default="14",
            ),
            Column(
                "status", max_length=16, choices=("active", "suspended", "closed"), default="active"
            ),
        ),
        existing=ACCOUNT_ROWS,
        apply=Relation("ledger", "import_accounts"),
        export=ACCOUNT_ROWS,
        references=(
            Reference("customer_id", CUSTOMER_IDS, "id", "customer"),
            Reference("currency", CURRENCIES, "code", "currency"),
        ),
        doc="One row per billing account.",
        after=(KindName.CUSTOMERS,),
    ),
    KindName.CONTRACTS: Kind(
        name=KindName.CONTRACTS,
        key="sa_id",
        columns=(
            Column(
                "sa_id",
                required=True,
                max_length=64,
                pattern=_ID,
                pattern_says=_ID_SAYS,
                doc="SA_ID",
            ),
            Column("customer_id", required=True, max_length=64, doc="CUST_ID, must exist"),
            Column(
                "account_id",
                required=True,
                max_length=64,
                doc="the billing account, must exist and be the customer's",
            ),
            Column(
                "product_code",
                required=True,
                max_length=32,
                pattern=_CODE,
                pattern_says=_CODE_SAYS,
                doc="must exist",
            ),
            Column("start_date", ColumnType.DATE, max_length=10, default="today"),
            Column("end_date", ColumnType.DATE, max_length=10, doc="exclusive; empty: open"),
            Column(
                "status",
                max_length=16,
                choices=("active", "suspended", "terminated"),
                default="active",
            ),
            Column("status_reason", max_length=500, pattern=_NAME, pattern_says=_NAME_SAYS),
        ),
        existing=Relation("customers", "contract_rows"),
        apply=Relation("customers", "import_contracts"),
        export=Relation("customers", "contract_rows"),
        references=(
            Reference("customer_id", CUSTOMER_IDS, "id", "customer"),
            Reference("account_id", ACCOUNT_ROWS, "id", "account"),
            Reference("product_code", PRODUCT_CODES, "code", "product"),
        ),
        same_values=(
            SameValue(
                "account_id",
                ACCOUNT_ROWS,
                "id",
                "customer_id",
                "customer_id",
                "belongs to another customer",
            ),
        ),
        checks=(DateOrder("start_date", "end_date"),),
        doc="One row per contract (SA_ID).",
        after=(KindName.PRODUCTS, KindName.CUSTOMERS, KindName.ACCOUNTS),
    ),
    KindName.PRODUCTS: Kind(
        name=KindName.PRODUCTS,
        key="code",
        columns=(
            Column("code", required=True, max_length=32, pattern=_CODE, pattern_says=_CODE_SAYS),
            Column("name", required=True, max_length=200, pattern=_NAME, pattern_says=_NAME_SAYS),
            Column("description", max_length=2000, default=""),
            Column("status", max_length=16, choices=("active", "retired"), default="active"),
            Column(
                "recurring_amount",
                ColumnType.INTEGER,
                max_length=20,
                minimum=0,
                maximum=MAX_AMOUNT,
                doc="minor units; empty: no recurring fee",
            ),
            Column(
                "period",
                max_length=16,
                choices=("monthly", "quarterly", "yearly"),
                doc="of the recurring fee",
            ),
            Column(
                "one_off_amount",
                ColumnType.INTEGER,
                max_length=20,
                minimum=0,
                maximum=MAX_AMOUNT,
                doc="minor units; empty: no one-off fee",
            ),
            Column(
                "currency",
                max_length=3,
                pattern=_CURRENCY,
                pattern_says=_CURRENCY_SAYS,
                doc="of both fees",
            ),
            Column(
                "valid_from",
                ColumnType.DATE,
                max_length=10,
                default="1900-01-01",
                doc="the prices' first day",
            ),
        ),
        existing=PRODUCT_CODES,
        apply=Relation("customers", "import_products"),
        export=Relation("customers", "product_rows"),
        references=(Reference("currency", CURRENCIES, "code", "currency"),),
        checks=(
            TogetherOrNone("recurring_amount", ("period", "currency")),
            TogetherOrNone("period", ("recurring_amount",)),
            TogetherOrNone("one_off_amount", ("currency",)),
        ),
        doc="One row per product, with the prices valid from valid_from.",
    ),
}


def kind_of(value: str) -> Kind:
    try:
        return KINDS[KindName(value)]
    except ValueError:
        known = ", ".join(k.value for k in KindName)
        raise InvalidInput(f"{value!r} is not a kind of import ({known})", field="kind") from None


def format_of(file_name: str, given: str | None) -> FileFormat:
    """`given` when set, otherwise from the file's extension (.csv; .jsonl, .ndjson)."""
    if given is not None:
        try:
            return FileFormat(given.lower())
        except ValueError:
            raise InvalidInput(f"{given!r} is not a format (csv, jsonl)", field="format") from None
    lowered = file_name.lower()
    if lowered.endswith(".csv"):
        return FileFormat.CSV
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return FileFormat.JSONL
    raise InvalidInput(
        "cannot tell the format from the file's name (.csv, .jsonl): give --format",
        field="format",
    )


def map_header(kind: Kind, header: list[str]) -> tuple[str, ...]:
    """The kind's columns in the order a CSV header names them; refuses unknown, repeated
    and missing required columns, naming them."""
    names = [name.strip().lower() for name in header]
    unknown = [name for name in names if name not in kind.names]
    if unknown:
        raise InvalidInput(
            f"unknown column(s) {', '.join(map(repr, unknown))}; a {kind.name} file has "
            f"{', '.join(kind.names)}",
            field="header",
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidInput(f"column(s) named twice: {', '.join(repeated)}", field="header")
    missing = [name for name in kind.required if name not in names]
    if missing:
        raise InvalidInput(f"required column(s) missing: {', '.join(missing)}", field="header")
    return tuple(names)


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    reason: str
    raw: str


@dataclass(frozen=True)
class Progress:
    """Where an import is: `phase` (hashing, staging, checking, applying), how far."""

    phase: str
    done: int
    total: int
    unit: str


class ImportJob(BaseModel):
    """An import of one file, as recorded: what resumes after a kill."""

    model_config = ConfigDict(frozen=True)

    id: int
    kind: KindName
    sha256: str = Field(description="The file's SHA-256: the same file resumes this job")
    file_name: str = Field(description="The file's base name when the job began")
    format: FileFormat
    all_or_nothing: bool
    status: JobStatus
    rows: int = Field(description="Data rows in the file")
    position: int = Field(description="Lines up to this one are applied (or rejected)")
    applied: int
    rejected: int
    last_error: str | None
    created_at: datetime
    created_by: str
    updated_at: datetime
    finished_at: datetime | None


class ImportOutcome(BaseModel):
    """What one run of `import` did."""

    job: ImportJob
    #: The job had finished before this run: nothing was read or applied again.
    already_done: bool = False
    #: Rows this run applied (the job's `applied` counts earlier runs too).
    applied_now: int = 0
    errors: list[RowError] = Field(default_factory=list, repr=False)
    seconds: float = 0.0

    model_config = ConfigDict(arbitrary_types_allowed=True)


@dataclass(frozen=True)
class ExportResult:
    kind: KindName
    rows: int
    seconds: float
