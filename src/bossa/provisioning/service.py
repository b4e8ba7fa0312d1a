"""Provisioning's use cases, one function each: orders (P1, P2, P4, P4a, P5), divisions
(P7), plans, buffers and the operator's hand on them (P8-P10), and the log (P11).

Each function opens its connection and transaction, or joins the caller's (`conn`),
never both; and each checks the names an operator or a caller gives: a division, a
product, a work order or a buffered command that does not exist is a `NotFound` that
names it, whatever edge asked.

An order is recorded in two steps, so that no transaction stays open during a call to
a server: `accept()` runs inside a transaction and records everything (the order, the
service record, one journal entry per division, some of them claimed for direct
delivery); `deliver_direct()` then calls the servers for the claimed entries and acks or
fails each. If the process dies in between, the claims' leases run out and the backup
daemons deliver those commands: nothing is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bossa.customers import product_exists
from bossa.db import Conn, Pool, user_errors
from bossa.errors import Conflict, InvalidInput, NotFound, UserError
from bossa.journal import Claim, EntryState, Failure, Journal
from bossa.journal import service as journal_service
from bossa.logs import get_logger
from bossa.provisioning import lanes, store
from bossa.provisioning.models import (
    BufferedCommand,
    BufferRow,
    Delivery,
    DeliveryMode,
    DivisionChange,
    DivisionRecord,
    DivisionView,
    LaneState,
    LogRow,
    Order,
    OrderRequest,
    OrderType,
    PlanCommand,
    PlanView,
    ProvisioningCommand,
    Route,
    check_binds,
    check_division_name,
    placeholders,
    straight_to_buffer,
)
from bossa.provisioning.settings import ProvisioningSettings

if TYPE_CHECKING:
    from bossa.provisioning.lanes import BackupDaemon, Deliverer, OrderDaemon

__all__ = [
    "Accepted",
    "ReceiptBatch",
    "accept",
    "accept_receipts",
    "add_division",
    "add_plan_command",
    "backup_daemon",
    "buffer",
    "buffered_command",
    "deliver_direct",
    "delivery_log",
    "discard",
    "division_record",
    "edit_binds",
    "list_divisions",
    "list_plans",
    "log_deliveries",
    "mark_division",
    "order",
    "order_daemon",
    "park",
    "pause",
    "resume",
    "retry",
    "show_division",
    "submit",
    "update_division",
]

log = get_logger("bossa.provisioning")


# -- names -----------------------------------------------------------------------------


async def _division(conn: Conn, name: str) -> DivisionRecord:
    found = await store.division(conn, name)
    if found is None:
        raise NotFound(f"no division {name}", field="division")
    return found


async def _product(conn: Conn, code: str) -> None:
    if not await product_exists(conn, code):
        raise NotFound(f"no product {code}", field="product")


async def _command(conn: Conn, entry_id: int) -> None:
    if not await store.command_exists(conn, entry_id):
        raise NotFound(f"no provisioning command {entry_id}", field="entry_id")


# -- orders ----------------------------------------------------------------------------


@dataclass
class Accepted:
    wo_no: str
    replay: bool
    #: division -> where its command went
    routes: dict[str, Route] = field(default_factory=dict)
    #: division -> the claim of a command to deliver directly, and the command
    claims: dict[str, tuple[Claim, ProvisioningCommand]] = field(default_factory=dict)
    #: the first result, for a replay
    result: Order | None = None


async def _plan(conn: Conn, product: str, intf_code: str) -> list[PlanCommand]:
    """The plan's commands for one order type, refusing unknown products and order types."""
    await _product(conn, product)
    plan = await store.plan(conn, product, intf_code)
    if not plan:
        known = ", ".join(await store.plan_intf_codes(conn, product)) or "none"
        raise InvalidInput(
            f"product {product} has no plan for INTF_CODE {intf_code!r} (it has: {known})",
            field="intf_code",
        )
    return plan


async def _replay(conn: Conn, key: str, fingerprint: str) -> Accepted | None:
    found = await store.order_by_key(conn, key)
    if found is None:
        return None
    order, request_hash = found
    if request_hash != fingerprint:
        raise Conflict(
            f"was used before for an order with other content (work order {order.wo_no})",
            field="idempotency_key",
        )
    return Accepted(order.wo_no, replay=True, result=order)


async def accept(
    conn: Conn,
    journal: Journal,
    request: OrderRequest,
    *,
    channel: str,
    idempotency_key: str | None,
    settings: ProvisioningSettings,
) -> Accepted:
    """Record an order and route each division's command; joins the caller's transaction."""
    fingerprint = request.fingerprint()
    if idempotency_key is not None:
        replay = await _replay(conn, idempotency_key, fingerprint)
        if replay is not None:
            return replay
    plan = await _plan(conn, request.product, request.intf_code.value)
    check_binds(plan, request.bind_data)
    wo_no = request.wo_no or await store.next_wo_no(conn)
    inserted = await store.insert_order(
        conn,
        request,
        wo_no=wo_no,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        channel=channel,
        actor=journal.actor,
    )
    if not inserted:
        if idempotency_key is not None:  # a concurrent twin won the race
            replay = await _replay(conn, idempotency_key, fingerprint)
            if replay is not None:
                return replay
        raise Conflict(f"work order {wo_no} exists already", field="wo_no")
    await store.upsert_service_record(conn, request, wo_no=wo_no)
    accepted = Accepted(wo_no, replay=False)
    now = datetime.now(UTC)
    for step in plan:
        division = await _division(conn, step.division)
        command = ProvisioningCommand(
            sa_id=request.sa_id,
            division=step.division,
            server_type=step.server_type,
            product=request.product,
            wo_no=wo_no,
            intf_code=request.intf_code.value,
            cust_id=request.cust_id,
            command=step.command,
            bind_data=request.bind_data,
            bind_method=step.bind_method,
            logname=settings.logname,
            ins_date=now,
        )
        entry = lanes.command_entry(command)
        policy = await journal.policy(entry.lane, conn=conn)
        if straight_to_buffer(
            division.division,
            paused=policy.paused,
            known_down=await store.known_down(conn, step.division),
        ):
            await journal.enqueue([entry], conn=conn)
            accepted.routes[step.division] = Route.BUFFERED
            continue
        claim = await journal.enqueue_or_claim(entry, conn=conn)  # P5
        if claim.go_ahead:
            accepted.routes[step.division] = Route.DIRECT
            accepted.claims[step.division] = (claim, command)
        else:
            accepted.routes[step.division] = Route.BUFFERED
    return accepted


async def deliver_direct(journal: Journal, deliverer: Deliverer, accepted: Accepted) -> Order:
    """Call the divisions claimed for direct delivery, all at once; then record every
    outcome (ack and P11 log, or the failure that leaves the command in its buffer) and
    the order's result in one pipelined transaction: a few round trips, not a dozen."""
    claims = list(accepted.claims.items())
    outcomes = await asyncio.gather(
        *(
            deliverer.attempt(lanes.delivery_of(claim.entry_id, command))
            for _, (claim, command) in claims
        )
    )
    routes = dict(accepted.routes)
    delivered: list[Delivery] = []
    async with journal.pool.connection() as conn, conn.pipeline(), conn.transaction():
        for (division, (claim, command)), error in zip(claims, outcomes, strict=True):
            assert claim.token is not None
            if error is None:
                await journal.ack(claim.token, [claim.entry_id], conn=conn)
                delivered.append(Delivery(claim.entry_id, command, DeliveryMode.DIRECT, 1))
            else:
                routes[division] = Route.BUFFERED
                failure = Failure(claim.entry_id, error.code, error.message)
                await journal.fail(claim.token, lanes.lane_of(division), [failure], conn=conn)
        await store.log_deliveries(conn, delivered)
        return await store.complete_order(conn, accepted.wo_no, routes)


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
    of an earlier order with the same idempotency key), as `Order`'s fields."""
    settings = settings or deliverer.settings
    async with journal.pool.connection() as conn, conn.transaction():
        accepted = await accept(
            conn,
            journal,
            request,
            channel=channel,
            idempotency_key=idempotency_key,
            settings=settings,
        )
    if accepted.result is not None:
        return accepted.result.model_dump()
    return (await deliver_direct(journal, deliverer, accepted)).model_dump()


async def order(pool: Pool, wo_no: str) -> Order:
    async with pool.connection() as conn:
        found = await store.order_by_wo_no(conn, wo_no)
    if found is None:
        raise NotFound(f"no work order {wo_no}", field="wo_no")
    return found


@dataclass
class ReceiptBatch:
    taken: int = 0
    rejected: int = 0
    accepted: list[Accepted] = field(default_factory=list)


async def accept_receipts(
    journal: Journal, product: str, *, limit: int, settings: ProvisioningSettings
) -> ReceiptBatch:
    """P1: take the next receipts of a product's receive table and accept each as an
    order, in one transaction; a bad receipt is marked rejected with the reason."""
    batch = ReceiptBatch()
    async with journal.pool.connection() as conn, conn.transaction():
        receipts = await store.take_receipts(conn, product, limit)
        for receipt in receipts:
            try:
                async with conn.transaction():
                    request = OrderRequest.parse(
                        {
                            "product": receipt["product_code"],
                            "sa_id": receipt["sa_id"],
                            "intf_code": receipt["intf_code"],
                            "cust_id": receipt["cust_id"],
                            "wo_no": receipt["wo_no"],
                            "bind_data": receipt["bind_data"],
                        }
                    )
                    accepted = await accept(
                        conn,
                        journal,
                        request,
                        channel="receive-table",
                        idempotency_key=f"receipt:{product}:{receipt['id']}",
                        settings=settings,
                    )
            except UserError as exc:
                batch.rejected += 1
                log.warning("receipt rejected", product=product, id=receipt["id"], error=str(exc))
                await store.finish_receipt(
                    conn, product, receipt["id"], status="rejected", error=str(exc), wo_no=None
                )
                continue
            await store.finish_receipt(
                conn, product, receipt["id"], status="done", error=None, wo_no=accepted.wo_no
            )
            batch.accepted.append(accepted)
        batch.taken = len(receipts)
    return batch


async def order_daemon(
    journal: Journal, deliverer: Deliverer, product: str, settings: ProvisioningSettings
) -> OrderDaemon:
    """The order daemon of a product that exists."""
    async with journal.pool.connection() as conn:
        await _product(conn, product)
    return lanes.OrderDaemon(journal, deliverer, product, settings)


# -- divisions -------------------------------------------------------------------------


def _change(values: DivisionChange | Mapping[str, Any]) -> DivisionChange:
    return values if isinstance(values, DivisionChange) else DivisionChange.parse(values)


async def add_division(
    pool: Pool, name: str, values: DivisionChange | Mapping[str, Any], *, actor: str
) -> DivisionView:
    """A new division, and its buffer's lane declared as provisioning's."""
    check_division_name(name)
    change = _change(values)
    if change.server_type is None:
        raise InvalidInput("is required", field="server_type")
    async with pool.connection() as conn, conn.transaction():
        with user_errors():
            if not await store.insert_division(conn, name, change.server_type, actor):
                raise InvalidInput(
                    f"division {name} exists already; change it with `set`", field="division"
                )
            await store.update_division(conn, name, change, actor)
        await store.declare_lane(conn, lanes.lane_of(name), actor)
        return (await _division(conn, name)).view()


async def update_division(
    pool: Pool, name: str, values: DivisionChange | Mapping[str, Any], *, actor: str
) -> DivisionView:
    change = _change(values)
    if not change.values():
        raise InvalidInput("nothing to change", field="division")
    async with pool.connection() as conn, conn.transaction():
        with user_errors():
            if not await store.update_division(conn, name, change, actor):
                raise NotFound(f"no division {name}", field="division")
        return (await _division(conn, name)).view()


async def list_divisions(pool: Pool) -> list[DivisionView]:
    async with pool.connection() as conn:
        return [record.view() for record in await store.divisions(conn)]


async def show_division(pool: Pool, name: str) -> DivisionView:
    async with pool.connection() as conn:
        return (await _division(conn, name)).view()


async def division_record(pool: Pool, name: str) -> DivisionRecord | None:
    """The stored row, secrets included: for the deliverer only, never an edge."""
    async with pool.connection() as conn:
        return await store.division(conn, name)


async def mark_division(
    pool: Pool, name: str, *, down: bool, error: str | None, hold_s: float
) -> None:
    """P4a: the division was found unreachable (down), or answered again."""
    async with pool.connection() as conn:
        if down:
            await store.mark_down(conn, name, error=error or "unreachable", hold_s=hold_s)
        else:
            await store.mark_up(conn, name)


async def _hold(journal: Journal, division: str, *, paused: bool, actor: str) -> LaneState:
    async with journal.pool.connection() as conn:
        await _division(conn, division)
    await journal.set_policy(lanes.lane_of(division), {"paused": paused}, actor=actor)
    return LaneState(division=division, paused=paused)


async def pause(journal: Journal, division: str, *, actor: str) -> LaneState:
    """Hold the division's backup daemon (its buffer keeps filling; orders buffer too)."""
    return await _hold(journal, division, paused=True, actor=actor)


async def resume(journal: Journal, division: str, *, actor: str) -> LaneState:
    return await _hold(journal, division, paused=False, actor=actor)


async def backup_daemon(
    journal: Journal,
    deliverer: Deliverer,
    division: str,
    *,
    listen_url: str | None = None,
    concurrency: int | None = None,
    batch_size: int | None = None,
) -> BackupDaemon:
    """The backup daemon of a division that exists."""
    async with journal.pool.connection() as conn:
        await _division(conn, division)
    return lanes.BackupDaemon(
        journal,
        deliverer,
        division,
        listen_url=listen_url,
        concurrency=concurrency,
        batch_size=batch_size,
    )


# -- plans -----------------------------------------------------------------------------


async def add_plan_command(
    pool: Pool,
    product: str,
    intf_code: str,
    division: str,
    command: Any,
    *,
    position: int = 0,
    bind_method: bool = True,
    actor: str,
) -> None:
    """Add (or replace) a division's command in a product's plan for an order type; the
    template is checked now, so a bad one is refused here, not at 3 a.m. in a daemon."""
    order_type = OrderType.of(intf_code)
    async with pool.connection() as conn, conn.transaction():
        target = await _division(conn, division)
        placeholders(target.division.server_type, command)  # refuses a template of the wrong shape
        await _product(conn, product)
        await store.ensure_receive_table(conn, product)
        with user_errors():
            await store.upsert_plan_command(
                conn,
                product=product,
                intf_code=order_type.value,
                division=division,
                position=position,
                command=command,
                bind_method=bind_method,
                actor=actor,
            )


async def list_plans(pool: Pool) -> list[PlanView]:
    async with pool.connection() as conn:
        rows = await store.plans(conn)
    return [
        PlanView.model_validate({**row, "order_type": OrderType.of(row["intf_code"]).label})
        for row in rows
    ]


# -- buffers and the operator's hand (P8-P10) -------------------------------------------


async def buffer(
    pool: Pool,
    division: str,
    *,
    state: str | None = None,
    older_than_s: float | None = None,
    limit: int = 100,
) -> list[BufferRow]:
    """A division's buffer with the seed's columns, oldest first."""
    if state is not None and state not in set(EntryState):
        known = ", ".join(EntryState)
        raise InvalidInput(f"unknown state {state!r} (known: {known})", field="state")
    if not 1 <= limit <= 10_000:
        raise InvalidInput("must be between 1 and 10000", field="limit")
    async with pool.connection() as conn:
        await _division(conn, division)
        return await store.buffer(
            conn, lanes.lane_of(division), state=state, older_than_s=older_than_s, limit=limit
        )


async def buffered_command(journal: Journal, entry_id: int) -> BufferedCommand:
    """One buffered command with its error history and the operator actions on it."""
    async with journal.pool.connection() as conn:
        await _command(conn, entry_id)
    detail = await journal_service.show(journal, entry_id)
    command = ProvisioningCommand.from_entry(detail)
    return BufferedCommand(
        entry_id=detail.id,
        lane=detail.lane,
        state=str(detail.state),
        attempts=detail.attempts,
        created_at=detail.created_at,
        finished_at=detail.finished_at,
        sa_id=command.sa_id,
        command=command,
        errors=[e.model_dump() for e in detail.errors],
        audit=[a.model_dump() for a in detail.audit],
    )


async def edit_binds(
    journal: Journal,
    entry_id: int,
    changes: Mapping[str, Any],
    *,
    actor: str,
    reason: str | None = None,
) -> BufferedCommand:
    """Change some of a buffered command's bind values (to fix what made it fail); its
    command text is the plan's and is never edited here. Audited by the journal."""
    if not changes:
        raise InvalidInput("give at least one NAME=VALUE", field="bind_data")
    current = await buffered_command(journal, entry_id)
    changed = current.command.with_binds(changes)
    await journal_service.edit(
        journal, entry_id, changed.to_payload(), actor=actor, reason=reason, owner=lanes.OWNER
    )
    return await buffered_command(journal, entry_id)


async def retry(
    journal: Journal, entry_id: int, *, actor: str, reason: str | None = None
) -> EntryState:
    """Send a parked or backing-off command again now."""
    async with journal.pool.connection() as conn:
        await _command(conn, entry_id)
    return await journal_service.retry(journal, entry_id, actor=actor, reason=reason)


async def park(
    journal: Journal, entry_id: int, *, actor: str, reason: str | None = None
) -> EntryState:
    """Hold a command (its contract's later commands for the division wait too)."""
    async with journal.pool.connection() as conn:
        await _command(conn, entry_id)
    return await journal_service.park(journal, entry_id, actor=actor, reason=reason)


async def discard(journal: Journal, entry_id: int, *, actor: str, reason: str) -> EntryState:
    """Give up on a command; the contract's next command goes on."""
    async with journal.pool.connection() as conn:
        await _command(conn, entry_id)
    return await journal_service.discard(journal, entry_id, actor=actor, reason=reason)


# -- the log (P11) ---------------------------------------------------------------------


async def delivery_log(
    pool: Pool, *, sa_id: str | None = None, wo_no: str | None = None, limit: int = 100
) -> list[LogRow]:
    """Successful provisioning of a contract or a work order (a work order that does not
    exist is NotFound, not an empty log)."""
    if not 1 <= limit <= 10_000:
        raise InvalidInput("must be between 1 and 10000", field="limit")
    async with pool.connection() as conn:
        if wo_no is not None and await store.order_by_wo_no(conn, wo_no) is None:
            raise NotFound(f"no work order {wo_no}", field="wo_no")
        return await store.log_for(conn, sa_id=sa_id, wo_no=wo_no, limit=limit)


async def log_deliveries(conn: Conn, deliveries: Sequence[Delivery]) -> None:
    """P11 for commands a backup daemon delivered; joins the ack's transaction."""
    await store.log_deliveries(conn, deliveries)
