"""Interworking adapters (P3), one per SERVER_TYPE; `adapter_for` picks the right one."""

from __future__ import annotations

from collections.abc import Callable

from bossa.provisioning.adapters.base import (
    Adapter,
    Command,
    DeliveryError,
    Division,
    ServerType,
    placeholders,
    render,
)
from bossa.provisioning.adapters.memstore import RedisAdapter
from bossa.provisioning.adapters.rest import RestAdapter
from bossa.provisioning.adapters.soap import SoapAdapter
from bossa.provisioning.adapters.sql import SqlAdapter

__all__ = [
    "ADAPTERS",
    "Adapter",
    "Command",
    "DeliveryError",
    "Division",
    "RedisAdapter",
    "RestAdapter",
    "ServerType",
    "SoapAdapter",
    "SqlAdapter",
    "adapter_for",
    "placeholders",
    "render",
]

ADAPTERS: dict[ServerType, Callable[[Division], Adapter]] = {
    ServerType.SQL: SqlAdapter,
    ServerType.MEMSTORE: RedisAdapter,
    ServerType.SOAP: SoapAdapter,
    ServerType.REST: RestAdapter,
}


def adapter_for(division: Division) -> Adapter:
    """A connected-on-demand adapter for the division's SERVER_TYPE (close it when done)."""
    return ADAPTERS[ServerType(division.server_type)](division)
