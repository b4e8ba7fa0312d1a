"""What every interworking adapter (P3) offers, and the shapes it works on.

An adapter is the only code that speaks a division's wire protocol. It delivers one
command (a template from the catalogue plus the order's bind data) and makes the effect
idempotent at the target, keyed by the journal entry id: delivery is at least once, the
effect is applied once.
"""

from __future__ import annotations

import enum
import functools
import re
import string
from dataclasses import dataclass, field
from typing import Any, Protocol

from bossa.errors import InvalidInput

__all__ = [
    "Adapter",
    "Command",
    "DeliveryError",
    "Division",
    "ServerType",
    "parsed",
    "placeholders",
    "render",
]


class ServerType(enum.StrEnum):
    """SERVER_TYPE: how a division is reached (the seed's DB link, MMDB and SOAP, and REST)."""

    SQL = "sql"
    MEMSTORE = "memstore"
    SOAP = "soap"
    REST = "rest"


@dataclass(frozen=True)
class Division:
    """A row of the division table (P7)."""

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


@dataclass(frozen=True)
class Command:
    """One command for one division, as the plan buffer holds it (P8, P9)."""

    entry_id: int  # the idempotency key at the target
    division: str  # DIVISION
    sa_id: str  # SA_ID
    wo_no: str  # WO_NO
    intf_code: str  # INTF_CODE
    cust_id: str | None  # CUST_ID
    #: The catalogue's template for this server type (see render()).
    template: Any  # COMMAND
    bind_data: dict[str, Any]  # BIND_DATA
    logname: str = "bossa"  # LOGNAME


class DeliveryError(Exception):
    """The division did not apply the command.

    `unreachable` means the server could not be reached at all (connection refused,
    timeout): the division is then known to be down (P4a) and later commands go straight
    to its buffer. Otherwise the server answered with an error (ERRCODE, ERRMSG).
    """

    def __init__(self, code: str, message: str, *, unreachable: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.unreachable = unreachable


class Adapter(Protocol):
    def deliver(self, command: Command) -> None:
        """Apply the command once at the target (a repeat with the same entry id is a no-op)."""

    def close(self) -> None: ...


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


def render(value: Any, bind_data: dict[str, Any]) -> Any:
    """Fill `{name}` placeholders in every string of a memstore/soap/rest template.

    A string that is exactly one placeholder takes the bound value as it is (a number
    stays a number); otherwise values are formatted into the text.
    """
    if isinstance(value, str):
        whole, formatted = parsed(value)
        if whole is not None:
            return bind_data[whole]
        return value.format_map(bind_data) if formatted else value
    if isinstance(value, dict):
        return {k: render(v, bind_data) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, bind_data) for v in value]
    return value


@functools.lru_cache(maxsize=4096)
def parsed(text: str) -> tuple[str | None, bool]:
    """(the name if the text is exactly one placeholder, whether format_map has work:
    fields or escaped braces): a backup daemon renders the same few template strings
    thousands of times a second."""
    fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    if len(fields) == 1 and text == "{" + fields[0] + "}":
        return fields[0], True
    return None, bool(fields) or "{" in text or "}" in text
