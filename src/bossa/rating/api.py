"""HTTP routes of rating: usage records (CDRs) through the API, next to the inbox.

Each route declares its permission (`rating.intake` to send usage records), parses a
typed body and calls one service function. A request is one batch, rated exactly as a
file of the same lines would be: the same checks, the same dedupe (the same records sent
twice are `repeated`; a record key rated before is not charged again). Every field is
bounded here, so bad input is a 422 naming `records.N.field`, never a 500; the body's
size is bounded by BOSSA_API_MAX_BODY_BYTES and the records by MAX_API_RECORDS.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from bossa.access import Permission
from bossa.access.api import PrincipalDep, guarded
from bossa.errors import InvalidInput
from bossa.rating import service
from bossa.rating.models import MAX_API_RECORDS, MAX_DURATION_S, BatchReport
from bossa.runtime import Runtime

__all__ = ["router"]

router = APIRouter(prefix="/rating", tags=["rating"])


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


def _local_second(value: datetime) -> datetime:
    if value.tzinfo is not None:
        raise ValueError("a local time without a zone (YYYY-MM-DD HH:MM:SS), as CDRs carry")
    if value.microsecond:
        raise ValueError("whole seconds")
    return value


class UsageRecord(BaseModel):
    """One usage record, the columns of a CDR file."""

    model_config = ConfigDict(extra="forbid")

    record_key: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    msisdn: str = Field(pattern=r"^[0-9]{1,15}$")
    destination: str = Field(pattern=r"^[0-9]{1,32}$")
    start: Annotated[datetime, AfterValidator(_local_second)]
    duration: int = Field(ge=0, le=MAX_DURATION_S, description="whole seconds")


class UsageBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[UsageRecord] = Field(min_length=1, max_length=MAX_API_RECORDS)


class _Intake:
    """The API process's pipeline: one engine, one batch at a time (it is not
    thread-safe, and batches of one pipeline instance are serialised anyway)."""

    def __init__(self) -> None:
        self.pipeline: service.Pipeline | None = None
        self.lock = asyncio.Lock()


_INTAKE = _Intake()


@router.post("/usage", **guarded(Permission.RATING_INTAKE))
async def send_usage(body: UsageBatch, runtime: RuntimeDep, principal: PrincipalDep) -> BatchReport:
    """Rate usage records now, as one batch (docs/sync-and-rating.md, "CDRs through the
    API"). Records that cannot be rated go to suspense with their reason; a record key
    rated before is listed in `errors` and not charged again."""
    seen: dict[str, int] = {}
    for i, record in enumerate(body.records):
        if record.record_key in seen:
            raise InvalidInput(
                f"the same record key as records.{seen[record.record_key]}",
                field=f"records.{i}.record_key",
            )
        seen[record.record_key] = i
    rows = [
        (r.record_key, r.msisdn, r.destination, f"{r.start:%Y-%m-%d %H:%M:%S}", str(r.duration))
        for r in body.records
    ]
    async with _INTAKE.lock:
        if _INTAKE.pipeline is None:
            _INTAKE.pipeline = service.Pipeline.open()
        return await service.rate_records(
            runtime.pool, _INTAKE.pipeline, rows, actor=principal.name, source="api"
        )
