"""Orders (P1, P2, P4, P4a, P5): accept an order, build its service record, and provision
every division of its plan: directly when the division is up and the contract has
nothing buffered there, into the division's buffer otherwise. The order completes
either way; nothing is rolled back because one server is down.

Two steps, so that no transaction stays open during a call to a server:
`accept()` runs inside a transaction and records everything (the order, the service
record, one journal entry per division, some of them claimed for direct delivery);
`deliver_direct()` then calls the servers for the claimed entries and acks or fails each.
If the process dies in between, the claims' leases run out and the backup daemons
deliver those commands: nothing is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bossa.db import Conn
from bossa.errors import Conflict, InvalidInput
from bossa.journal import Claim, Journal, NewEntry
from bossa.journal.store import Failure
from bossa.provisioning.adapters.base import Command, DeliveryError
from bossa.provisioning.catalogue import QUERIES, PlanCommand, get_division, plan_for
from bossa.provisioning.delivery import Deliverer
from bossa.provisioning.settings import ProvisioningSettings

__all__ = ["Accepted", "OrderRequest", "accept", "deliver_direct", "lane_of", "submit"]

STATUS_AFTER = {
    "4201": "active",
    "4202": "active",
    "4203": "terminated",
    "4204": "suspended",
    "4205": "active",
}


#: Bind variables every template may use, filled from the order itself.
ORDER_BINDS = frozenset({"sa_id", "cust_id", "wo_no", "intf_code"})


def lane_of(division: str) -> str:
    return f"provisioning.{division}"


class OrderRequest(BaseModel):
    """An order as it arrives (API body, CLI, or a receive-table row)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    product: str = Field(min_length=1, max_length=32)
    sa_id: str = Field(min_length=1, max_length=64, description="SA_ID: the contract")
    intf_code: str = Field(
        pattern=r"^[0-9]{4}$", description="INTF_CODE: 4201 new, 4202 change ..."
    )
    cust_id: str | None = Field(default=None, max_length=64)
    wo_no: str | None = Field(default=None, min_length=1, max_length=64)
    bind_data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any) -> OrderRequest:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "order"
            raise InvalidInput(first["msg"], field=where) from exc

    def fingerprint(self) -> str:
        text = json.dumps(self.model_dump(exclude={"wo_no"}), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Accepted:
    wo_no: str
    replay: bool
    #: division -> where its command went: "direct" (claimed) or "buffered"
    routes: dict[str, str] = field(default_factory=dict)
    claims: dict[str, tuple[Claim, Command]] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)


def _check_binds(plan: list[PlanCommand], bind_data: dict[str, Any]) -> None:
    clash = sorted(ORDER_BINDS & set(bind_data))
    if clash:
        raise InvalidInput(
            "is taken from the order itself; do not repeat it in bind_data",
            field=f"bind_data.{clash[0]}",
        )
    needed = set().union(*(c.needs for c in plan)) - ORDER_BINDS
    missing = sorted(needed - set(bind_data))
    if missing:
        users = [c.division for c in plan if missing[0] in c.needs]
        raise InvalidInput(
            f"is required by the command for {', '.join(users)}", field=f"bind_data.{missing[0]}"
        )
    unused = sorted(set(bind_data) - needed)
    if unused:
        raise InvalidInput(
            "is not used by any command of this plan "
            f"(it uses: {', '.join(sorted(needed)) or 'nothing'})",
            field=f"bind_data.{unused[0]}",
        )
    for name, value in bind_data.items():
        if not isinstance(value, str | int | float | bool) and value is not None:
            raise InvalidInput(
                "must be a string, number, boolean or null", field=f"bind_data.{name}"
            )


async def accept(
    conn: Conn,
    journal: Journal,
    request: OrderRequest,
    *,
    channel: str,
    idempotency_key: str | None,
    settings: ProvisioningSettings,
) -> Accepted:
    """Record an order and route each division's command; call inside a transaction."""
    fingerprint = request.fingerprint()
    if idempotency_key is not None:
        replay = await _replay(conn, idempotency_key, fingerprint)
        if replay is not None:
            return replay
    plan = await plan_for(conn, request.product, request.intf_code)
    _check_binds(plan, request.bind_data)
    wo_no = request.wo_no
    if wo_no is None:
        row = await (await conn.execute(QUERIES["next_wo_no"])).fetchone()
        assert row is not None
        wo_no = str(row["wo_no"])
    inserted = await (
        await conn.execute(
            QUERIES["insert_order"],
            {
                "wo_no": wo_no,
                "idempotency_key": idempotency_key,
                "request_hash": fingerprint,
                "product": request.product,
                "sa_id": request.sa_id,
                "cust_id": request.cust_id,
                "intf_code": request.intf_code,
                "bind_data": Jsonb(request.bind_data),
                "channel": channel,
                "actor": journal.actor,
            },
        )
    ).fetchone()
    if inserted is None:
        if idempotency_key is not None:  # a concurrent twin won the race
            replay = await _replay(conn, idempotency_key, fingerprint)
            if replay is not None:
                return replay
        raise Conflict(f"work order {wo_no} exists already", field="wo_no")
    await conn.execute(
        QUERIES["upsert_service_record"],
        {
            "sa_id": request.sa_id,
            "cust_id": request.cust_id,
            "product": request.product,
            "status": STATUS_AFTER.get(request.intf_code, "active"),
            "attributes": Jsonb(request.bind_data),
            "wo_no": wo_no,
        },
    )
    accepted = Accepted(wo_no, replay=False)
    now = datetime.now(UTC)
    for step in plan:
        division = await get_division(conn, step.division)
        payload = {
            "division": step.division,
            "server_type": step.server_type.value,
            "wo_no": wo_no,
            "intf_code": request.intf_code,
            "cust_id": request.cust_id,
            "command": step.command,
            "bind_data": request.bind_data,
            "bind_method": step.bind_method,
            "logname": settings.logname,
            "ins_date": now.isoformat(),
        }
        entry = NewEntry(lane_of(step.division), "provisioning.command", payload, key=request.sa_id)
        policy = await journal.policy(entry.lane, conn=conn)
        known_down = (
            division.server_used is False
            or policy.paused
            or (await _known_down(conn, step.division))
        )
        if known_down:  # P4a: no call, straight to the buffer
            await journal.enqueue([entry], conn=conn)
            accepted.routes[step.division] = "buffered"
            continue
        claim = await journal.enqueue_or_claim(entry, conn=conn)  # P5
        if claim.go_ahead:
            accepted.routes[step.division] = "direct"
            accepted.claims[step.division] = (
                claim,
                command_of(claim.entry_id, request.sa_id, payload),
            )
        else:
            accepted.routes[step.division] = "buffered"
    return accepted


def command_of(entry_id: int, sa_id: str, payload: dict[str, Any]) -> Command:
    return Command(
        entry_id=entry_id,
        division=payload["division"],
        sa_id=sa_id,
        wo_no=payload["wo_no"],
        intf_code=payload["intf_code"],
        cust_id=payload.get("cust_id"),
        template=payload["command"],
        bind_data={
            "sa_id": sa_id,
            "cust_id": payload.get("cust_id"),
            "wo_no": payload["wo_no"],
            "intf_code": payload["intf_code"],
            **payload["bind_data"],
        },
        logname=payload.get("logname", "bossa"),
    )


async def _known_down(conn: Conn, division: str) -> bool:
    row = await (await conn.execute(QUERIES["known_down"], {"division": division})).fetchone()
    return bool(row and row["down"])


async def _replay(conn: Conn, key: str, fingerprint: str) -> Accepted | None:
    row = await (await conn.execute(QUERIES["order_by_key"], {"key": key})).fetchone()
    if row is None:
        return None
    if row["request_hash"] != fingerprint:
        raise Conflict(
            f"was used before for an order with other content (work order {row['wo_no']})",
            field="idempotency_key",
        )
    return Accepted(row["wo_no"], replay=True, result=_public(row))


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "wo_no": row["wo_no"],
        "status": row["status"],
        "product": row["product_code"],
        "sa_id": row["sa_id"],
        "intf_code": row["intf_code"],
        "divisions": row["result"],
        "received_at": row["received_at"],
        "completed_at": row["completed_at"],
    }


async def deliver_direct(
    conn_factory: Any, journal: Journal, deliverer: Deliverer, accepted: Accepted
) -> dict[str, Any]:
    """Call the divisions claimed for direct delivery, all at once; then record every
    outcome (ack and P11 log, or the failure that leaves the command in its buffer) and
    the order's result in one pipelined transaction: a few round trips, not a dozen."""

    async def one(command: Command) -> DeliveryError | None:
        try:
            await deliverer.deliver(command)
        except DeliveryError as exc:
            return exc
        return None

    claims = list(accepted.claims.items())
    outcomes = await asyncio.gather(*(one(command) for _, (_, command) in claims))
    for (division, _), error in zip(claims, outcomes, strict=True):
        if error is not None:
            accepted.routes[division] = "buffered"
    async with conn_factory() as conn, conn.pipeline(), conn.transaction():
        for (division, (claim, command)), error in zip(claims, outcomes, strict=True):
            assert claim.token is not None
            if error is None:
                await journal.ack(claim.token, [claim.entry_id], conn=conn)
                await deliverer.log(conn, command, mode="direct", attempts=1)
            else:
                failure = Failure(claim.entry_id, error.code, error.message)
                await journal.fail(claim.token, lane_of(division), [failure], conn=conn)
        await conn.execute(
            QUERIES["complete_order"], {"wo_no": accepted.wo_no, "result": Jsonb(accepted.routes)}
        )
        row = await (
            await conn.execute(QUERIES["order_by_wo_no"], {"wo_no": accepted.wo_no})
        ).fetchone()
    assert row is not None
    return _public(row)


async def submit(
    journal: Journal,
    deliverer: Deliverer,
    request: OrderRequest,
    *,
    channel: str,
    idempotency_key: str | None = None,
    settings: ProvisioningSettings | None = None,
) -> dict[str, Any]:
    """Accept an order and provision it; returns the completed order (or the first result
    of an earlier order with the same idempotency key)."""
    settings = settings or ProvisioningSettings()
    async with journal.pool.connection() as conn, conn.transaction():
        accepted = await accept(
            conn,
            journal,
            request,
            channel=channel,
            idempotency_key=idempotency_key,
            settings=settings,
        )
    if accepted.replay:
        return accepted.result
    return await deliver_direct(journal.pool.connection, journal, deliverer, accepted)
