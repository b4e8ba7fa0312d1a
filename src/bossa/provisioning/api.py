"""HTTP routes of provisioning: orders (with idempotency keys), divisions, plans, buffers
and the operator's hand on buffered commands, the log.

Each route declares the permission it needs (reading: provisioning.read; orders:
provisioning.order; buffers, pause and resume: provisioning.operate; divisions and
plans: provisioning.configure), parses a typed body, calls one service function and
returns a typed model. The actor of every change is the caller's credential, never a
name in the body; a body that fails validation gets the CLI's text (bossa.api.app
renders it).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from bossa.access.api import PrincipalDep, guarded
from bossa.access.models import Permission
from bossa.journal import BulkAction, EntryState, Journal
from bossa.journal.models import MAX_BULK
from bossa.provisioning import service
from bossa.provisioning.lanes import Deliverer
from bossa.provisioning.models import (
    MAX_POSITION,
    BufferedCommand,
    BufferRow,
    BulkOutcome,
    DivisionChange,
    DivisionView,
    LaneState,
    Line,
    LogRow,
    Order,
    OrderRequest,
    PlanView,
)

__all__ = ["router"]

router = APIRouter(prefix="/provisioning", tags=["provisioning"])

READ = Permission.PROVISIONING_READ
ORDER = Permission.PROVISIONING_ORDER
OPERATE = Permission.PROVISIONING_OPERATE
CONFIGURE = Permission.PROVISIONING_CONFIGURE


def _journal(request: Request) -> Journal:
    journal: Journal = request.app.state.runtime.journal
    return journal


def _deliverer(request: Request) -> Deliverer:
    deliverer: Deliverer = request.app.state.runtime.deliverer
    return deliverer


JournalDep = Annotated[Journal, Depends(_journal)]
DelivererDep = Annotated[Deliverer, Depends(_deliverer)]
Limit = Annotated[int, Query(ge=1, le=10_000, description="Page size")]
EntryId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The command's journal entry")]
Reason = Annotated[Line, Field(min_length=1, max_length=1000)]


class _Body(BaseModel):
    # An unknown field is refused rather than ignored: a client still sending `actor`
    # learns that the credential names the actor now.
    model_config = ConfigDict(extra="forbid")


class DivisionBody(DivisionChange):
    """A division's values; who changes them is the caller's credential."""


class Reasoned(_Body):
    reason: Reason | None = Field(default=None, description="Why (kept in the audit)")


class Discarding(_Body):
    reason: Reason = Field(description="Why (required, kept in the audit)")


class BindsBody(Reasoned):
    bind_data: dict[str, str | int | float | bool | None] = Field(
        description="Only binds the command has; its command text (the plan's) cannot be edited."
    )
    retry: bool = Field(
        default=False,
        description="Also send it again now (a parked command otherwise stays parked)",
    )


class PlanBody(_Body):
    command: Any = Field(description="SQL text, or the template for the division's type")
    position: int = Field(default=0, ge=0, le=MAX_POSITION)
    bind_method: bool = True


class EntryStateBody(BaseModel):
    entry_id: int
    state: EntryState


# -- orders ----------------------------------------------------------------------------


@router.post("/orders", status_code=201, **guarded(ORDER))
async def post_order(
    body: OrderRequest,
    journal: JournalDep,
    deliverer: DelivererDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> Order:
    """Submit an order; with an Idempotency-Key header a replay returns the first result."""
    return Order.model_validate(
        await service.submit(
            journal,
            deliverer,
            body,
            channel="api",
            idempotency_key=idempotency_key,
            actor=principal.actor,
        )
    )


@router.get("/orders/{wo_no}", **guarded(READ))
async def get_order(wo_no: str, journal: JournalDep) -> Order:
    return await service.order(journal.pool, wo_no)


# -- divisions -------------------------------------------------------------------------


@router.get("/divisions", **guarded(READ))
async def get_divisions(journal: JournalDep) -> list[DivisionView]:
    """The division table (P7), credentials masked."""
    return await service.list_divisions(journal.pool)


@router.get("/divisions/{division}", **guarded(READ))
async def get_division(division: str, journal: JournalDep) -> DivisionView:
    return await service.show_division(journal.pool, division)


@router.post("/divisions/{division}", status_code=201, **guarded(CONFIGURE))
async def post_division(
    division: str, body: DivisionBody, journal: JournalDep, principal: PrincipalDep
) -> DivisionView:
    """Add a division: its type and URL are required (the URL's scheme one its adapter
    speaks, with no password: credentials go in `credentials`)."""
    return await service.add_division(journal.pool, division, body, actor=principal.actor)


@router.patch("/divisions/{division}", **guarded(CONFIGURE))
async def patch_division(
    division: str, body: DivisionBody, journal: JournalDep, principal: PrincipalDep
) -> DivisionView:
    return await service.update_division(journal.pool, division, body, actor=principal.actor)


@router.post("/divisions/{division}/pause", **guarded(OPERATE))
async def pause(division: str, journal: JournalDep, principal: PrincipalDep) -> LaneState:
    """Hold the division's backup daemon; orders buffer its commands meanwhile."""
    return await service.pause(journal, division, actor=principal.actor)


@router.post("/divisions/{division}/resume", **guarded(OPERATE))
async def resume(division: str, journal: JournalDep, principal: PrincipalDep) -> LaneState:
    return await service.resume(journal, division, actor=principal.actor)


# -- plans -----------------------------------------------------------------------------


@router.get("/plans", **guarded(READ))
async def get_plans(journal: JournalDep) -> list[PlanView]:
    """Every plan command at its current version."""
    return await service.list_plans(journal.pool)


@router.put("/plans/{product}/{intf_code}/{division}", **guarded(CONFIGURE))
async def put_plan_command(
    product: str,
    intf_code: str,
    division: str,
    body: PlanBody,
    journal: JournalDep,
    principal: PrincipalDep,
) -> PlanView:
    """Add or change a division's command in a product's plan for an order type. A new
    command makes a new version; commands already buffered keep the version they were
    accepted under."""
    return await service.add_plan_command(
        journal.pool,
        product,
        intf_code,
        division,
        body.command,
        position=body.position,
        bind_method=body.bind_method,
        actor=principal.actor,
    )


# -- buffers (P8-P10) ------------------------------------------------------------------


@router.get("/buffers/{division}", **guarded(READ))
async def buffer(
    division: str,
    journal: JournalDep,
    state: Annotated[str | None, Query(max_length=20)] = None,
    older_than_s: Annotated[float | None, Query(ge=0, le=service.MAX_AGE_S)] = None,
    errcode: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    sa_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    limit: Limit = 100,
) -> list[BufferRow]:
    """A division's buffer with every column of the seed's buffers (P8, P9), oldest
    first; by state, age, ERRCODE and contract."""
    return await service.buffer(
        journal.pool,
        division,
        state=state,
        older_than_s=older_than_s,
        errcode=errcode,
        sa_id=sa_id,
        limit=limit,
    )


class BulkBody(_Body):
    action: BulkAction = Field(description="retry, park or discard")
    errcode: Annotated[Line, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="Only commands whose latest failure has this ERRCODE"
    )
    older_than_s: float | None = Field(
        default=None, ge=0, le=service.MAX_AGE_S, description="Buffered longer ago (s)"
    )
    sa_id: Annotated[Line, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="Only this contract's commands"
    )
    limit: int = Field(default=MAX_BULK, ge=1, le=MAX_BULK, description="At most, oldest first")
    dry_run: bool = Field(default=False, description="Count only; change nothing")
    reason: Reason | None = Field(
        default=None, description="Why (required unless a dry run; kept in the audit)"
    )


@router.post("/buffers/{division}/bulk", **guarded(OPERATE))
async def bulk(
    division: str, body: BulkBody, journal: JournalDep, principal: PrincipalDep
) -> BulkOutcome:
    """Retry, park or discard a division's buffered commands by ERRCODE, age and
    contract, at once (set-based, each audited with the reason); `dry_run` counts them."""
    return await service.bulk(
        journal,
        body.action,
        division,
        errcode=body.errcode,
        older_than_s=body.older_than_s,
        sa_id=body.sa_id,
        limit=body.limit,
        dry_run=body.dry_run,
        actor=principal.actor,
        reason=body.reason,
    )


@router.get("/commands/{entry_id}", **guarded(READ))
async def get_command(entry_id: EntryId, journal: JournalDep) -> BufferedCommand:
    """One buffered command with its plan version, error history and operator actions."""
    return await service.buffered_command(journal, entry_id)


@router.patch("/commands/{entry_id}/binds", **guarded(OPERATE))
async def patch_binds(
    entry_id: EntryId, body: BindsBody, journal: JournalDep, principal: PrincipalDep
) -> BufferedCommand:
    """Change a buffered command's bind values (to fix what made it fail)."""
    return await service.edit_binds(
        journal,
        entry_id,
        body.bind_data,
        actor=principal.actor,
        reason=body.reason,
        retry=body.retry,
    )


@router.post("/commands/{entry_id}/retry", **guarded(OPERATE))
async def retry(
    entry_id: EntryId, body: Reasoned, journal: JournalDep, principal: PrincipalDep
) -> EntryStateBody:
    state = await service.retry(journal, entry_id, actor=principal.actor, reason=body.reason)
    return EntryStateBody(entry_id=entry_id, state=state)


@router.post("/commands/{entry_id}/park", **guarded(OPERATE))
async def park(
    entry_id: EntryId, body: Reasoned, journal: JournalDep, principal: PrincipalDep
) -> EntryStateBody:
    state = await service.park(journal, entry_id, actor=principal.actor, reason=body.reason)
    return EntryStateBody(entry_id=entry_id, state=state)


@router.post("/commands/{entry_id}/discard", **guarded(OPERATE))
async def discard(
    entry_id: EntryId, body: Discarding, journal: JournalDep, principal: PrincipalDep
) -> EntryStateBody:
    state = await service.discard(journal, entry_id, actor=principal.actor, reason=body.reason)
    return EntryStateBody(entry_id=entry_id, state=state)


# -- the log (P11) ---------------------------------------------------------------------


@router.get("/log", **guarded(READ))
async def get_log(
    journal: JournalDep,
    sa_id: Annotated[str | None, Query(max_length=64)] = None,
    wo_no: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
) -> list[LogRow]:
    """Successful provisioning, per contract or work order."""
    return await service.delivery_log(journal.pool, sa_id=sa_id, wo_no=wo_no, limit=limit)
