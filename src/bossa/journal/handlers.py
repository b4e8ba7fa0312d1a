"""The registry of entry kinds a generic `bossa journal work` can run: kind -> handler.

Its role in the shape: what `lanes.py` is to a domain module (the handlers of the
module's own daemons), this is to the journal's generic worker, which consumes the
lanes owned by 'journal' (an operator's or integrator's own). Domain modules run their
own daemons instead. `--handler module:function` adds an integrator's own for every
kind ("*").
"""

from __future__ import annotations

import importlib

from bossa.errors import InvalidInput
from bossa.journal.models import Entry
from bossa.journal.worker import Handler
from bossa.logs import get_logger

__all__ = ["REGISTRY", "load_handler", "register"]

REGISTRY: dict[str, Handler] = {}
log = get_logger("bossa.journal.handlers")


def register(kind: str, handler: Handler) -> None:
    REGISTRY[kind] = handler


async def _noop(entry: Entry) -> None:
    """Does nothing: for smoke tests and benchmarks of the journal itself."""


async def _log(entry: Entry) -> None:
    log.info(
        "journal entry",
        id=entry.id,
        lane=entry.lane,
        key=entry.key,
        kind=entry.kind,
        payload=entry.payload,
    )


register("noop", _noop)
register("log", _log)


def load_handler(spec: str) -> Handler:
    """`package.module:function` to a handler, with an error that says what is wrong."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InvalidInput("must look like package.module:function", field="--handler")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(f"cannot import {module_name}: {exc}", field="--handler") from exc
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise InvalidInput(f"{module_name} has no function {attribute}", field="--handler")
    return handler  # type: ignore[no-any-return]
