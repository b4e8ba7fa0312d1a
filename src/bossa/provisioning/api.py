"""HTTP routes of provisioning: orders (with idempotency keys), divisions, plans, buffers
and the operator's hand on buffered commands, the log.

Each route parses a typed body, calls one service function and returns a typed model;
a body that fails validation gets the CLI's text (bossa.api.app renders it).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, Field

from bossa.journal import EntryState, Journal
from bossa.provisioning import service
from bossa.provisioning.lanes import Deliverer
from bossa.provisioning.models import (
    BufferedCommand,
    BufferRow,
    DivisionChange,
    DivisionView,
    LaneState,
    LogRow,
    Order,
    OrderRequest,
    PlanView,
)

__all__ = ["router"]

router = APIRouter(prefix="/provisioning", tags=["provisioning"])


def _journal(request: Request) -> Journal:
    journal: Journal = request.app.state.runtime.journal
    return journal


def _deliverer(request: Request) -> Deliverer:
    deliverer: Deliverer = request.app.state.runtime.deliverer
    return deliverer


JournalDep = Annotated[Journal, Depends(_journal)]
DelivererDep = Annotated[Deliverer, Depends(_deliverer)]
Limit = Annotated[int, Query(ge=1, le=10_000)]


class Acting(BaseModel):
    actor: str = Field(min_length=1, description="Who acts (audited).")


class DivisionBody(DivisionChange, Acting):
    pass


class Reasoned(Acting):
    reason: str | None = None


class Discarding(Acting):
    reason: str = Field(min_length=1, description="Kept in the audit.")


class BindsBody(Reasoned):
    bind_data: dict[str, str | int | float | bool | None] = Field(
        description="Only binds the command has; its command text cannot be edited."
    )


class PlanBody(Acting):
    command: Any = Field(description="SQL text, or the template for the division's type")
    position: int = 0
    bind_method: bool = True


class EntryStateBody(BaseModel):
    entry_id: int
    state: EntryState


# -- orders ----------------------------------------------------------------------------


@router.post("/orders", status_code=201)
async def post_order(
    body: OrderRequest,
    journal: JournalDep,
    deliverer: DelivererDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Order:
    """Submit an order; with an Idempotency-Key header a replay returns the first result."""
    return Order.model_validate(
        await service.submit(
            journal, deliverer, body, channel="api", idempotency_key=idempotency_key
        )
    )


@router.get("/orders/{wo_no}")
async def get_order(wo_no: str, journal: JournalDep) -> Order:
    return await service.order(journal.pool, wo_no)


# -- divisions -------------------------------------------------------------------------


@router.get("/divisions")
async def get_divisions(journal: JournalDep) -> list[DivisionView]:
    """The division table (P7), credentials masked."""
    return await service.list_divisions(journal.pool)


@router.get("/divisions/{division}")
async def get_division(division: str, journal: JournalDep) -> DivisionView:
    return await service.show_division(journal.pool, division)


@router.post("/divisions/{division}", status_code=201)
async def post_division(division: str, body: DivisionBody, journal: JournalDep) -> DivisionView:
    change = DivisionChange.model_validate(body.model_dump(exclude={"actor"}))
    return await service.add_division(journal.pool, division, change, actor=body.actor)


@router.patch("/divisions/{division}")
async def patch_division(division: str, body: DivisionBody, journal: JournalDep) -> DivisionView:
    change = DivisionChange.model_validate(body.model_dump(exclude={"actor"}))
    return await service.update_division(journal.pool, division, change, actor=body.actor)


@router.post("/divisions/{division}/pause")
async def pause(division: str, body: Acting, journal: JournalDep) -> LaneState:
    """Hold the division's backup daemon; orders buffer its commands meanwhile."""
    return await service.pause(journal, division, actor=body.actor)


@router.post("/divisions/{division}/resume")
async def resume(division: str, body: Acting, journal: JournalDep) -> LaneState:
    return await service.resume(journal, division, actor=body.actor)


# -- plans -----------------------------------------------------------------------------


@router.get("/plans")
async def get_plans(journal: JournalDep) -> list[PlanView]:
    return await service.list_plans(journal.pool)


@router.put("/plans/{product}/{intf_code}/{division}", status_code=204)
async def put_plan_command(
    product: str, intf_code: str, division: str, body: PlanBody, journal: JournalDep
) -> None:
    """Add or replace a division's command in a product's plan for an order type."""
    await service.add_plan_command(
        journal.pool,
        product,
        intf_code,
        division,
        body.command,
        position=body.position,
        bind_method=body.bind_method,
        actor=body.actor,
    )


# -- buffers (P8-P10) ------------------------------------------------------------------


@router.get("/buffers/{division}")
async def buffer(
    division: str,
    journal: JournalDep,
    state: str | None = None,
    older_than_s: float | None = None,
    limit: Limit = 100,
) -> list[BufferRow]:
    """A division's buffer with the seed's columns, oldest first."""
    return await service.buffer(
        journal.pool, division, state=state, older_than_s=older_than_s, limit=limit
    )


@router.get("/commands/{entry_id}")
async def get_command(entry_id: int, journal: JournalDep) -> BufferedCommand:
    """One buffered command with its error history and the operator actions on it."""
    return await service.buffered_command(journal, entry_id)


@router.patch("/commands/{entry_id}/binds")
async def patch_binds(entry_id: int, body: BindsBody, journal: JournalDep) -> BufferedCommand:
    """Change a buffered command's bind values (to fix what made it fail)."""
    return await service.edit_binds(
        journal, entry_id, body.bind_data, actor=body.actor, reason=body.reason
    )


@router.post("/commands/{entry_id}/retry")
async def retry(entry_id: int, body: Reasoned, journal: JournalDep) -> EntryStateBody:
    state = await service.retry(journal, entry_id, actor=body.actor, reason=body.reason)
    return EntryStateBody(entry_id=entry_id, state=state)


@router.post("/commands/{entry_id}/park")
async def park(entry_id: int, body: Reasoned, journal: JournalDep) -> EntryStateBody:
    state = await service.park(journal, entry_id, actor=body.actor, reason=body.reason)
    return EntryStateBody(entry_id=entry_id, state=state)


@router.post("/commands/{entry_id}/discard")
async def discard(entry_id: int, body: Discarding, journal: JournalDep) -> EntryStateBody:
    state = await service.discard(journal, entry_id, actor=body.actor, reason=body.reason)
    return EntryStateBody(entry_id=entry_id, state=state)


# -- the log (P11) ---------------------------------------------------------------------


@router.get("/log")
async def get_log(
    journal: JournalDep,
    sa_id: str | None = None,
    wo_no: str | None = None,
    limit: Limit = 100,
) -> list[LogRow]:
    """Successful provisioning, per contract or work order."""
    return await service.delivery_log(journal.pool, sa_id=sa_id, wo_no=wo_no, limit=limit)
