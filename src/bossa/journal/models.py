"""What the journal holds, as plain values, and the checks on what callers hand it.

No I/O here: validation of new entries and the shapes returned by take and enqueue, so
that the rules can be tested without a database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from bossa.errors import InvalidInput

__all__ = [
    "FINAL_STATES",
    "UNFINISHED_STATES",
    "Claim",
    "Enqueued",
    "Entry",
    "EntryState",
    "NewEntry",
    "Taken",
    "encode_batch",
]

MAX_NAME_LENGTH = 200
MAX_KEY_LENGTH = 500


class EntryState(StrEnum):
    WAITING = "waiting"
    READY = "ready"
    TAKEN = "taken"
    PARKED = "parked"
    DONE = "done"
    DISCARDED = "discarded"


UNFINISHED_STATES = frozenset(
    {EntryState.WAITING, EntryState.READY, EntryState.TAKEN, EntryState.PARKED}
)
FINAL_STATES = frozenset({EntryState.DONE, EntryState.DISCARDED})


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry to enqueue.

    `key` orders entries: a key's entries in a lane are delivered one at a time, in
    enqueue order. `dedup_key`, when given, makes a second enqueue with the same value a
    no-op while the first is unfinished.
    """

    lane: str
    kind: str
    payload: Any
    key: str | None = None
    not_before: datetime | None = None
    dedup_key: str | None = None


@dataclass(frozen=True, slots=True)
class Enqueued:
    id: int
    #: False when the dedup key matched an unfinished entry, whose id this is.
    created: bool


@dataclass(frozen=True, slots=True)
class Entry:
    """An entry handed to a worker under a lease."""

    id: int
    lane: str
    key: str | None
    kind: str
    payload: Any
    attempts: int
    created_at: datetime
    lease_expires_at: datetime


@dataclass(frozen=True, slots=True)
class Taken:
    """A batch taken under one lease token; ack, fail and heartbeat present the token."""

    token: uuid.UUID
    entries: list[Entry] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [entry.id for entry in self.entries]


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to "may I deliver this directly?" (P5).

    `go_ahead` True: the key had nothing pending; the entry is taken under `token`, and the
    caller delivers now, then acks (or fails, which leaves it queued for retry). False: the
    entry waits behind the key's backlog and a worker will deliver it in order.
    """

    entry_id: int
    go_ahead: bool
    token: uuid.UUID | None


def _name(value: object, field_name: str, *, optional: bool = False, limit: int) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidInput("must be a string", field=field_name)
    if not value.strip():
        raise InvalidInput("must not be empty", field=field_name)
    if len(value) > limit:
        raise InvalidInput(f"must be at most {limit} characters", field=field_name)
    if "\x00" in value:
        raise InvalidInput("must not contain NUL characters", field=field_name)
    return value


def encode_payload(payload: Any, *, field_name: str, max_bytes: int) -> str:
    """The payload as JSON text, refused if it is not JSON or larger than allowed."""
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"is not JSON: {exc}", field=field_name) from exc
    size = len(text.encode())
    if size > max_bytes:
        raise InvalidInput(
            f"is {size} bytes as JSON; the lane accepts at most {max_bytes}", field=field_name
        )
    if "\\u0000" in text:
        raise InvalidInput(
            "must not contain NUL characters (PostgreSQL jsonb refuses them)", field=field_name
        )
    return text


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """Column arrays for the enqueue statement, one position per distinct new entry."""

    lanes: list[str]
    keys: list[str | None]
    kinds: list[str]
    payloads: list[str]
    not_befores: list[datetime | None]
    dedup_keys: list[str | None]
    #: For each input position, the batch position it went to.
    positions: list[int]
    #: For each input position, whether an earlier input had the same dedup key.
    folded: list[bool]


def encode_batch(
    entries: Sequence[NewEntry], max_payload_bytes: dict[str, int] | int
) -> EncodedBatch:
    """Validate every entry before any is written: one bad entry enqueues nothing."""
    batch = EncodedBatch([], [], [], [], [], [], [], [])
    seen: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(entries):
        where = f"entries[{index}]" if len(entries) > 1 else "entry"
        lane = _name(entry.lane, f"{where}.lane", limit=MAX_NAME_LENGTH)
        assert lane is not None
        kind = _name(entry.kind, f"{where}.kind", limit=MAX_NAME_LENGTH)
        assert kind is not None
        key = _name(entry.key, f"{where}.key", optional=True, limit=MAX_KEY_LENGTH)
        dedup = _name(entry.dedup_key, f"{where}.dedup_key", optional=True, limit=MAX_KEY_LENGTH)
        if entry.not_before is not None and entry.not_before.tzinfo is None:
            raise InvalidInput("must carry a time zone", field=f"{where}.not_before")
        limit = max_payload_bytes if isinstance(max_payload_bytes, int) else max_payload_bytes[lane]
        payload = encode_payload(entry.payload, field_name=f"{where}.payload", max_bytes=limit)
        if dedup is not None and (lane, dedup) in seen:
            batch.positions.append(seen[(lane, dedup)])
            batch.folded.append(True)
            continue
        if dedup is not None:
            seen[(lane, dedup)] = len(batch.lanes)
        batch.positions.append(len(batch.lanes))
        batch.folded.append(False)
        batch.lanes.append(lane)
        batch.keys.append(key)
        batch.kinds.append(kind)
        batch.payloads.append(payload)
        batch.not_befores.append(entry.not_before)
        batch.dedup_keys.append(dedup)
    return batch
