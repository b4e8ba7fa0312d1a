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
fails each, heartbeating the claims while the calls are in flight. If the process dies
in between, the claims' leases run out and the backup daemons deliver those commands
(the target's once-only marker skips a command the dead process had applied): nothing
is lost; and the order, left `accepted`, is completed by the backup daemons' sweep
(`recover_orders`) from the journal's outcome. A direct delivery whose ack is refused
(its lease ran out and passed to a backup daemon) is not logged as direct.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bossa.customers import product_exists
from bossa.db import Conn, Pool, user_errors
from bossa.errors import Conflict, InvalidInput, NotFound, UserError
from bossa.journal import BulkAction, BulkFilter, Claim, EntryState, Failure, Journal
from bossa.journal import service as journal_service
from bossa.journal.models import MAX_BULK
from bossa.logs import get_logger
from bossa.provisioning import lanes, metrics, store
from bossa.provisioning.adapters.base import DeliveryError, render
from bossa.provisioning.models import (
    MAX_POSITION,
    BufferedCommand,
    BufferRow,
    BulkOutcome,
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
    PlanKey,
    PlanVersion,
    PlanView,
    ProvisioningCommand,
    Route,
    ServerType,
    check_binds,
    check_division_name,
    check_server_url,
    check_template,
    is_division_name,
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
    "bulk",
    "deliver_direct",
    "delivery_log",
    "discard",
    "division_record",
    "edit_binds",
    "list_divisions",
    "list_plans",
    "log_backup_deliveries",
    "log_deliveries",
    "mark_division",
    "order",
    "order_daemon",
    "park",
    "pause",
    "plan_codes",
    "plan_versions",
    "recover_orders",
    "resume",
    "retry",
    "show_division",
    "submit",
    "update_division",
]

log = get_logger("bossa.provisioning")


# -- names -----------------------------------------------------------------------------


def _lookable(name: str) -> bool:
    """Can this name be looked up at all? (NUL and other control characters cannot
    reach PostgreSQL text: a name holding one names nothing.)"""
    return name.isprintable() and len(name) <= 256


async def _division(conn: Conn, name: str) -> DivisionRecord:
    found = await store.division(conn, name) if is_division_name(name) else None
    if found is None:
        raise NotFound(f"no division {name}", field="division")
    return found


async def _product(conn: Conn, code: str) -> None:
    if not _lookable(code) or not await product_exists(conn, code):
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
    #: division -> the claim of a command to deliver directly, the command, and the plan
    #: version it names (read with the plan, in the transaction that accepted it)
    claims: dict[str, tuple[Claim, ProvisioningCommand, PlanVersion]] = field(default_factory=dict)
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


async def plan_codes(conn: Conn, product: str) -> list[str]:
    """The order types (INTF_CODE) the product has a plan for, none for an unknown
    product; joins the caller's transaction (customers asks before a contract's order)."""
    if not _lookable(product):
        return []
    return await store.plan_intf_codes(conn, product)


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
    actor: str | None = None,
) -> Accepted:
    """Record an order and route each division's command; joins the caller's transaction.
    Each command names the version of its plan command that is current now, and carries
    the order's bind data only. `actor` (the credential, or the journal's own name)
    is recorded as the order's creator."""
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
        actor=actor or journal.actor,
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
            intf_code=request.intf_code.value,
            plan_version=step.plan.key.version,
            wo_no=wo_no,
            cust_id=request.cust_id,
            bind_data=request.bind_data,
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
            accepted.claims[step.division] = (claim, command, step.plan)
        else:
            accepted.routes[step.division] = Route.BUFFERED
    return accepted


async def deliver_direct(journal: Journal, deliverer: Deliverer, accepted: Accepted) -> Order:
    """Call the divisions claimed for direct delivery, all at once, each command rendered
    from its plan version; then record every outcome (ack and P11 log, or the failure
    that leaves the command in its buffer) and the order's result in one pipelined
    transaction: a few round trips, not a dozen."""
    claims = list(accepted.claims.items())

    async def attempt(command: ProvisioningCommand, entry_id: int, plan: PlanVersion) -> Any:
        try:
            deliverer.remember(plan)
            return await deliverer.attempt(lanes.delivery_of(entry_id, command, plan))
        except DeliveryError as exc:
            return exc
        except Exception as exc:  # whatever happens, the order completes (P4)
            return DeliveryError(type(exc).__name__, "the call could not be made")

    beat = asyncio.create_task(_heartbeat(journal, claims))
    try:
        outcomes = await asyncio.gather(
            *(attempt(command, claim.entry_id, plan) for _, (claim, command, plan) in claims)
        )
    finally:
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
    routes = dict(accepted.routes)
    delivered: list[Delivery] = []
    async with journal.pool.connection() as conn, conn.pipeline(), conn.transaction():
        for (division, (claim, command, _)), error in zip(claims, outcomes, strict=True):
            assert claim.token is not None
            if error is None:
                if claim.entry_id in await journal.ack(claim.token, [claim.entry_id], conn=conn):
                    delivered.append(Delivery(claim.entry_id, command, DeliveryMode.DIRECT, 1))
                    continue
                # The lease ran out during the call and passed to a backup daemon: its
                # delivery (skipped at the target, which has the marker) is the one logged.
                routes[division] = Route.BUFFERED
                metrics.DIRECT_ACKS_REFUSED.labels(division).inc()
                log.warning(
                    "direct delivery's ack refused: its lease passed to the backup daemon",
                    division=division,
                    entry_id=claim.entry_id,
                    wo_no=accepted.wo_no,
                )
            else:
                routes[division] = Route.BUFFERED
                # Unreachable: not an attempt (the backup daemon delivers it once the
                # division answers); refused: the first of its attempts.
                failure = Failure(
                    claim.entry_id, error.code, error.message, counted=not error.unreachable
                )
                failed = await journal.fail(
                    claim.token, lanes.lane_of(division), [failure], conn=conn
                )
                if any(f.state is EntryState.PARKED for f in failed):  # max_attempts 1
                    metrics.PARKED.labels(division, error.code).inc()
                    log.warning(
                        "command parked",
                        entry_id=claim.entry_id,
                        sa_id=command.sa_id,
                        division=division,
                        code=error.code,
                        attempts=1,
                    )
        await store.log_deliveries(conn, delivered)
        return await store.complete_order(conn, accepted.wo_no, routes)


async def _heartbeat(
    journal: Journal, claims: Sequence[tuple[str, tuple[Claim, ProvisioningCommand, PlanVersion]]]
) -> None:
    """Extend the direct claims' leases while their calls are in flight (a third of the
    lease apart), so a slow division is not handed to a backup daemon under a live call."""
    if not claims:
        return
    lanes_of = {division: lanes.lane_of(division) for division, _ in claims}
    lease_ms = journal.settings.lease_ms
    with contextlib.suppress(Exception):  # the policies were read moments ago (cached)
        lease_ms = min([(await journal.policy(lane)).lease_ms for lane in lanes_of.values()])
    while True:
        await asyncio.sleep(lease_ms / 3000.0)
        for division, (claim, _, _) in claims:
            assert claim.token is not None
            with contextlib.suppress(Exception):  # the ack tells whether the lease held
                await journal.heartbeat(claim.token, lanes_of[division], [claim.entry_id])


async def recover_orders(
    journal: Journal, settings: ProvisioningSettings, *, limit: int = 1000
) -> list[str]:
    """Complete the orders left `accepted` by a process that died between accepting them
    and recording its direct calls (older than `stranded_after_s`, none of their commands
    under a claim), each from the journal's outcome; returns their WO_NOs. The claims'
    leases ran out and the backup daemons took the commands over: every division's
    route is `buffered` unless the log shows a direct delivery."""
    async with journal.pool.connection() as conn, conn.transaction():
        recovered = await store.complete_stranded_orders(
            conn, after_s=settings.stranded_after_s, limit=limit
        )
    if recovered:
        metrics.ORDERS_RECOVERED.inc(len(recovered))
        log.warning(
            "orders left accepted by a process that died were completed",
            orders=len(recovered),
            first=recovered[0],
        )
    return recovered


async def submit(
    journal: Journal,
    deliverer: Deliverer,
    request: OrderRequest,
    *,
    channel: str,
    idempotency_key: str | None = None,
    settings: ProvisioningSettings | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """Accept an order and provision it; returns the completed order (or the first result
    of an earlier order with the same idempotency key), as `Order`'s fields. `actor` is
    the order's creator (the API's credential, the CLI's user; else the journal's name)."""
    settings = settings or deliverer.settings
    if idempotency_key is not None:
        _check_idempotency_key(idempotency_key)
    async with journal.pool.connection() as conn, conn.transaction():
        accepted = await accept(
            conn,
            journal,
            request,
            channel=channel,
            idempotency_key=idempotency_key,
            settings=settings,
            actor=actor,
        )
    if accepted.result is not None:
        return accepted.result.model_dump()
    return (await deliver_direct(journal, deliverer, accepted)).model_dump()


def _check_idempotency_key(key: str) -> None:
    if not 1 <= len(key) <= 200 or not key.isprintable():
        raise InvalidInput("must be 1 to 200 printable characters", field="idempotency_key")


async def order(pool: Pool, wo_no: str) -> Order:
    found = None
    if _lookable(wo_no):
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
    """A new division, and its buffer's lane declared as provisioning's. Its SERVER_URL
    is required and must be one its adapter can use (`check_server_url`)."""
    check_division_name(name)
    change = _change(values)
    if change.server_type is None:
        raise InvalidInput("is required", field="server_type")
    check_server_url(change.server_type, change.server_url)
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
    """Change some of a division's values. The URL it is left with is checked against
    the type it is left with; its type stays while a plan command names it (the plan's
    templates are written for that type)."""
    change = _change(values)
    if not change.values():
        raise InvalidInput("nothing to change", field="division")
    async with pool.connection() as conn, conn.transaction():
        current = await _division(conn, name)
        server_type = change.server_type or current.division.server_type
        retyped = server_type is not current.division.server_type
        if retyped and await store.division_has_plans(conn, name):
            raise Conflict(
                f"division {name} has plan commands written for "
                f"{current.division.server_type.value}; its type cannot change",
                field="server_type",
            )
        if change.server_url is not None or change.server_type is not None:
            url = current.division.server_url if change.server_url is None else change.server_url
            check_server_url(server_type, url)
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
    if not is_division_name(name):
        return None
    async with pool.connection() as conn:
        return await store.division(conn, name)


async def mark_division(
    pool: Pool, name: str, *, down: bool, error: str | None, hold_s: float
) -> None:
    """P4a: the division was found unreachable (down), or answered again. The error is
    stored as given: the deliverer has masked the division's credentials in it."""
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
) -> PlanView:
    """Add (or change) a division's command in a product's plan for an order type; the
    template is checked now, so a bad one is refused here, not at 3 a.m. in a daemon.

    A new command text (or BIND_METHOD) makes a new version; the old ones are kept, so
    commands already buffered are still sent as the version they were accepted under.
    The same command again changes only its position."""
    order_type = OrderType.of(intf_code)
    if not 0 <= position <= MAX_POSITION:
        raise InvalidInput(f"must be between 0 and {MAX_POSITION}", field="position")
    async with pool.connection() as conn, conn.transaction():
        target = await _division(conn, division)
        check_template(target.division.server_type, command)
        await _product(conn, product)
        await store.ensure_receive_table(conn, product)
        where = {"product": product, "intf_code": order_type.value, "division": division}
        with user_errors():
            current = await store.current_plan_command(conn, **where)
            if current is None:
                if await store.insert_plan_command(conn, **where, position=position, actor=actor):
                    key = PlanKey(product, order_type.value, division, 1)
                    await store.insert_plan_version(
                        conn, key, command=command, bind_method=bind_method, actor=actor
                    )
                    return await _plan_view(conn, key)
                current = await store.current_plan_command(conn, **where)  # a twin's
                assert current is not None
            key = PlanKey(product, order_type.value, division, current["version"])
            if current["command"] != command or current["bind_method"] != bind_method:
                key = PlanKey(product, order_type.value, division, key.version + 1)
                await store.insert_plan_version(
                    conn, key, command=command, bind_method=bind_method, actor=actor
                )
            elif current["position"] == position:
                return await _plan_view(conn, key)
            await store.set_plan_command(conn, key, position=position, actor=actor)
            return await _plan_view(conn, key)


async def _plan_view(conn: Conn, key: PlanKey) -> PlanView:
    for row in await store.plans(conn, product=key.product):
        if (row["intf_code"], row["division"]) == (key.intf_code, key.division):
            return _as_plan_view(row)
    raise NotFound(f"no plan command {key}", field="division")  # pragma: no cover


def _as_plan_view(row: dict[str, Any]) -> PlanView:
    return PlanView.model_validate({**row, "order_type": OrderType.of(row["intf_code"]).label})


async def list_plans(pool: Pool) -> list[PlanView]:
    async with pool.connection() as conn:
        rows = await store.plans(conn)
    return [_as_plan_view(row) for row in rows]


async def plan_versions(pool: Pool, keys: Sequence[PlanKey]) -> dict[PlanKey, PlanVersion]:
    """The plan versions named, for rendering commands at delivery (absent: none)."""
    async with pool.connection() as conn:
        return await store.plan_versions(conn, keys)


# -- buffers and the operator's hand (P8-P10) -------------------------------------------


#: How far back `buffer --older-than` may reach (ten years, in seconds).
MAX_AGE_S = 10 * 365 * 24 * 3600


def _check_age(older_than_s: float | None) -> None:
    if older_than_s is not None and not 0 <= older_than_s <= MAX_AGE_S:
        raise InvalidInput(f"must be between 0 and {MAX_AGE_S} seconds", field="older_than_s")


def _check_code(name: str, value: str | None) -> None:
    if value is not None and not (1 <= len(value) <= 200 and value.isprintable()):
        raise InvalidInput("must be 1 to 200 printable characters", field=name)


async def buffer(
    pool: Pool,
    division: str,
    *,
    state: str | None = None,
    older_than_s: float | None = None,
    errcode: str | None = None,
    sa_id: str | None = None,
    limit: int = 100,
) -> list[BufferRow]:
    """A division's buffer with every column of the seed's buffers, oldest first; by
    state, age (seconds since buffered), ERRCODE (the latest failure of a command not
    delivered) and contract."""
    if state is not None and state not in set(EntryState):
        known = ", ".join(EntryState)
        raise InvalidInput(f"unknown state {state!r} (known: {known})", field="state")
    if not 1 <= limit <= 10_000:
        raise InvalidInput("must be between 1 and 10000", field="limit")
    _check_age(older_than_s)
    _check_code("errcode", errcode)
    _check_code("sa_id", sa_id)
    async with pool.connection() as conn:
        await _division(conn, division)
        return await store.buffer(
            conn,
            lanes.lane_of(division),
            state=state,
            older_than_s=older_than_s,
            errcode=errcode,
            sa_id=sa_id,
            limit=limit,
        )


async def bulk(
    journal: Journal,
    action: BulkAction,
    division: str,
    *,
    errcode: str | None = None,
    older_than_s: float | None = None,
    sa_id: str | None = None,
    limit: int = MAX_BULK,
    dry_run: bool = False,
    actor: str,
    reason: str | None = None,
) -> BulkOutcome:
    """P10 for many commands at once: retry, park or discard a division's buffered
    commands by ERRCODE, age and contract (any of them; none: the whole buffer, in the
    states the action applies to), oldest first, at most `limit`. Set-based (one
    statement, each command audited with the reason, which is required); a dry run
    counts what the selection holds and changes nothing."""
    _check_age(older_than_s)
    _check_code("errcode", errcode)
    _check_code("sa_id", sa_id)
    async with journal.pool.connection() as conn:
        await _division(conn, division)
    where = BulkFilter(
        lane=lanes.lane_of(division),
        key=sa_id,
        older_than_s=older_than_s,
        error_code=errcode,
        limit=limit,
    )
    result = await journal_service.bulk(
        journal, action, where, actor=actor, reason=reason, dry_run=dry_run
    )
    if not dry_run:
        log.warning(
            "bulk action on a buffer",
            action=action.value,
            division=division,
            errcode=errcode,
            older_than_s=older_than_s,
            sa_id=sa_id,
            changed=result.changed,
            actor=actor,
            reason=reason,
        )
    return BulkOutcome(
        action=action,
        division=division,
        dry_run=dry_run,
        errcode=errcode,
        older_than_s=older_than_s,
        sa_id=sa_id,
        matched=result.matched,
        changed=result.changed,
        entry_ids=result.entry_ids,
    )


def _rendered(plan: PlanVersion, command: ProvisioningCommand) -> Any:
    """What the adapter sends, for operators: SQL as it is (its values are bound, never
    spliced), the other templates with the bind values filled in."""
    if plan.server_type is ServerType.SQL:
        return plan.command
    try:
        return render(plan.command, command.binds())
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        return None  # a bind the template needs is missing: delivery says so (BIND)


async def buffered_command(journal: Journal, entry_id: int) -> BufferedCommand:
    """One buffered command with its plan version (the template and what it renders to),
    its error history and the operator actions on it. A payload that cannot be sent (one
    from before plans were versioned that matched none) is shown with the reason."""
    async with journal.pool.connection() as conn:
        await _command(conn, entry_id)
    detail = await journal_service.show(journal, entry_id)
    command: ProvisioningCommand | None = None
    plan: PlanVersion | None = None
    refused: str | None = None
    try:
        command = ProvisioningCommand.from_entry(detail)
    except InvalidInput as exc:
        refused = str(exc)
    if command is not None:
        async with journal.pool.connection() as conn:
            plan = (await store.plan_versions(conn, [command.plan_key])).get(command.plan_key)
        if plan is None:
            refused = f"names plan {command.plan_key}, which does not exist: never sent"
    return BufferedCommand(
        entry_id=detail.id,
        lane=detail.lane,
        state=str(detail.state),
        attempts=detail.attempts,
        created_at=detail.created_at,
        finished_at=detail.finished_at,
        sa_id=str(detail.key),
        command=command,
        template=None if plan is None else plan.command,
        rendered=None if plan is None or command is None else _rendered(plan, command),
        refused=refused,
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
    retry: bool = False,
) -> BufferedCommand:
    """Change some of a buffered command's bind values (to fix what made it fail); its
    command text is the plan's and is never edited here. Audited by the journal. The
    edit leaves the command's state as it was (a parked command stays parked: the
    answer says so); `retry` sends it again now, as `retry` would."""
    if not changes:
        raise InvalidInput("give at least one NAME=VALUE", field="bind_data")
    current = await buffered_command(journal, entry_id)
    if current.command is None:
        raise Conflict(current.refused or "its payload cannot be read", field="entry_id")
    changed = current.command.with_binds(changes)
    await journal_service.edit(
        journal, entry_id, changed.to_payload(), actor=actor, reason=reason, owner=lanes.OWNER
    )
    if retry and current.state in (EntryState.PARKED, EntryState.READY):
        # (A waiting command goes when its contract's earlier ones are done.)
        await journal_service.retry(journal, entry_id, actor=actor, reason=reason)
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
    if sa_id is not None and not _lookable(sa_id):
        return []
    async with pool.connection() as conn:
        if wo_no is not None and (
            not _lookable(wo_no) or await store.order_by_wo_no(conn, wo_no) is None
        ):
            raise NotFound(f"no work order {wo_no}", field="wo_no")
        return await store.log_for(conn, sa_id=sa_id, wo_no=wo_no, limit=limit)


async def log_deliveries(conn: Conn, deliveries: Sequence[Delivery]) -> None:
    """P11 for commands delivered by a caller that holds them validated (a backup
    daemon logs from its entries instead: log_backup_deliveries); joins the caller's
    transaction."""
    await store.log_deliveries(conn, deliveries)


async def log_backup_deliveries(conn: Conn, entry_ids: Sequence[int]) -> None:
    """P11 for entries a backup daemon delivered and is acking in `conn`'s transaction,
    from the entries themselves."""
    await store.log_backup_deliveries(conn, entry_ids)
