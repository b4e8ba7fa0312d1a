"""HTTP routes of the journal: the operator's actions and reports (P10)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from bossa.journal import operator
from bossa.journal.models import NewEntry
from bossa.journal.store import Journal

__all__ = ["router"]

router = APIRouter(prefix="/journal", tags=["journal"])


def _journal(request: Request) -> Journal:
    journal: Journal = request.app.state.runtime.journal
    return journal


JournalDep = Annotated[Journal, Depends(_journal)]


class EnqueueBody(BaseModel):
    lane: str
    kind: str
    payload: Any
    key: str | None = None
    dedup_key: str | None = None


class ActionBody(BaseModel):
    actor: str = Field(description="Who does this; kept in the audit")
    reason: str | None = None


class EditBody(ActionBody):
    payload: Any


class LaneBody(BaseModel):
    actor: str
    settings: dict[str, Any]


@router.post("/entries", status_code=201)
async def enqueue(body: EnqueueBody, journal: JournalDep) -> dict[str, Any]:
    result = await journal.enqueue_one(
        NewEntry(body.lane, body.kind, body.payload, key=body.key, dedup_key=body.dedup_key)
    )
    return {"id": result.id, "created": result.created}


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
) -> list[dict[str, Any]]:
    where = operator.EntryFilter(lane, state, key, older_than_s, error_code, after_id, limit)
    return await operator.list_entries(journal.pool, where)


@router.get("/entries/{entry_id}")
async def show(entry_id: int, journal: JournalDep) -> dict[str, Any]:
    return await operator.show(journal.pool, entry_id)


@router.post("/entries/{entry_id}/retry")
async def retry(entry_id: int, body: ActionBody, journal: JournalDep) -> dict[str, Any]:
    state = await operator.retry(journal, entry_id, actor=body.actor, reason=body.reason)
    return {"id": entry_id, "state": state}


@router.post("/entries/{entry_id}/park")
async def park(entry_id: int, body: ActionBody, journal: JournalDep) -> dict[str, Any]:
    await operator.park(journal, entry_id, actor=body.actor, reason=body.reason)
    return {"id": entry_id, "state": "parked"}


@router.post("/entries/{entry_id}/discard")
async def discard(entry_id: int, body: ActionBody, journal: JournalDep) -> dict[str, Any]:
    await operator.discard(journal, entry_id, actor=body.actor, reason=body.reason or "")
    return {"id": entry_id, "state": "discarded"}


@router.put("/entries/{entry_id}/payload")
async def edit(entry_id: int, body: EditBody, journal: JournalDep) -> dict[str, Any]:
    await operator.edit(journal, entry_id, body.payload, actor=body.actor, reason=body.reason)
    return {"id": entry_id}


@router.get("/blocked-keys")
async def blocked(
    journal: JournalDep, lane: str | None = None, limit: Annotated[int, Query(ge=1)] = 100
) -> list[dict[str, Any]]:
    return await operator.blocked_keys(journal.pool, lane, limit)


@router.get("/stats")
async def stats(journal: JournalDep) -> dict[str, Any]:
    return await operator.counts(journal.pool)


@router.get("/lanes/{lane}")
async def lane_policy(lane: str, journal: JournalDep) -> dict[str, Any]:
    return (await journal.policy(lane, fresh=True)).model_dump()


@router.patch("/lanes/{lane}")
async def set_lane(lane: str, body: LaneBody, journal: JournalDep) -> dict[str, Any]:
    policy = await journal.set_policy(lane, body.settings, actor=body.actor)
    return policy.model_dump()
