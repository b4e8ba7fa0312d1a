"""What the journal holds, as plain values, and the checks on what callers hand it.

No I/O here: validation of new entries, the shapes returned by take and enqueue (plain
dataclasses: the hot path builds thousands of them), and the typed rows an operator
sees (pydantic: the API returns them as its response bodies, the CLI renders them), so
that the rules can be tested without a database.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bossa.errors import InvalidInput

__all__ = [
    "FINAL_STATES",
    "GENERIC_OWNER",
    "MAX_BULK",
    "MAX_ID",
    "MAX_PAGE",
    "MAX_PAYLOAD_DEPTH",
    "UNFINISHED_STATES",
    "BulkAction",
    "BulkFilter",
    "BulkResult",
    "Claim",
    "Enqueued",
    "Entry",
    "EntryFilter",
    "EntryState",
    "Lane",
    "NewEntry",
    "Taken",
    "check_id",
    "check_limit",
    "check_owner",
    "check_text",
    "encode_batch",
    "encode_payload",
    "encode_single",
    "lane_name",
    "payload_depth",
]

#: The owner of lanes no module consumes: an operator's or integrator's own, worked by
#: `bossa journal work`. Only these may be written through the generic operator routes.
GENERIC_OWNER = "journal"

_OWNER = re.compile(r"[a-z][a-z0-9_]*")
MAX_NAME_LENGTH = 200
MAX_KEY_LENGTH = 500
MAX_REASON_LENGTH = 2_000
#: The deepest nesting of arrays and objects a payload may have: what the API accepts in
#: a body (BOSSA_API_MAX_JSON_DEPTH's default), so that every payload can be read back
#: (a payload nested 300 deep was stored, then every listing that showed it failed).
MAX_PAYLOAD_DEPTH = 32
#: The most entries (or keys, or lanes) one page of a listing holds.
MAX_PAGE = 1_000
#: Entry ids are PostgreSQL bigints.
MAX_ID = 2**63 - 1
#: The oldest age a listing filters on: a century, in seconds.
MAX_AGE_S = 100 * 365.25 * 86_400


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


def check_text(value: str | None, field_name: str, *, limit: int = MAX_REASON_LENGTH) -> str | None:
    """Free text an operator types (a reason): PostgreSQL cannot store a NUL in it."""
    if value is None:
        return None
    if len(value) > limit:
        raise InvalidInput(f"must be at most {limit} characters", field=field_name)
    if "\x00" in value:
        raise InvalidInput("must not contain NUL characters", field=field_name)
    return value


def lane_name(value: object, field_name: str = "lane") -> str:
    """A lane's name as operators and modules type it, refused when it cannot be one."""
    name = _name(value, field_name, limit=MAX_NAME_LENGTH)
    assert name is not None
    return name


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def payload_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in a JSON text (0 for a scalar), counted
    as the API's body limit counts it."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub('""', text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


#: One encoder for every payload: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode_payload(payload: Any, *, field_name: str, max_bytes: int) -> str:
    """The payload as JSON text, refused if it is not JSON, larger than allowed, or
    nested deeper than MAX_PAYLOAD_DEPTH."""
    try:
        text = _ENCODER.encode(payload)
    except RecursionError:
        raise InvalidInput(
            f"nests too deep; at most {MAX_PAYLOAD_DEPTH} levels are accepted", field=field_name
        ) from None
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"is not JSON: {exc}", field=field_name) from exc
    # Fewer brackets than the limit, strings included, cannot nest deeper: the common
    # case costs two counts, not a scan.
    if text.count("[") + text.count("{") > MAX_PAYLOAD_DEPTH:
        depth = payload_depth(text)
        if depth > MAX_PAYLOAD_DEPTH:
            raise InvalidInput(
                f"nests {depth} deep; at most {MAX_PAYLOAD_DEPTH} levels are accepted",
                field=field_name,
            )
    # A code point is at most 4 bytes of UTF-8: most payloads need no encoding to tell.
    if len(text) * 4 > max_bytes and (size := len(text.encode())) > max_bytes:
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
    """Validate every entry before any is written: one bad entry enqueues nothing.

    The hot path of a bulk enqueue: a lane or kind repeated through the batch is checked
    once, and an entry's field name (`entries[7].payload`) is spelled out only for the
    error that names it."""
    batch = EncodedBatch([], [], [], [], [], [], [], [])
    seen: dict[tuple[str, str], int] = {}
    checked: set[str] = set()  # lanes and kinds already found valid
    for index, entry in enumerate(entries):
        try:
            lane, kind = entry.lane, entry.kind
            if type(lane) is not str or lane not in checked:
                _name(lane, "lane", limit=MAX_NAME_LENGTH)
                checked.add(lane)
            if type(kind) is not str or kind not in checked:
                _name(kind, "kind", limit=MAX_NAME_LENGTH)
                checked.add(kind)
            key = entry.key
            if key is not None:
                _name(key, "key", limit=MAX_KEY_LENGTH)
            dedup = entry.dedup_key
            if dedup is not None:
                _name(dedup, "dedup_key", limit=MAX_KEY_LENGTH)
            if entry.not_before is not None:
                _instant(entry.not_before, "not_before")
            limit = (
                max_payload_bytes if isinstance(max_payload_bytes, int) else max_payload_bytes[lane]
            )
            payload = encode_payload(entry.payload, field_name="payload", max_bytes=limit)
        except InvalidInput as exc:
            where = f"entries[{index}]" if len(entries) > 1 else "entry"
            raise InvalidInput(exc.reason, field=f"{where}.{exc.field}") from exc.__cause__
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


def encode_single(entry: NewEntry, max_payload_bytes: int) -> str:
    """encode_batch for one entry with no key, no dedup key and no not_before (the
    caller checked): the same checks and errors, none of a batch's bookkeeping."""
    try:
        _name(entry.lane, "lane", limit=MAX_NAME_LENGTH)
        _name(entry.kind, "kind", limit=MAX_NAME_LENGTH)
        return encode_payload(entry.payload, field_name="payload", max_bytes=max_payload_bytes)
    except InvalidInput as exc:
        raise InvalidInput(exc.reason, field=f"entry.{exc.field}") from exc.__cause__


def _instant(value: datetime, field_name: str) -> None:
    """A time that PostgreSQL stores and Python reads back: zoned, and a UTC instant
    within Python's years 1-9999 (0001-01-01 at +14:00 is not one)."""
    if value.tzinfo is None:
        raise InvalidInput("must carry a time zone", field=field_name)
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput("is out of range (years 1 to 9999, in UTC)", field=field_name) from None


def check_owner(owner: str) -> str:
    """A lane's owner is a module's name (the same rule as journal.lanes' check)."""
    if not _OWNER.fullmatch(owner):
        raise InvalidInput(f"{owner!r} is not a module's name", field="owner")
    return owner


class Lane(BaseModel):
    """A declared lane: who consumes it, its stored overrides, who declared and changed it."""

    model_config = ConfigDict(frozen=True)

    lane: str
    #: The module that consumes the lane ('provisioning', 'billing', ...), or 'journal'.
    owner: str
    #: The overrides stored for the lane; the effective policy is the defaults with these.
    settings: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


# -- what an operator sees (P10) ---------------------------------------------------------


@dataclass(frozen=True)
class EntryFilter:
    """Which entries `journal list` shows: any of lane, state, key, age, last error code."""

    lane: str | None = None
    state: str | None = None
    key: str | None = None
    older_than_s: float | None = None
    error_code: str | None = None
    after_id: int = 0
    limit: int = 100

    def checked(self) -> EntryFilter:
        if self.lane is not None:
            lane_name(self.lane)
        if self.state is not None and self.state not in set(EntryState):
            known = ", ".join(EntryState)
            raise InvalidInput(f"unknown state {self.state!r} (known: {known})", field="state")
        _name(self.key, "key", optional=True, limit=MAX_KEY_LENGTH)
        _name(self.error_code, "error_code", optional=True, limit=MAX_NAME_LENGTH)
        if self.older_than_s is not None and not 0 <= self.older_than_s <= MAX_AGE_S:
            # NaN fails this too.
            raise InvalidInput(f"must be between 0 and {MAX_AGE_S:.0f}", field="older_than_s")
        if not 0 <= self.after_id <= MAX_ID:
            raise InvalidInput(f"must be between 0 and {MAX_ID}", field="after_id")
        check_limit(self.limit)
        return self


#: Entries one bulk action changes at most (one statement, one transaction).
MAX_BULK = 100_000


class BulkAction(StrEnum):
    """An operator's action on many entries at once, and the states it applies to."""

    RETRY = "retry"
    PARK = "park"
    DISCARD = "discard"

    @property
    def from_states(self) -> tuple[EntryState, ...]:
        """Retry: parked and backing-off entries; park: those waiting or ready; discard:
        any not in flight and not finished (as the one-entry actions)."""
        return {
            BulkAction.RETRY: (EntryState.PARKED, EntryState.READY),
            BulkAction.PARK: (EntryState.WAITING, EntryState.READY),
            BulkAction.DISCARD: (EntryState.WAITING, EntryState.READY, EntryState.PARKED),
        }[self]

    @property
    def to_state(self) -> EntryState:
        """The state it leaves (a retry: ready, or waiting behind its key's head)."""
        return {
            BulkAction.RETRY: EntryState.READY,
            BulkAction.PARK: EntryState.PARKED,
            BulkAction.DISCARD: EntryState.DISCARDED,
        }[self]


@dataclass(frozen=True)
class BulkFilter:
    """Which entries of one lane a bulk action selects: any of key, age (older than, in
    seconds since enqueued) and last error code; at most `limit`, oldest first."""

    lane: str
    key: str | None = None
    older_than_s: float | None = None
    error_code: str | None = None
    limit: int = MAX_BULK

    def checked(self) -> BulkFilter:
        lane_name(self.lane)
        _name(self.key, "key", optional=True, limit=MAX_KEY_LENGTH)
        _name(self.error_code, "error_code", optional=True, limit=MAX_NAME_LENGTH)
        if self.older_than_s is not None and not 0 <= self.older_than_s <= MAX_AGE_S:
            raise InvalidInput(f"must be between 0 and {MAX_AGE_S:.0f}", field="older_than_s")
        if not 1 <= self.limit <= MAX_BULK:
            raise InvalidInput(f"must be between 1 and {MAX_BULK}", field="limit")
        return self

    def described(self) -> dict[str, Any]:
        """The selection as the audit keeps it."""
        return {
            "key": self.key,
            "older_than_s": self.older_than_s,
            "error_code": self.error_code,
            "limit": self.limit,
        }


class BulkResult(BaseModel):
    """What a bulk action selected (`matched`) and changed (none in a dry run)."""

    action: BulkAction
    lane: str
    dry_run: bool
    matched: int = Field(description="Entries the selection holds now (all of them)")
    changed: int = Field(description="Entries changed (at most the limit; 0 in a dry run)")
    entry_ids: list[int] = Field(description="The entries changed, oldest first")


def check_limit(limit: int, field_name: str = "limit") -> int:
    """A page size: 1 to MAX_PAGE."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"must be between 1 and {MAX_PAGE}", field=field_name)
    return limit


def check_id(entry_id: int, field_name: str = "id") -> int:
    """An entry id as a caller names it: a positive bigint."""
    if not 1 <= entry_id <= MAX_ID:
        raise InvalidInput(f"must be between 1 and {MAX_ID}", field=field_name)
    return entry_id


class EntryError(BaseModel):
    """One failed attempt, as journal.fail and the reaper record it."""

    attempt: int
    code: str
    message: str
    at: datetime
    #: False when the failure gave its attempt back (the target could not be reached).
    counted: bool = True


class EntryRecord(BaseModel):
    """One entry, every column: what `show` and the operator's actions work on."""

    id: int
    lane: str
    key: str | None
    kind: str
    payload: Any
    state: EntryState
    not_before: datetime
    attempts: int
    lease_token: uuid.UUID | None
    lease_expires_at: datetime | None
    dedup_key: str | None
    errors: list[EntryError]
    created_at: datetime
    created_by: str
    taken_at: datetime | None
    finished_at: datetime | None


class AuditRecord(BaseModel):
    """An operator's action on an entry: who, when, why, and the entry before and after."""

    at: datetime
    actor: str
    action: str
    reason: str | None
    before: Any
    after: Any


class EntryDetail(EntryRecord):
    """An entry with the operator actions taken on it, oldest first."""

    audit: list[AuditRecord]


class EntrySummary(BaseModel):
    """A row of `journal list`: an entry with its last error instead of all of them."""

    id: int
    lane: str
    key: str | None
    kind: str
    state: EntryState
    attempts: int
    not_before: datetime
    created_at: datetime
    finished_at: datetime | None
    dedup_key: str | None
    last_error: EntryError | None
    payload: Any


class BlockedKey(BaseModel):
    """A key whose head is parked or failing: a contract an operator should look at."""

    lane: str
    key: str
    #: The key's unfinished entries, head included.
    unfinished: int
    head_id: int
    state: EntryState
    attempts: int
    last_error: EntryError | None
    created_at: datetime


class StateCount(BaseModel):
    lane: str
    state: EntryState
    entries: int
    #: Age of the lane's oldest entry in this state.
    oldest_age_s: float | None


class Counts(BaseModel):
    """Entries by lane and state, and entries finished per second per lane lately."""

    by_state: list[StateCount]
    throughput_per_s: dict[str, float]
