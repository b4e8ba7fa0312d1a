"""HTTP routes of the journal: the operator's actions and reports (P10).

Each route parses a typed body, calls one function of `service` and returns a typed
model, so /openapi.json documents every body.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from bossa.journal import Journal, service
from bossa.journal.models import (
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


class EnqueueBody(BaseModel):
    lane: str = Field(description="Lane (who consumes); declared for the journal if new")
    kind: str = Field(description="Kind (which handler)")
    payload: Any = Field(description="Any JSON value")
    key: str | None = Field(default=None, description="Ordering key (e.g. a contract's SA_ID)")
    dedup_key: str | None = Field(default=None, description="Idempotency key")


class EnqueuedReply(BaseModel):
    id: int
    #: False when the dedup key matched an unfinished entry, whose id this is.
    created: bool


class ActionBody(BaseModel):
    actor: str = Field(description="Who does this; kept in the audit")
    reason: str | None = None


class EditBody(ActionBody):
    payload: Any = Field(description="The new payload, any JSON value")


class EntryStateReply(BaseModel):
    id: int
    state: EntryState


class LaneBody(BaseModel):
    actor: str = Field(description="Who does this; kept in the audit")
    settings: dict[str, Any] = Field(description="Overrides to store, e.g. {'max_attempts': 5}")


@router.post("/entries", status_code=201)
async def enqueue(body: EnqueueBody, journal: JournalDep) -> EnqueuedReply:
    result = await service.enqueue(
        journal,
        NewEntry(body.lane, body.kind, body.payload, key=body.key, dedup_key=body.dedup_key),
    )
    return EnqueuedReply(id=result.id, created=result.created)


@router.get("/entries")
async def list_entries(
    journal: JournalDep,
    lane: str | None = None,
    state: str | None = None,
    key: str | None = None,
    older_than_s: float | None = None,
    error_code: str | None = None,
    after_id: int = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[EntrySummary]:
    where = EntryFilter(lane, state, key, older_than_s, error_code, after_id, limit)
    return await service.list_entries(journal, where)


@router.get("/entries/{entry_id}")
async def show(entry_id: int, journal: JournalDep) -> EntryDetail:
    return await service.show(journal, entry_id)


@router.post("/entries/{entry_id}/retry")
async def retry(entry_id: int, body: ActionBody, journal: JournalDep) -> EntryStateReply:
    state = await service.retry(journal, entry_id, actor=body.actor, reason=body.reason)
    return EntryStateReply(id=entry_id, state=state)


@router.post("/entries/{entry_id}/park")
async def park(entry_id: int, body: ActionBody, journal: JournalDep) -> EntryStateReply:
    state = await service.park(journal, entry_id, actor=body.actor, reason=body.reason)
    return EntryStateReply(id=entry_id, state=state)


@router.post("/entries/{entry_id}/discard")
async def discard(entry_id: int, body: ActionBody, journal: JournalDep) -> EntryStateReply:
    state = await service.discard(journal, entry_id, actor=body.actor, reason=body.reason or "")
    return EntryStateReply(id=entry_id, state=state)


@router.put("/entries/{entry_id}/payload")
async def edit(entry_id: int, body: EditBody, journal: JournalDep) -> EntryStateReply:
    state = await service.edit(
        journal, entry_id, body.payload, actor=body.actor, reason=body.reason
    )
    return EntryStateReply(id=entry_id, state=state)


@router.get("/blocked-keys")
async def blocked(
    journal: JournalDep, lane: str | None = None, limit: Annotated[int, Query(ge=1)] = 100
) -> list[BlockedKey]:
    return await service.blocked_keys(journal, lane, limit)


@router.get("/stats")
async def stats(journal: JournalDep) -> Counts:
    return await service.counts(journal)


@router.get("/lanes")
async def lanes(journal: JournalDep) -> list[Lane]:
    return await service.lanes(journal)


@router.get("/lanes/{lane}")
async def lane_policy(lane: str, journal: JournalDep) -> LanePolicy:
    return await service.lane_policy(journal, lane)


@router.patch("/lanes/{lane}")
async def set_lane(lane: str, body: LaneBody, journal: JournalDep) -> LanePolicy:
    return await service.set_lane_policy(journal, lane, body.settings, actor=body.actor)
