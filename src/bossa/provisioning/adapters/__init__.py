"""Interworking adapters (P3), one per SERVER_TYPE; `adapter_for` picks the right one.

Each adapter module is imported when a division of its type is first used, so a
command that needs none of them (the CLI's --help, the journal's workers) does not pay
for SQLAlchemy, zeep and redis-py at start-up.
"""

from __future__ import annotations

import importlib
from typing import Any

from bossa.errors import InvalidInput
from bossa.provisioning.adapters.base import (
    Adapter,
    Command,
    DeliveryError,
    Division,
    ServerType,
    render,
)
from bossa.provisioning.models import check_server_url

__all__ = [
    "ADAPTERS",
    "Adapter",
    "Command",
    "DeliveryError",
    "Division",
    "ServerType",
    "adapter_for",
    "render",
]

#: SERVER_TYPE -> (module, class) of its adapter.
ADAPTERS: dict[ServerType, tuple[str, str]] = {
    ServerType.SQL: ("bossa.provisioning.adapters.sql", "SqlAdapter"),
    ServerType.MEMSTORE: ("bossa.provisioning.adapters.memstore", "RedisAdapter"),
    ServerType.SOAP: ("bossa.provisioning.adapters.soap", "SoapAdapter"),
    ServerType.REST: ("bossa.provisioning.adapters.rest", "RestAdapter"),
}


def adapter_for(division: Division) -> Adapter:
    """A connected-on-demand adapter for the division's SERVER_TYPE (close it when done).

    Its SERVER_URL is checked again here (a row written before the checks existed, or
    by hand): a scheme no adapter speaks, a local path or a password in it is refused
    with the same text as when the division is added (ValueError)."""
    try:
        check_server_url(division.server_type, division.server_url)
    except InvalidInput as exc:
        raise ValueError(f"division {division.name}: {exc}") from None
    module_name, class_name = ADAPTERS[ServerType(division.server_type)]
    factory: Any = getattr(importlib.import_module(module_name), class_name)
    adapter: Adapter = factory(division)
    return adapter
