"""What provisioning works on, as plain values, and its rules, with no I/O.

Order types, the order as it arrives, divisions and the checks on what an operator
types for one, plan commands and their templates, the routing rule of an order's
commands (P4a), and the payload of the journal entries provisioning enqueues
(`ProvisioningCommand`). Kept free of the database so the rules are read and tested
on their own, and so the payload has one definition that its producer (accepting an
order) and every consumer (direct delivery, the backup daemon, an operator's bind
edit, the buffer listings) share.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bossa.errors import InvalidInput

__all__ = [
    "COMMAND_KIND",
    "ORDER_BINDS",
    "BufferRow",
    "BufferedCommand",
    "Delivery",
    "DeliveryMode",
    "Division",
    "DivisionChange",
    "DivisionRecord",
    "DivisionView",
    "LaneState",
    "LogRow",
    "Order",
    "OrderRequest",
    "OrderType",
    "PlanCommand",
    "PlanView",
    "ProvisioningCommand",
    "Route",
    "ServerType",
    "check_binds",
    "check_division_name",
    "describe",
    "parse",
    "placeholders",
    "straight_to_buffer",
]

M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any, *, prefix: str = "") -> M:
    """`data` as `model`, or InvalidInput naming the first field at fault: the one way a
    request, a division change or a journal payload is checked, on every edge alike."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(
            first["msg"], field=".".join(p for p in (prefix, where) if p) or model.__name__
        ) from exc


# -- order types and orders ------------------------------------------------------------


class OrderType(enum.StrEnum):
    """INTF_CODE: what an order does to a contract. The one definition of the codes."""

    NEW = "4201"
    CHANGE = "4202"
    TERMINATE = "4203"
    SUSPEND = "4204"
    RESUME = "4205"

    @classmethod
    def of(cls, code: str) -> OrderType:
        """The order type of an INTF_CODE, or InvalidInput listing the known ones."""
        try:
            return cls(code)
        except ValueError:
            known = ", ".join(f"{t.value} {t.label}" for t in cls)
            raise InvalidInput(
                f"{code!r} is not an order type ({known})", field="intf_code"
            ) from None

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def status_after(self) -> str:
        """The service record's status once the order is accepted (P2)."""
        return {
            OrderType.TERMINATE: "terminated",
            OrderType.SUSPEND: "suspended",
        }.get(self, "active")


#: Bind variables every template may use, filled from the order itself.
ORDER_BINDS = frozenset({"sa_id", "cust_id", "wo_no", "intf_code"})


class OrderRequest(BaseModel):
    """An order as it arrives (API body, CLI, or a receive-table row)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    product: str = Field(min_length=1, max_length=32)
    sa_id: str = Field(min_length=1, max_length=64, description="SA_ID: the contract")
    intf_code: OrderType = Field(
        description="INTF_CODE: 4201 new, 4202 change, 4203 terminate, 4204 suspend, 4205 resume"
    )
    cust_id: str | None = Field(default=None, max_length=64)
    wo_no: str | None = Field(default=None, min_length=1, max_length=64)
    bind_data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any) -> OrderRequest:
        return parse(cls, data)

    def fingerprint(self) -> str:
        """What an idempotency key's replay must match (the work order number aside)."""
        text = json.dumps(self.model_dump(exclude={"wo_no"}), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


class Route(enum.StrEnum):
    """Where an order sent one division's command."""

    DIRECT = "direct"
    BUFFERED = "buffered"


def straight_to_buffer(division: Division, *, paused: bool, known_down: bool) -> bool:
    """P4a: a division not in use, paused or known to be down gets no call; its command
    goes to its buffer at once. Otherwise the command is claimed for a direct call, unless
    its contract has commands waiting there (P5, decided by the journal's claim)."""
    return not division.server_used or paused or known_down


class Order(BaseModel):
    """An order as recorded, with where each division's command went."""

    wo_no: str  # WO_NO
    status: Literal["accepted", "completed"]
    product: str
    sa_id: str  # SA_ID
    cust_id: str | None  # CUST_ID
    intf_code: str  # INTF_CODE
    bind_data: dict[str, Any]
    channel: str = Field(description="api, cli, receive-table, billing, ...")
    divisions: dict[str, Route] = Field(description="division -> direct or buffered")
    received_at: datetime
    completed_at: datetime | None
    created_by: str


# -- divisions -------------------------------------------------------------------------


class ServerType(enum.StrEnum):
    """SERVER_TYPE: how a division is reached (the seed's DB link, MMDB and SOAP, and REST)."""

    SQL = "sql"
    MEMSTORE = "memstore"
    SOAP = "soap"
    REST = "rest"


@dataclass(frozen=True)
class Division:
    """A row of the division table (P7), as an adapter needs it."""

    name: str  # DIVISION
    server_type: ServerType  # SERVER_TYPE
    server_ip: str | None = None  # SERVER_IP
    server_port: int | None = None  # SERVER_PORT
    server_url: str | None = None  # SERVER_URL: SQLAlchemy URL, redis://, WSDL or base URL
    server_name: str | None = None  # SERVER_NAME
    server_used: bool = True  # SERVER_USED
    #: Secrets (password, token); never logged, masked in every listing.
    credentials: dict[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = 5.0


_DIVISION_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


def check_division_name(name: str) -> str:
    if not _DIVISION_NAME.match(name):
        raise InvalidInput(
            "must be upper-case letters, digits and _ (e.g. AAA, HDS), at most 64",
            field="division",
        )
    return name


class DivisionChange(BaseModel):
    """The values an operator gives a division (all of them to add one, some to change it)."""

    model_config = ConfigDict(extra="forbid")

    server_type: ServerType | None = Field(default=None, description="SERVER_TYPE")
    server_url: str | None = Field(default=None, description="SERVER_URL")
    server_ip: str | None = Field(default=None, description="SERVER_IP")
    server_port: int | None = Field(default=None, ge=1, le=65535, description="SERVER_PORT")
    server_name: str | None = Field(default=None, description="SERVER_NAME")
    server_used: bool | None = Field(default=None, description="SERVER_USED")
    timeout_ms: int | None = Field(default=None, ge=10, le=600_000)
    credentials: dict[str, str] | None = Field(
        default=None, description="Secrets for the adapter (password, token); never shown"
    )

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> DivisionChange:
        return parse(cls, dict(values))

    def values(self) -> dict[str, Any]:
        """The values given (None means 'not given'), as the columns take them."""
        return {
            k: (v.value if isinstance(v, ServerType) else v)
            for k, v in self.model_dump().items()
            if v is not None
        }


@dataclass(frozen=True)
class DivisionRecord:
    """A division's stored row: its settings, and its known state (P4a)."""

    division: Division
    timeout_ms: int
    down_until: datetime | None
    last_error: str | None
    updated_at: datetime
    updated_by: str

    def view(self) -> DivisionView:
        d = self.division
        return DivisionView(
            division=d.name,
            server_type=d.server_type,
            server_ip=d.server_ip,
            server_port=d.server_port,
            server_url=d.server_url,
            server_name=d.server_name,
            server_used=d.server_used,
            credentials=dict.fromkeys(d.credentials, "***"),
            timeout_ms=self.timeout_ms,
            down_until=self.down_until,
            last_error=self.last_error,
            updated_at=self.updated_at,
            updated_by=self.updated_by,
        )


class DivisionView(BaseModel):
    """A division as operators see it: credentials masked."""

    division: str
    server_type: ServerType
    server_ip: str | None
    server_port: int | None
    server_url: str | None
    server_name: str | None
    server_used: bool
    credentials: dict[str, str] = Field(description="names only; every value is ***")
    timeout_ms: int
    down_until: datetime | None
    last_error: str | None
    updated_at: datetime
    updated_by: str


class LaneState(BaseModel):
    """A division's backup daemon held (paused) or not."""

    division: str
    paused: bool


# -- plans and their templates ---------------------------------------------------------


@dataclass(frozen=True)
class PlanCommand:
    """One division's command in a product's plan for an order type."""

    division: str
    server_type: ServerType
    command: Any
    bind_method: bool
    needs: frozenset[str]


class PlanView(BaseModel):
    product_code: str
    intf_code: str
    order_type: str
    position: int
    division: str
    server_type: ServerType
    command: Any
    bind_method: bool


_SQL_BIND = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


def placeholders(server_type: ServerType, template: Any) -> set[str]:
    """The bind variables a template needs; refuses a template of the wrong shape.

    sql: SQL text with `:name` binds (values are always bound, never spliced);
    memstore: a list of Redis command lists, each token may hold `{name}`;
    soap: {"operation": str, "params": {name: "{bind}" | constant}};
    rest: {"method": str, "path": "/x/{bind}", "body": {...}} with `{name}` in strings.
    """
    if server_type is ServerType.SQL:
        if not isinstance(template, str) or not template.strip():
            raise InvalidInput("must be SQL text with :name binds", field="command")
        return set(_SQL_BIND.findall(template))
    names: set[str] = set()
    for text in _strings(template, server_type):
        for _, name, _, _ in string.Formatter().parse(text):
            if name is not None:
                if not name.isidentifier():
                    raise InvalidInput(f"placeholder {{{name}}} is not a name", field="command")
                names.add(name)
    return names


def _strings(template: Any, server_type: ServerType) -> list[str]:
    if server_type is ServerType.MEMSTORE:
        ok = isinstance(template, list) and all(
            isinstance(cmd, list) and cmd and all(isinstance(t, str) for t in cmd)
            for cmd in template
        )
        if not ok:
            raise InvalidInput(
                "must be a list of Redis commands (lists of strings)", field="command"
            )
        return [token for cmd in template for token in cmd]
    if server_type is ServerType.SOAP:
        if not (
            isinstance(template, dict)
            and isinstance(template.get("operation"), str)
            and isinstance(template.get("params", {}), dict)
        ):
            raise InvalidInput('must be {"operation": ..., "params": {...}}', field="command")
        return [v for v in template.get("params", {}).values() if isinstance(v, str)]
    if server_type is ServerType.REST:
        if not (
            isinstance(template, dict)
            and isinstance(template.get("method"), str)
            and isinstance(template.get("path"), str)
        ):
            raise InvalidInput(
                'must be {"method": ..., "path": ..., "body": {...}}', field="command"
            )
        return [template["path"], *_nested_strings(template.get("body"))]
    raise InvalidInput(f"unknown server type {server_type!r}", field="server_type")


def _nested_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _nested_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _nested_strings(v)]
    return []


def check_binds(plan: list[PlanCommand], bind_data: dict[str, Any]) -> None:
    """An order's bind data gives exactly what its plan's templates need, as scalars."""
    clash = sorted(ORDER_BINDS & set(bind_data))
    if clash:
        raise InvalidInput(
            "is taken from the order itself; do not repeat it in bind_data",
            field=f"bind_data.{clash[0]}",
        )
    needed = set().union(*(c.needs for c in plan)) - ORDER_BINDS
    missing = sorted(needed - set(bind_data))
    if missing:
        users = [c.division for c in plan if missing[0] in c.needs]
        raise InvalidInput(
            f"is required by the command for {', '.join(users)}", field=f"bind_data.{missing[0]}"
        )
    unused = sorted(set(bind_data) - needed)
    if unused:
        raise InvalidInput(
            "is not used by any command of this plan "
            f"(it uses: {', '.join(sorted(needed)) or 'nothing'})",
            field=f"bind_data.{unused[0]}",
        )
    for name, value in bind_data.items():
        _check_bind_value(name, value)


def _check_bind_value(name: str, value: Any) -> None:
    if not isinstance(value, str | int | float | bool) and value is not None:
        raise InvalidInput("must be a string, number, boolean or null", field=f"bind_data.{name}")


def describe(command: Any) -> str:
    """A template as one line of text (SQL as it is, the others as JSON)."""
    return command if isinstance(command, str) else json.dumps(command, ensure_ascii=False)


# -- the journal payload ---------------------------------------------------------------

#: The kind of every entry provisioning enqueues.
COMMAND_KIND = "provisioning.command"


class ProvisioningCommand(BaseModel):
    """One division's part of an order: the payload of a `provisioning.command` entry on
    the division's lane (`provisioning.<DIVISION>`), keyed by the contract (SA_ID).

    Built when an order is accepted; read back by direct delivery, the backup daemon,
    an operator's bind edit and the buffer views. The views in sql/schema.sql are the
    only SQL that knows these fields (tests/provisioning/test_payload.py holds them to
    this model).

    Today the plan's template travels in `command`. The plan will later be versioned and
    the payload name its plan command (product, INTF_CODE, division) and version, carry
    bind data only, and be rendered at delivery (issue 11): `product` is here for that,
    consumers reach the template only through `lanes.delivery_of`, and operators change
    only bind data (`with_binds`), so that change stays in those places.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Not in the payload: it is the entry's key.
    sa_id: str = Field(exclude=True)  # SA_ID
    division: str  # DIVISION
    server_type: ServerType  # SERVER_TYPE
    #: None in entries enqueued before the payload named its product.
    product: str | None = None
    wo_no: str  # WO_NO
    intf_code: str  # INTF_CODE
    cust_id: str | None = None  # CUST_ID
    command: Any  # COMMAND: the plan's template for the division's server type
    bind_data: dict[str, Any] = Field(default_factory=dict)  # BIND_DATA
    bind_method: bool = True  # BIND_METHOD
    logname: str = "bossa"  # LOGNAME
    ins_date: datetime  # INS_DATE

    kind: ClassVar[str] = COMMAND_KIND

    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_entry(cls, entry: Any) -> ProvisioningCommand:
        """From a journal entry (the worker's `Entry`) or an entry row (a mapping with
        `key` and `payload`); InvalidInput naming the payload field at fault."""
        if isinstance(entry, Mapping):
            key, payload = entry["key"], entry["payload"]
        else:
            key, payload = entry.key, entry.payload
        if not isinstance(payload, Mapping):
            raise InvalidInput("must be an object", field="payload")
        return parse(cls, {**payload, "sa_id": key}, prefix="payload")

    def binds(self) -> dict[str, Any]:
        """What the template is rendered with: the order's own fields and its bind data."""
        return {
            "sa_id": self.sa_id,
            "cust_id": self.cust_id,
            "wo_no": self.wo_no,
            "intf_code": self.intf_code,
            **self.bind_data,
        }

    def with_binds(self, changes: Mapping[str, Any]) -> ProvisioningCommand:
        """The command with some bind values changed (an operator's fix); only binds the
        command has may change, and only to scalars."""
        for name, value in changes.items():
            if name not in self.bind_data:
                known = ", ".join(sorted(self.bind_data)) or "none"
                raise InvalidInput(
                    f"is not a bind of this command (it has: {known})", field=f"bind_data.{name}"
                )
            _check_bind_value(name, value)
        return self.model_copy(update={"bind_data": {**self.bind_data, **changes}})


class DeliveryMode(enum.StrEnum):
    DIRECT = "direct"
    BACKUP = "backup"


@dataclass(frozen=True)
class Delivery:
    """A successful provisioning, for the log (P11)."""

    entry_id: int
    command: ProvisioningCommand
    mode: DeliveryMode
    attempts: int


class LogRow(BaseModel):
    """A line of the provisioning log (P11)."""

    entry_id: int
    division: str
    sa_id: str
    wo_no: str
    intf_code: str
    mode: DeliveryMode
    attempts: int
    delivered_at: datetime


class BufferRow(BaseModel):
    """A buffered command with the seed's columns (P8, P9): the API and the CLI show these."""

    entry_id: int
    state: str
    attempts: int
    division: str
    startdate: datetime = Field(description="STARTDATE: when it was buffered")
    enddate: datetime | None = Field(description="ENDDATE: when it was delivered")
    sa_id: str
    wo_no: str
    intf_code: str
    cust_id: str | None
    command: Any
    bind_data: dict[str, Any]
    errcode: str | None
    errmsg: str | None
    errdate: datetime | None
    logname: str


class BufferedCommand(BaseModel):
    """One buffered command with its error history and the operator actions on it."""

    entry_id: int
    lane: str
    state: str
    attempts: int
    created_at: datetime
    finished_at: datetime | None
    command: ProvisioningCommand
    sa_id: str
    errors: list[dict[str, Any]]
    audit: list[dict[str, Any]]
