"""What provisioning works on, as plain values, and its rules, with no I/O.

Order types, the order as it arrives, divisions and the checks on what an operator
types for one (the URL schemes the adapters speak, credentials in their own masked
field), versioned plan commands and their templates, the routing rule of an order's
commands (P4a), and the payload of the journal entries provisioning enqueues
(`ProvisioningCommand`: it names its plan version and carries bind data only). Kept
free of the database so the rules are read and tested on their own, and so the payload
has one definition that its producer (accepting an order) and every consumer (direct
delivery, the backup daemon, an operator's bind edit, the buffer listings) share.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import math
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from bossa.errors import InvalidInput

__all__ = [
    "COMMAND_KIND",
    "LEGACY_REFUSAL",
    "MAX_BINDS",
    "MAX_BIND_TEXT",
    "MAX_POSITION",
    "MAX_TEMPLATE",
    "MAX_URL",
    "ORDER_BINDS",
    "URL_QUERY",
    "URL_SCHEMES",
    "BindData",
    "BufferRow",
    "BufferedCommand",
    "BulkOutcome",
    "Credentials",
    "Delivery",
    "DeliveryMode",
    "Division",
    "DivisionChange",
    "DivisionRecord",
    "DivisionView",
    "LaneState",
    "Line",
    "LogRow",
    "Order",
    "OrderRequest",
    "OrderType",
    "PlanCommand",
    "PlanKey",
    "PlanVersion",
    "PlanView",
    "ProvisioningCommand",
    "Route",
    "ServerType",
    "bind_problem",
    "check_binds",
    "check_division_name",
    "check_server_url",
    "check_template",
    "describe",
    "is_division_name",
    "parse",
    "placeholders",
    "redact",
    "split_url_password",
    "straight_to_buffer",
]

M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any, *, prefix: str = "") -> M:
    """`data` as `model`, or InvalidInput naming every field at fault (the first as its
    `field`): the one way a request, a division change or a journal payload is checked,
    on every edge alike."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            field_name = ".".join(p for p in (prefix, where) if p) or model.__name__
            problems.append((field_name, str(error["msg"])))
        raise InvalidInput.every(problems) from exc


# -- text an operator or a caller types ------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(value: str) -> str:
    # NUL cannot be stored in PostgreSQL text, and no name, code or URL holds a newline.
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (NUL, tab, newline...)")
    return value


#: A single line of printable text (names, codes, URLs, credentials).
Line = Annotated[str, AfterValidator(_one_line)]

#: Bounds of bind data, in an order and in a payload alike.
MAX_BINDS = 100
MAX_BIND_TEXT = 4000
_BIND_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_INT64 = 2**63


def bind_problem(name: Any, value: Any) -> str | None:
    """Why a bind variable cannot be sent (None when it can): a name, and a scalar value
    every adapter sends as it is (a string without NUL, a 64-bit integer, a finite
    number, a boolean, null)."""
    if not isinstance(name, str) or not _BIND_NAME.match(name):
        return "a bind name is a letter or _ then letters, digits and _, at most 64"
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -_INT64 <= value < _INT64 else "must be a 64-bit integer"
    if isinstance(value, float):
        return None if math.isfinite(value) else "must be a finite number"
    if isinstance(value, str):
        if "\x00" in value:
            return "must not contain NUL"
        if len(value) > MAX_BIND_TEXT:
            return f"must be at most {MAX_BIND_TEXT} characters"
        return None
    return "must be a string, number, boolean or null"


def _bind_data(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > MAX_BINDS:
        raise ValueError(f"at most {MAX_BINDS} bind variables")
    for name, item in value.items():
        problem = bind_problem(name, item)
        if problem is not None:
            raise ValueError(f"{name!r}: {problem}")
    return value


#: Bind data: scalars by name, checked alike in an order and in a payload.
BindData = Annotated[dict[str, Any], AfterValidator(_bind_data)]


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

    product: Line = Field(min_length=1, max_length=32)
    sa_id: Line = Field(min_length=1, max_length=64, description="SA_ID: the contract")
    intf_code: OrderType = Field(
        description="INTF_CODE: 4201 new, 4202 change, 4203 terminate, 4204 suspend, 4205 resume"
    )
    cust_id: Line | None = Field(default=None, max_length=64)
    wo_no: Line | None = Field(default=None, min_length=1, max_length=64)
    bind_data: BindData = Field(
        default_factory=dict,
        description=f"At most {MAX_BINDS} scalars by name (strings up to {MAX_BIND_TEXT})",
    )

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
    #: Secrets (username, password, token); never logged, masked in every listing.
    credentials: dict[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = 5.0

    def redact(self, text: str) -> str:
        """`text` with the division's secrets (every credential but the user name, which
        a URL or a server's message may name on its own) replaced by ***."""
        return redact(text, (v for k, v in self.credentials.items() if k != "username"))


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret (as it is and URL-quoted) replaced by ***: what a server
    answers, a driver says or a URL shows goes through this before any log, error or
    listing holds it."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        for form in {secret, quote(secret, safe="")}:
            text = text.replace(form, "***")
    return text


_DIVISION_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


def check_division_name(name: str) -> str:
    if not _DIVISION_NAME.match(name):
        raise InvalidInput(
            "must be upper-case letters, digits and _ (e.g. AAA, HDS), at most 64",
            field="division",
        )
    return name


def is_division_name(name: str) -> bool:
    """Could this be a division's name? (One that cannot is not looked up: not found.)"""
    return bool(_DIVISION_NAME.match(name))


# -- division URLs: the schemes the installed adapters speak ----------------------------

#: SERVER_URL schemes per SERVER_TYPE: the SQLAlchemy dialects whose driver bossa installs
#: (psycopg, PyMySQL), Redis, and HTTP(S) for SOAP and REST. No sqlite, no file paths.
URL_SCHEMES: dict[ServerType, frozenset[str]] = {
    ServerType.SQL: frozenset(
        {"postgresql", "postgresql+psycopg", "mysql+pymysql", "mariadb+pymysql"}
    ),
    ServerType.MEMSTORE: frozenset({"redis", "rediss"}),
    ServerType.SOAP: frozenset({"http", "https"}),
    ServerType.REST: frozenset({"http", "https"}),
}
#: Query parameters a SERVER_URL may carry, per scheme family. Anything else could change
#: how bossa connects or authenticates (libpq's host= socket folder, require_auth=,
#: passfile=; redis-py's password=): the adapter sets those itself.
URL_QUERY: dict[str, frozenset[str]] = {
    "postgresql": frozenset(
        {"sslmode", "sslrootcert", "application_name", "target_session_attrs", "channel_binding"}
    ),
    "mysql": frozenset({"charset", "ssl_ca", "ssl_check_hostname", "ssl_verify_cert"}),
    "redis": frozenset({"db", "ssl_cert_reqs", "ssl_ca_certs"}),
}
#: Query parameter names that would put a secret in the URL (SOAP and REST URLs may
#: carry other parameters, such as ?wsdl).
_SECRET_QUERY = re.compile(r"pass|pwd|token|secret|key|auth|sig", re.IGNORECASE)
MAX_URL = 2048


def _family(scheme: str) -> str:
    base = scheme.partition("+")[0]
    return {"mariadb": "mysql", "rediss": "redis", "https": "http"}.get(base, base)


def check_server_url(server_type: ServerType, url: str | None) -> str:
    """A SERVER_URL the division's adapter can use, or InvalidInput (field server_url)
    saying why: empty, a scheme the adapter does not speak, no host, a password in it
    (it belongs in credentials.password), a query parameter that is not allowed."""

    def refuse(reason: str) -> InvalidInput:
        return InvalidInput(reason, field="server_url")

    if url is None or not url.strip():
        raise refuse(f"is required for a {server_type.value} division")
    if len(url) > MAX_URL:
        raise refuse(f"must be at most {MAX_URL} characters")
    if _CONTROL.search(url) or " " in url:
        raise refuse("must not contain spaces or control characters")
    schemes = URL_SCHEMES[server_type]
    known = ", ".join(sorted(schemes))
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in schemes:
        shown = f"scheme {scheme!r}" if scheme else "no scheme://"
        raise refuse(f"has {shown}; a {server_type.value} division takes {known}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refuse(f"is not a URL: {exc}") from None
    if parts.password is not None:
        raise refuse("must not hold a password: give it as credentials.password (--password)")
    if not parts.hostname:
        raise refuse("must name a host (no local socket or file path)")
    if port == 0:
        raise refuse("port must be between 1 and 65535")
    family = _family(scheme)
    if family == "http" and parts.username is not None:
        raise refuse("must not hold a user: give it as credentials.username (--user)")
    allowed = URL_QUERY.get(family)
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if allowed is not None and name not in allowed:
            raise refuse(
                f"query parameter {name!r} is not allowed (allowed: {', '.join(sorted(allowed))})"
            )
        if allowed is None and _SECRET_QUERY.search(name):
            raise refuse(f"query parameter {name!r} looks like a secret: give it as credentials")
    return url


def split_url_password(url: str | None) -> tuple[str | None, str | None]:
    """A stored URL without the password a division row from before issue 11 may hold in
    it, and that password (URL-decoded), so that no listing shows it and the adapter
    still finds it."""
    if not url or "@" not in url:
        return url, None
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url, None
    if password is None:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    netloc = f"{user}@{hostport}" if user else hostport
    return urlunsplit(parts._replace(netloc=netloc)), unquote(password)


class Credentials(BaseModel):
    """A division's secrets, in their own field: never in SERVER_URL, masked (***) in
    every listing, log line and error."""

    model_config = ConfigDict(extra="forbid")

    username: Line | None = Field(
        default=None, min_length=1, max_length=256, description="The user bossa logs in as"
    )
    password: Line | None = Field(default=None, min_length=1, max_length=1024)
    token: Line | None = Field(
        default=None, min_length=1, max_length=4096, description="A REST bearer token"
    )

    def values(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class DivisionChange(BaseModel):
    """The values an operator gives a division (all of them to add one, some to change it).

    SERVER_URL is checked against the division's type (`check_server_url`) by the
    service, which knows the type a change leaves the division with."""

    model_config = ConfigDict(extra="forbid")

    server_type: ServerType | None = Field(default=None, description="SERVER_TYPE")
    server_url: Line | None = Field(
        default=None,
        max_length=MAX_URL,
        description=(
            "SERVER_URL: postgresql[+psycopg]://, mysql+pymysql://, mariadb+pymysql:// "
            "(sql); redis[s]:// (memstore); http[s]:// (soap: the WSDL; rest: the base "
            "URL). A host is required; no password (see credentials)."
        ),
    )
    server_ip: Line | None = Field(default=None, max_length=255, description="SERVER_IP")
    server_port: int | None = Field(default=None, ge=1, le=65535, description="SERVER_PORT")
    server_name: Line | None = Field(default=None, max_length=200, description="SERVER_NAME")
    server_used: bool | None = Field(default=None, description="SERVER_USED")
    timeout_ms: int | None = Field(
        default=None, ge=10, le=600_000, description="Call timeout, 10 ms to 10 minutes"
    )
    credentials: Credentials | None = Field(
        default=None,
        description="Secrets (username, password, token); the names given replace those "
        "stored, the others are kept; never shown",
    )

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> DivisionChange:
        return parse(cls, dict(values))

    def values(self) -> dict[str, Any]:
        """The values given (None means 'not given'), as the columns take them."""
        given: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, ServerType):
                value = value.value
            elif isinstance(value, Credentials):
                value = value.values()
            given[name] = value
        return given


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
            server_url=None if d.server_url is None else d.redact(d.server_url),
            server_name=d.server_name,
            server_used=d.server_used,
            credentials=dict.fromkeys(sorted(d.credentials), "***"),
            timeout_ms=self.timeout_ms,
            down_until=self.down_until,
            last_error=None if self.last_error is None else d.redact(self.last_error),
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


@dataclass(frozen=True, order=True)
class PlanKey:
    """A plan command's version: what a payload names instead of carrying the command.

    A plan command is one division's command in a product's plan for an order type
    (product, INTF_CODE, division); every change of its command makes a new version, and
    old versions are kept, so a command buffered under version 3 is sent as version 3
    said, whatever the plan says now."""

    product: str
    intf_code: str
    division: str
    version: int

    def __str__(self) -> str:
        return f"{self.product}/{self.intf_code}/{self.division} v{self.version}"


@dataclass(frozen=True)
class PlanVersion:
    """One version of a plan command: the template the adapter renders at delivery."""

    key: PlanKey
    server_type: ServerType
    command: Any
    bind_method: bool


@dataclass(frozen=True)
class PlanCommand:
    """One division's command in a product's plan for an order type, at its current
    version (what an order accepted now is sent with)."""

    plan: PlanVersion
    needs: frozenset[str]

    @property
    def division(self) -> str:
        return self.plan.key.division

    @property
    def server_type(self) -> ServerType:
        return self.plan.server_type


class PlanView(BaseModel):
    product_code: str
    intf_code: str
    order_type: str
    position: int
    division: str
    server_type: ServerType
    version: int = Field(description="The current version; older ones are kept")
    command: Any
    bind_method: bool


#: A template's size, serialized (SQL text, or JSON).
MAX_TEMPLATE = 65_536
#: Where a division's command sits in its plan (smallint in the table).
MAX_POSITION = 1000


def check_template(server_type: ServerType, template: Any) -> frozenset[str]:
    """A plan command's template, checked when added: its shape for the server type, its
    size, no NUL; returns the bind variables it needs."""
    text = describe(template)
    if len(text) > MAX_TEMPLATE:
        raise InvalidInput(f"must be at most {MAX_TEMPLATE} characters", field="command")
    if "\x00" in text or "\\u0000" in text:
        raise InvalidInput("must not contain NUL", field="command")
    return frozenset(placeholders(server_type, template))


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
    """An order's bind data gives exactly what its plan's templates need, as scalars.
    Every problem is reported at once (InvalidInput.problems), each naming its bind."""
    problems = [
        (f"bind_data.{name}", "is taken from the order itself; do not repeat it in bind_data")
        for name in sorted(ORDER_BINDS & set(bind_data))
    ]
    needed = set().union(*(c.needs for c in plan)) - ORDER_BINDS
    for name in sorted(needed - set(bind_data)):
        users = ", ".join(c.division for c in plan if name in c.needs)
        problems.append((f"bind_data.{name}", f"is required by the command for {users}"))
    uses = ", ".join(sorted(needed)) or "nothing"
    problems += [
        (f"bind_data.{name}", f"is not used by any command of this plan (it uses: {uses})")
        for name in sorted(set(bind_data) - needed - ORDER_BINDS)
    ]
    problems += [
        (f"bind_data.{name}", problem)
        for name, value in bind_data.items()
        if (problem := bind_problem(name, value)) is not None
    ]
    if problems:
        raise InvalidInput.every(problems)


def _check_bind_value(name: str, value: Any) -> None:
    problem = bind_problem(name, value)
    if problem is not None:
        raise InvalidInput(problem, field=f"bind_data.{name}")


def describe(command: Any) -> str:
    """A template as one line of text (SQL as it is, the others as JSON)."""
    return command if isinstance(command, str) else json.dumps(command, ensure_ascii=False)


# -- the journal payload ---------------------------------------------------------------

#: The kind of every entry provisioning enqueues.
COMMAND_KIND = "provisioning.command"

#: Why a payload from before plans were versioned is never sent (issue 11): the
#: migration gave every such payload whose command matched a plan that plan's version;
#: one that matched none carries command text no plan defines.
LEGACY_REFUSAL = (
    "holds command text from before plans were versioned that matches no plan version: "
    "it is never sent (nothing runs that a plan did not define); discard it, and submit "
    "the order again if it is still wanted"
)


class ProvisioningCommand(BaseModel):
    """One division's part of an order: the payload of a `provisioning.command` entry on
    the division's lane (`provisioning.<DIVISION>`), keyed by the contract (SA_ID).

    It names its plan command and version (product, INTF_CODE, division, plan_version)
    and carries bind data only: the command sent is rendered at delivery from that plan
    version (kept for ever), never taken from the payload. Built when an order is
    accepted; read back by direct delivery, the backup daemon, an operator's bind edit
    and the buffer views. The view `provisioning.commands` is the only SQL that knows
    these fields (tests/provisioning/test_payload.py holds it to this model).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Not in the payload: it is the entry's key.
    sa_id: str = Field(exclude=True)  # SA_ID
    division: str = Field(pattern=_DIVISION_NAME.pattern)  # DIVISION
    server_type: ServerType  # SERVER_TYPE
    product: Line = Field(min_length=1, max_length=32)
    intf_code: str = Field(pattern=r"^[0-9]{4}$")  # INTF_CODE
    plan_version: int = Field(ge=1, le=2**31 - 1)
    wo_no: Line = Field(min_length=1, max_length=64)  # WO_NO
    cust_id: Line | None = Field(default=None, max_length=64)  # CUST_ID
    bind_data: BindData = Field(default_factory=dict)  # BIND_DATA
    logname: Line = Field(default="bossa", min_length=1, max_length=64)  # LOGNAME
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
        if "command" in payload:
            raise InvalidInput(LEGACY_REFUSAL, field="payload.command")
        return parse(cls, {**payload, "sa_id": key}, prefix="payload")

    @functools.cached_property
    def plan_key(self) -> PlanKey:
        # Cached: a backup daemon asks three times per command (which versions to read,
        # which one to render, whether it is the one named); a frozen model never changes.
        return PlanKey(self.product, self.intf_code, self.division, self.plan_version)

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
        command has may change, and only to scalars. Its plan version, and so the command
        sent, never changes."""
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
    """A buffered command with every column of the seed's buffers (P8 and P9): the API,
    the CLI and the SQL views show these."""

    entry_id: int
    state: str
    attempts: int
    division: str = Field(description="DIVISION")
    startdate: datetime = Field(description="STARTDATE: when it was buffered")
    recv_date: datetime = Field(
        description="RECV_DATE (P9): when the buffer received it (the same as STARTDATE)"
    )
    enddate: datetime | None = Field(description="ENDDATE: when it was delivered")
    sa_id: str = Field(description="SA_ID: the contract")
    wo_no: str | None = Field(description="WO_NO: the work order")
    ins_date: datetime | None = Field(description="INS_DATE: when the order sent it")
    intf_code: str | None = Field(description="INTF_CODE: the order type (4201 new ...)")
    cust_id: str | None = Field(description="CUST_ID")
    plan_version: int | None = Field(
        description="The plan version the command is sent with (null: an entry from "
        "before plans were versioned that matched none; it is never sent)"
    )
    command: Any = Field(description="COMMAND: the plan version's template")
    bind_data: dict[str, Any] | None = Field(description="BIND_DATA: the values bound")
    bind_method: bool | None = Field(
        description="BIND_METHOD: true when the command's values are bound by the driver "
        "(always, in bossa: a value is never spliced into a command)"
    )
    errcode: str | None = Field(
        description="ERRCODE: the latest failure's code; empty once delivered"
    )
    errmsg: str | None = Field(
        description="ERRMSG: the latest failure's text; empty once delivered"
    )
    errdate: datetime | None = Field(description="ERRDATE: when it failed; empty once delivered")
    logname: str | None = Field(description="LOGNAME: the application that sent it")


class BulkOutcome(BaseModel):
    """What an operator's bulk action on a buffer selected and changed."""

    action: str = Field(description="retry, park or discard")
    division: str
    dry_run: bool = Field(description="True: counted only, nothing changed")
    errcode: str | None = Field(description="The ERRCODE selected (none: any)")
    older_than_s: float | None = Field(description="Buffered longer ago than this (seconds)")
    sa_id: str | None = Field(description="The contract selected (none: any)")
    matched: int = Field(description="Commands the selection holds, in the action's states")
    changed: int = Field(description="Commands changed (0 in a dry run)")
    entry_ids: list[int] = Field(description="The commands changed, oldest first")


class BufferedCommand(BaseModel):
    """One buffered command with its plan version, its error history and the operator
    actions on it."""

    entry_id: int
    lane: str
    state: str
    attempts: int
    created_at: datetime
    finished_at: datetime | None
    sa_id: str
    command: ProvisioningCommand | None = Field(
        description="The payload (null when it cannot be read: see refused)"
    )
    template: Any = Field(description="The plan version's template (COMMAND)")
    rendered: Any = Field(
        description="The template with the bind data filled in, as the adapter sends it "
        "(SQL: the text, its values bound separately)"
    )
    refused: str | None = Field(description="Why this entry is never sent, if it is not")
    errors: list[dict[str, Any]]
    audit: list[dict[str, Any]]
