"""HTTP routes of provisioning: orders (with idempotency keys), divisions, buffers, the log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel

from bossa.errors import NotFound
from bossa.journal import Journal
from bossa.provisioning import catalogue
from bossa.provisioning.catalogue import QUERIES
from bossa.provisioning.delivery import Deliverer
from bossa.provisioning.orders import OrderRequest, lane_of, submit
from bossa.provisioning.settings import ProvisioningSettings

__all__ = ["router"]

router = APIRouter(prefix="/provisioning", tags=["provisioning"])


def _journal(request: Request) -> Journal:
    journal: Journal = request.app.state.runtime.journal
    return journal


def _deliverer(request: Request) -> Deliverer:
    state = request.app.state
    if getattr(state, "deliverer", None) is None:
        state.deliverer = Deliverer(state.runtime.pool, ProvisioningSettings())
    deliverer: Deliverer = state.deliverer
    return deliverer


JournalDep = Annotated[Journal, Depends(_journal)]
DelivererDep = Annotated[Deliverer, Depends(_deliverer)]


class DivisionBody(BaseModel):
    actor: str
    server_type: str | None = None
    server_url: str | None = None
    server_ip: str | None = None
    server_port: int | None = None
    server_name: str | None = None
    server_used: bool | None = None
    timeout_ms: int | None = None
    credentials: dict[str, str] | None = None

    def values(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude={"actor"}).items() if v is not None}


class PauseBody(BaseModel):
    actor: str


@router.post("/orders", status_code=201)
async def post_order(
    body: dict[str, Any],
    journal: JournalDep,
    deliverer: DelivererDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Submit an order; with an Idempotency-Key header a replay returns the first result."""
    request = OrderRequest.parse(body)
    return await submit(journal, deliverer, request, channel="api", idempotency_key=idempotency_key)


@router.get("/orders/{wo_no}")
async def get_order(wo_no: str, journal: JournalDep) -> dict[str, Any]:
    async with journal.pool.connection() as conn:
        row = await (await conn.execute(QUERIES["order_by_wo_no"], {"wo_no": wo_no})).fetchone()
    if row is None:
        raise NotFound(f"no work order {wo_no}", field="wo_no")
    return row


@router.get("/divisions")
async def get_divisions(journal: JournalDep) -> list[dict[str, Any]]:
    return await catalogue.list_divisions(journal.pool)


@router.post("/divisions/{division}", status_code=201)
async def post_division(division: str, body: DivisionBody, journal: JournalDep) -> dict[str, str]:
    await catalogue.add_division(journal.pool, division, body.values(), actor=body.actor)
    return {"division": division}


@router.patch("/divisions/{division}")
async def patch_division(division: str, body: DivisionBody, journal: JournalDep) -> dict[str, str]:
    await catalogue.update_division(journal.pool, division, body.values(), actor=body.actor)
    return {"division": division}


@router.post("/divisions/{division}/pause")
async def pause(division: str, body: PauseBody, journal: JournalDep) -> dict[str, Any]:
    await journal.set_policy(lane_of(division), {"paused": True}, actor=body.actor)
    return {"division": division, "paused": True}


@router.post("/divisions/{division}/resume")
async def resume(division: str, body: PauseBody, journal: JournalDep) -> dict[str, Any]:
    await journal.set_policy(lane_of(division), {"paused": False}, actor=body.actor)
    return {"division": division, "paused": False}


@router.get("/buffers/{division}")
async def buffer(
    division: str,
    journal: JournalDep,
    state: str | None = None,
    older_than_s: float | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    """A division's buffer with the seed's columns. Act on entries under /journal/entries."""
    async with journal.pool.connection() as conn:
        return await (
            await conn.execute(
                QUERIES["buffer"],
                {
                    "lane": lane_of(division),
                    "state": state,
                    "older_than_s": older_than_s,
                    "limit": limit,
                },
            )
        ).fetchall()


@router.get("/log")
async def get_log(
    journal: JournalDep,
    sa_id: str | None = None,
    wo_no: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    async with journal.pool.connection() as conn:
        return await (
            await conn.execute(QUERIES["log_for"], {"sa_id": sa_id, "wo_no": wo_no, "limit": limit})
        ).fetchall()
