"""What every interworking adapter (P3) offers, and the shapes it works on.

An adapter is the only code that speaks a division's wire protocol. It delivers one
command (a template from the plan plus the order's bind data) and makes the effect
idempotent at the target, keyed by the journal entry id: delivery is at least once, the
effect is applied once. What it is given (`Division`, `ServerType`) and the rules of a
template's shape (`placeholders`) are in `bossa.provisioning.models`.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from typing import Any, Protocol

from bossa.provisioning.models import Division, ServerType

__all__ = [
    "UNAVAILABLE_HTTP",
    "Adapter",
    "Command",
    "DeliveryError",
    "Division",
    "ServerType",
    "first_line",
    "parsed",
    "render",
]


@dataclass(frozen=True)
class Command:
    """One command for one division, as the plan buffer holds it (P8, P9)."""

    entry_id: int  # the idempotency key at the target
    division: str  # DIVISION
    sa_id: str  # SA_ID
    wo_no: str  # WO_NO
    intf_code: str  # INTF_CODE
    cust_id: str | None  # CUST_ID
    #: The plan's template for this server type (see render()).
    template: Any  # COMMAND
    bind_data: dict[str, Any]  # BIND_DATA
    logname: str = "bossa"  # LOGNAME


class DeliveryError(Exception):
    """The division did not apply the command.

    `unreachable` means the division could not take the call at all (no connection,
    a timeout, the server shutting down, starting, out of connections or read-only, a
    gateway in front of it answering 502/503/504/429): the division is then known to be
    down (P4a), later commands go straight to its buffer, the failure is not counted as
    an attempt and never parks the command, and the backup daemon probes the division
    instead of sending. Otherwise the server refused this command (ERRCODE, ERRMSG):
    an attempt, retried with backoff and parked after the last one. Each adapter's
    classification is in docs/provisioning.md ("Unreachable is not refused").
    """

    def __init__(self, code: str, message: str, *, unreachable: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.unreachable = unreachable


#: HTTP statuses that say the server (or the gateway in front of it) cannot take a call
#: now, whatever the call: unreachable, not a refusal of the command.
UNAVAILABLE_HTTP = frozenset({429, 502, 503, 504})


class Adapter(Protocol):
    def deliver(self, command: Command) -> None:
        """Apply the command once at the target (a repeat with the same entry id is a no-op)."""

    def probe(self) -> None:
        """A cheap check of the division's protocol (SELECT 1, PING, a GET of the WSDL,
        a HEAD of the base URL): returns when the server answers, raises an unreachable
        DeliveryError when it does not."""

    def close(self) -> None: ...


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


def first_line(exc: BaseException) -> str:
    """The first line of an error's text, for ERRMSG: drivers append context and hints.

    PyMySQL's str() is "(1062, \"Duplicate entry ...\")": its message is taken instead."""
    args: tuple[Any, ...] = getattr(exc, "args", ())
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        text = args[1]
    else:
        text = str(exc)
    lines = text.strip().splitlines()
    return lines[0] if lines else type(exc).__name__
