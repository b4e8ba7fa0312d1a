"""HTTP routes of the journal: the operator's actions and reports (P10).

Each route declares its permission (`journal.read` to look, `journal.operate` to change
anything), parses a typed body, calls one function of `service` and returns a typed
model, so /openapi.json documents every body. The actor of every change is the caller's
credential, never a name from the body. Every text, id and page size is bounded here, so
a value PostgreSQL could not hold is a 422 naming its field, not a driver error.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from bossa.access import Permission
from bossa.access.api import PrincipalDep, guarded
from bossa.journal import Journal, service
from bossa.journal.models import (
    MAX_AGE_S,
    MAX_ID,
    MAX_KEY_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PAGE,
    MAX_REASON_LENGTH,
    BlockedKey,
    Counts,
    EntryDetail,
    EntryFilter,
    EntryState,
    EntrySummary,
    Lane,
    NewEntry,
)
from bossa.journal.settings import LanePolicy

__all__ = ["router"]

router = APIRouter(prefix="/journal", tags=["journal"])


def _journal(request: Request) -> Journal:
    journal: Journal = request.app.state.runtime.journal
    return journal


JournalDep = Annotated[Journal, Depends(_journal)]


def _no_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise PydanticCustomError("nul", "must not contain NUL characters")
    return value


#: A lane's, kind's or error code's name as it is typed.
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH), AfterValidator(_no_nul)]
#: An ordering or dedup key.
Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY_LENGTH), AfterValidator(_no_nul)]
Reason = Annotated[str, Field(max_length=MAX_REASON_LENGTH), AfterValidator(_no_nul)]
EntryId = Annotated[int, Path(ge=1, le=MAX_ID, description="The entry's id")]
LanePath = Annotated[
    str,
    Path(min_length=1, max_length=MAX_NAME_LENGTH, description="A declared lane"),
    AfterValidator(_no_nul),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")]


class _Body(BaseModel):
    # An unknown field is refused rather than ignored: a client still sending `actor`
    # learns that the credential names the actor now.
    model_config = ConfigDict(extra="forbid")


class EnqueueBody(_Body):
    # Checked by the service (empty, too long, NUL), which names them `entry.lane`, ...
    # as the CLI and the Python API do.
    lane: str = Field(
        description="Lane (who consumes); declared for the journal if new; no NUL byte",
        json_schema_extra={"minLength": 1, "maxLength": MAX_NAME_LENGTH},
    )
    kind: str = Field(
        description="Kind (which handler); no NUL byte",
        json_schema_extra={"minLength": 1, "maxLength": MAX_NAME_LENGTH},
    )
    payload: Any = Field(description="Any JSON value (nested at most 32 deep)")
    key: str | None = Field(
        default=None, description="Ordering key (e.g. a contract's SA_ID), 1-500 characters"
    )
    dedup_key: str | None = Field(default=None, description="Idempotency key, 1-500 characters")


class EnqueuedReply(BaseModel):
    id: int
    #: False when the dedup key matched an unfinished entry, whose id this is.
    created: bool


class ActionBody(_Body):
    reason: Reason | None = Field(default=None, description="Why (kept in the audit)")


class DiscardBody(_Body):
    reason: Reason = Field(description="Why (required, kept in the audit)")


class EditBody(_Body):
    payload: Any = Field(description="The new payload, any JSON value (nested at most 32 deep)")
    reason: Reason | None = Field(default=None, description="Why (kept in the audit)")


class EntryStateReply(BaseModel):
    id: int
    state: EntryState


def _settings_schema() -> dict[str, Any]:
    """The lane settings and their ranges, documented in /openapi.json; checked by the
    service against the lane's stored overrides, which names the lane in its refusals."""
    properties = {
        name: {k: v for k, v in spec.items() if k not in ("default", "title")}
        for name, spec in LanePolicy.model_json_schema()["properties"].items()
    }
    return {"properties": properties, "additionalProperties": False}


class LaneBody(_Body):
    settings: dict[str, Any] = Field(
        description="Overrides to store, e.g. {'max_attempts': 5}; each within its range"
        " (docs/journal.md); backoff_max_ms at least backoff_base_ms",
        json_schema_extra=_settings_schema(),
    )


@router.post("/entries", status_code=201, **guarded(Permission.JOURNAL_OPERATE))
async def enqueue(body: EnqueueBody, journal: JournalDep, principal: PrincipalDep) -> EnqueuedReply:
    """Enqueue one entry on a lane of the journal's own (not on another module's lane)."""
    result = await service.enqueue(
        journal,
        NewEntry(body.lane, body.kind, body.payload, key=body.key, dedup_key=body.dedup_key),
        actor=principal.actor,
    )
    return EnqueuedReply(id=result.id, created=result.created)


@router.get("/entries", **guarded(Permission.JOURNAL_READ))
async def list_entries(
    journal: JournalDep,
    lane: Annotated[Name | None, Query(description="Only this declared lane")] = None,
    state: Annotated[
        Name | None, Query(description="waiting, ready, taken, parked, done or discarded")
    ] = None,
    key: Annotated[Key | None, Query(description="Only this key")] = None,
    older_than_s: Annotated[
        float | None,
        Query(ge=0, le=MAX_AGE_S, allow_inf_nan=False, description="Only entries older (s)"),
    ] = None,
    error_code: Annotated[Name | None, Query(description="Only with this last error")] = None,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID, description="Entries after this id")] = 0,
    limit: Limit = 100,
) -> list[EntrySummary]:
    """Entries, oldest first, a page at a time."""
    where = EntryFilter(lane, state, key, older_than_s, error_code, after_id, limit)
    return await service.list_entries(journal, where)


@router.get("/entries/{entry_id}", **guarded(Permission.JOURNAL_READ))
async def show(entry_id: EntryId, journal: JournalDep) -> EntryDetail:
    """One entry with its error history and audit."""
    return await service.show(journal, entry_id)


@router.post("/entries/{entry_id}/retry", **guarded(Permission.JOURNAL_OPERATE))
async def retry(
    entry_id: EntryId, body: ActionBody, journal: JournalDep, principal: PrincipalDep
) -> EntryStateReply:
    """Make a parked or backing-off entry due now, with fresh attempts."""
    state = await service.retry(journal, entry_id, actor=principal.actor, reason=body.reason)
    return EntryStateReply(id=entry_id, state=state)


@router.post("/entries/{entry_id}/park", **guarded(Permission.JOURNAL_OPERATE))
async def park(
    entry_id: EntryId, body: ActionBody, journal: JournalDep, principal: PrincipalDep
) -> EntryStateReply:
    """Park an entry; it keeps blocking its key."""
    state = await service.park(journal, entry_id, actor=principal.actor, reason=body.reason)
    return EntryStateReply(id=entry_id, state=state)


@router.post("/entries/{entry_id}/discard", **guarded(Permission.JOURNAL_OPERATE))
async def discard(
    entry_id: EntryId, body: DiscardBody, journal: JournalDep, principal: PrincipalDep
) -> EntryStateReply:
    """Give up on an entry (a reason is required); its key moves on."""
    state = await service.discard(journal, entry_id, actor=principal.actor, reason=body.reason)
    return EntryStateReply(id=entry_id, state=state)


@router.put("/entries/{entry_id}/payload", **guarded(Permission.JOURNAL_OPERATE))
async def edit(
    entry_id: EntryId, body: EditBody, journal: JournalDep, principal: PrincipalDep
) -> EntryStateReply:
    """Replace the payload of an entry of the journal's own lanes that is not in flight."""
    state = await service.edit(
        journal, entry_id, body.payload, actor=principal.actor, reason=body.reason
    )
    return EntryStateReply(id=entry_id, state=state)


@router.get("/blocked-keys", **guarded(Permission.JOURNAL_READ))
async def blocked(
    journal: JournalDep,
    lane: Annotated[Name | None, Query(description="Only this declared lane")] = None,
    limit: Limit = 100,
) -> list[BlockedKey]:
    """Keys whose head is parked or failing, oldest first."""
    return await service.blocked_keys(journal, lane, limit)


@router.get("/stats", **guarded(Permission.JOURNAL_READ))
async def stats(journal: JournalDep) -> Counts:
    """Entries by lane and state, oldest age, recent throughput."""
    return await service.counts(journal)


@router.get("/lanes", **guarded(Permission.JOURNAL_READ))
async def lanes(
    journal: JournalDep,
    after: Annotated[Name | None, Query(description="Lanes named after this one")] = None,
    limit: Limit = MAX_PAGE,
) -> list[Lane]:
    """Declared lanes by name, with their owner and stored overrides."""
    return await service.lanes(journal, after=after or "", limit=limit)


@router.get("/lanes/{lane}", **guarded(Permission.JOURNAL_READ))
async def lane_policy(lane: LanePath, journal: JournalDep) -> LanePolicy:
    """A declared lane's effective policy."""
    return await service.lane_policy(journal, lane)


@router.patch("/lanes/{lane}", **guarded(Permission.JOURNAL_OPERATE))
async def set_lane(
    lane: LanePath, body: LaneBody, journal: JournalDep, principal: PrincipalDep
) -> LanePolicy:
    """Change a declared lane's overrides; a value out of its range is refused, naming it."""
    return await service.set_lane_policy(journal, lane, body.settings, actor=principal.actor)
