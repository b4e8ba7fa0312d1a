"""The operator's description of business events, with no I/O but reading its file: the
event notification list and policy hook (S2), the payload configuration that assembles
internal events into business events (S3), the queue map (S4), the modules each type is
routed to (S6) and the thread allocation (S7).

BRM keeps these in four files (pin_notify_ifw_sync, payloadconfig_ifw_sync.xml,
ifw_sync_queuenames, the DAT_Listener registry); bossa keeps them in one YAML or TOML
file (`BOSSA_SYNC_EVENTS`), checked at start with errors naming the field, so that the
four cannot disagree. The packaged `events.yaml` is the default and documents itself.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bossa.errors import InvalidInput
from bossa.sync.models import (
    BUSINESS_NAME,
    INTERNAL_NAME,
    BusinessEvent,
    BusinessType,
    InternalEvent,
)

__all__ = [
    "BusinessDefinition",
    "EventConfig",
    "assemble",
    "default_config",
    "load_event_config",
    "parse_event_config",
]

#: The seed allows at most one thread for recycle requests.
RECYCLE_MAX_THREADS = 1
MAX_THREADS_PER_TYPE = 16

Publishing = Literal["publish", "policy"]
QueueTarget = Literal["routed", "all"] | list[int]


class BusinessDefinition(BaseModel):
    """One business event of the payload configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Internal events that must all be raised by one business operation (one
    #: transaction) for this business event to be complete.
    requires: list[str] = Field(min_length=1, max_length=32)
    #: Internal events it carries too when the same operation raised them.
    collect: list[str] = Field(default_factory=list, max_length=32)
    #: Account-synchronisation data (S8: dequeued in batches) or a process to invoke
    #: (a recycle, a bill run's start: one at a time).
    batch: bool = False
    #: The pipeline modules registered for it (S6), in the order they get it.
    modules: list[str] = Field(min_length=1, max_length=8)

    @model_validator(mode="after")
    def _names(self) -> BusinessDefinition:
        import re

        for where, names in (("requires", self.requires), ("collect", self.collect)):
            for n, name in enumerate(names):
                if not re.match(INTERNAL_NAME, name):
                    raise ValueError(f"{where}[{n}]: {name!r} is not an internal event name")
        return self


class EventConfig(BaseModel):
    """The whole file. Field names are the file's keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: S2, the event notification list: each internal event that is published, and how:
    #: `publish` straight to payload assembly, `policy` through the policy hook first.
    #: An internal event not listed is not published.
    notify: dict[str, Publishing] = Field(default_factory=dict)
    #: S2: the registered name of the policy hook (see bossa.sync.policies).
    policy_hook: str = Field(default="passthrough", min_length=1, max_length=100)
    #: S3, the payload configuration: business event type -> its definition.
    business_events: dict[str, BusinessDefinition] = Field(default_factory=dict)
    #: S4: business event type -> the pipeline instances whose queue gets it: `routed`
    #: (the customer's instance by the account router; every instance when the event
    #: has no customer), `all`, or a list of instance numbers. Unlisted types: routed.
    queues: dict[str, QueueTarget] = Field(default_factory=dict)
    #: S7, EventThreadAllocation: business event type -> its own threads. Every other
    #: type shares the one default thread.
    threads: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> EventConfig:
        import re

        for name in self.notify:
            if not re.match(INTERNAL_NAME, name):
                raise _Problem(f"notify.{name}", "is not an internal event name (module.what)")
        for btype, definition in self.business_events.items():
            if not re.match(BUSINESS_NAME, btype):
                raise _Problem(f"business_events.{btype}", "is not a business event name")
            for name in (*definition.requires, *definition.collect):
                if name not in self.notify:
                    raise _Problem(
                        f"business_events.{btype}",
                        f"{name} is not in the notification list (notify), so it is never"
                        " published",
                    )
        for where, table in (("queues", self.queues), ("threads", self.threads)):
            for btype in table:
                if btype not in self.business_events:
                    raise _Problem(f"{where}.{btype}", "is not a business event of the file")
        for btype, target in self.queues.items():
            if isinstance(target, list) and (
                not target or any(not 0 <= i <= 7 for i in target) or len(set(target)) < len(target)
            ):
                raise _Problem(f"queues.{btype}", "must list distinct instances 0-7")
        for btype, n in self.threads.items():
            if not 1 <= n <= MAX_THREADS_PER_TYPE:
                raise _Problem(f"threads.{btype}", f"must be between 1 and {MAX_THREADS_PER_TYPE}")
            if btype == BusinessType.RECYCLE_REQUEST and n > RECYCLE_MAX_THREADS:
                raise _Problem(
                    f"threads.{btype}", "recycle requests get at most one thread (seed 002)"
                )
            if self.business_events[btype].batch:
                raise _Problem(
                    f"threads.{btype}",
                    "an account-sync (batch: true) type is applied in batches on the"
                    " default thread, in queue order; it cannot have threads of its own",
                )
        return self

    def published(self, name: str) -> Publishing | None:
        return self.notify.get(name)

    def instances_of(self, btype: str, routed: int | None, instances: int) -> list[int]:
        """S4: the instances whose queues get an event of `btype`; `routed` is the
        customer's instance (None for an event about no customer)."""
        target = self.queues.get(btype, "routed")
        if target == "all" or (target == "routed" and routed is None):
            return list(range(instances))
        if target == "routed":
            assert routed is not None
            return [routed]
        assert isinstance(target, list)
        return [i for i in target if i < instances]

    def check_modules(self, known: Iterable[str]) -> None:
        names = set(known)
        for btype, definition in self.business_events.items():
            for n, module in enumerate(definition.modules):
                if module not in names:
                    raise InvalidInput(
                        f"no pipeline module {module!r} (registered: {', '.join(sorted(names))})",
                        field=f"business_events.{btype}.modules[{n}]",
                    )


class _Problem(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def parse_event_config(data: Any, *, source: str = "events") -> EventConfig:
    """The checked configuration of parsed file content; InvalidInput naming the field."""
    try:
        return EventConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        ctx = first.get("ctx") or {}
        cause = ctx.get("error")
        if isinstance(cause, _Problem):
            raise InvalidInput(f"{source}: {cause.reason}", field=cause.field) from None
        where = ".".join(str(p) for p in first["loc"]) or "file"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(f"{source}: {message}", field=where) from None


def load_event_config(path: Path | None) -> EventConfig:
    """Read and check the file (YAML, TOML or JSON by its suffix); None: the default."""
    if path is None:
        return default_config()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}", field="BOSSA_SYNC_EVENTS") from None
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise InvalidInput(
                f"{path}: must end in .yaml, .yml, .toml or .json", field="BOSSA_SYNC_EVENTS"
            )
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path} is not readable: {exc}", field="BOSSA_SYNC_EVENTS") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: must be a mapping", field="BOSSA_SYNC_EVENTS")
    return parse_event_config(data, source=str(path))


def default_config() -> EventConfig:
    text = resources.files("bossa.sync").joinpath("events.yaml").read_text(encoding="utf-8")
    return parse_event_config(yaml.safe_load(text), source="bossa/sync/events.yaml")


def assemble(
    config: EventConfig, raised: Sequence[InternalEvent], *, now: datetime | None = None
) -> list[BusinessEvent]:
    """S3: the complete business events that the internal events of one business
    operation make up, per customer, in the payload configuration's order. An internal
    event may be carried by several business events; one that completes none is not
    published (the caller logs it)."""
    now = now or datetime.now(UTC)
    by_customer: dict[str | None, list[InternalEvent]] = {}
    for event in raised:
        by_customer.setdefault(event.customer_id, []).append(event)
    found: list[BusinessEvent] = []
    for customer, events in by_customer.items():
        names = {e.name for e in events}
        for btype, definition in config.business_events.items():
            if not set(definition.requires) <= names:
                continue
            wanted = {*definition.requires, *definition.collect}
            found.append(
                BusinessEvent(
                    type=btype,
                    customer_id=customer,
                    events=[e for e in events if e.name in wanted],
                    occurred_at=now,
                )
            )
    return found
