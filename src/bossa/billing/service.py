"""Billing's use cases, one function each: take a payment (B2, B3), authorise an order,
show an account, open / bill / settle / reconcile a bill run (B1, B4-B6), plan a
window, run dunning. Each opens its connection and transaction, or takes the caller's
(`current_state`), never both; names operators type (an account, a run, a bill cycle)
are checked here, so the API and the CLI refuse them with the same words.

Every step of a run is resumable: a worker killed mid-chunk leaves its accounts
unbilled (the chunk is one transaction); settlement killed mid-way resumes with the items
not yet settled (each batch is one transaction that marks its items).

Payments never wait for a run. Outside a run a payment posts to the online books; during
one it is staged and answered at once. The decision staged-or-posted is taken under a
lock that a run's start and end take exclusively, so no payment straddles the snapshot
or the switch back.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from psycopg import errors as pg_errors

from bossa import customers, ledger
from bossa.billing import lanes, store
from bossa.billing.models import (
    BillPeriodState,
    PaymentKind,
    PaymentLimits,
    PaymentRequest,
    PaymentStatus,
    RunProgress,
    RunStatus,
    ServiceOrder,
    Window,
    WindowRequest,
    check_due_days,
    check_idempotency_key,
    check_payment_limits,
    check_period,
    check_planned_end,
    check_window,
    overrunning,
    payment_status,
    recipe_of,
    restores_service,
    run_progress,
    split_arrears_payment,
)
from bossa.billing.settings import MAX_CHUNK, MAX_WORKERS
from bossa.db import Conn, Pool
from bossa.errors import Conflict, InvalidInput, NotFound
from bossa.journal import Journal
from bossa.ledger import (
    AccountRequest,
    AccountStatus,
    available,
    check_text,
    format_minor,
    to_minor,
)
from bossa.logs import get_logger
from bossa.provisioning import Deliverer

__all__ = [
    "account_summary",
    "add_window",
    "authorize",
    "bill",
    "bill_period_state",
    "cancel_run",
    "check_books",
    "current_state",
    "open_account",
    "pay",
    "reconcile",
    "run_dunning",
    "run_progress_of",
    "run_status",
    "send_service_orders",
    "settle",
    "start_run",
]

Progress = Callable[[RunProgress], None]
log = get_logger("bossa.billing")

#: Restores listed with an account.
RESTORES_SHOWN = 20
_CATCH_UP_ROUNDS = 3
_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
#: The largest id PostgreSQL's bigint holds: a run id beyond it names no run.
_BIGINT_MAX = 2**63 - 1
#: How far back a run's period may end unless the settings say otherwise (days).
DEFAULT_LOOKBACK_DAYS = 93
#: Differences one reconciliation report lists at most.
MAX_REPORT_ROWS = 10_000


# -- accounts ----------------------------------------------------------------------------


async def open_account(pool: Pool, request: AccountRequest, *, actor: str) -> bool:
    """Open a billing account in the ledger; False when it exists already."""
    async with pool.connection() as conn, conn.transaction():
        return await ledger.open_account(conn, request, actor=actor)


async def account_summary(
    pool: Pool, account_id: str, *, today: date | None = None
) -> dict[str, Any]:
    """An account with its books, available funds, what is staged for it, its arrears on
    `today` (default the current date) and its latest restores."""
    check_text(account_id, "account")
    async with pool.connection() as conn:
        acct = await ledger.account(conn, account_id)
        books = await ledger.balances(conn, account_id)
        deposits, writeoffs = await store.staged_totals(conn, account_id)
        arrears = await store.arrears(conn, account_id, today=today or date.today())
        restores = await store.restores(conn, account_id, limit=RESTORES_SHOWN)
    return {
        "account": {**dataclasses.asdict(acct), "status": acct.status.value},
        "books": books,
        "available": available(books),
        "staged": {"deposits": deposits, "writeoffs": writeoffs},
        "arrears": arrears.amount,
        "restores": restores,
    }


async def check_books(pool: Pool) -> dict[str, list[dict[str, Any]]]:
    """The ledger's invariants; every list empty when the books are sound."""
    async with pool.connection() as conn:
        return await ledger.check(conn)


# -- payments (B2, B3) -------------------------------------------------------------------


async def pay(
    journal: Journal,
    request: PaymentRequest,
    *,
    kind: str,
    actor: str,
    idempotency_key: str,
    limits: PaymentLimits | None = None,
    today: date | None = None,
) -> dict[str, Any]:
    """Take a deposit (kind 'deposit') or an arrears payment (kind 'arrears'). The
    idempotency key is required: replaying it answers the first outcome; with other
    content it is a Conflict. `limits` (the billing settings') bound the payment and the
    account's prepaid funds per currency. An arrears payment pays off the arrears (the
    past-due amount on `today`, default the current date) and keeps any excess as a
    deposit; covering all of them restores a suspended account at once."""
    try:
        payment_kind = PaymentKind(kind)
    except ValueError:
        raise InvalidInput("must be deposit or arrears", field="kind") from None
    key = check_idempotency_key(idempotency_key)
    limits = limits or PaymentLimits()
    fingerprint = request.fingerprint(kind)
    try:
        async with journal.pool.connection() as conn, conn.transaction():
            replay = await _replay(conn, key, fingerprint)
            if replay is not None:
                return replay
            outcome = await _take(
                conn,
                journal,
                request,
                kind=payment_kind,
                actor=actor,
                key=key,
                limits=limits,
                today=today or date.today(),
            )
            await store.record_payment(
                conn,
                key=key,
                fingerprint=fingerprint,
                account_id=request.account,
                kind=payment_kind,
                amount=outcome["amount_minor"],
                outcome=outcome,
            )
            await _sync_event(
                conn,
                "billing.payment_taken",
                (await ledger.account(conn, request.account)).customer_id,
                {
                    "account": request.account,
                    "kind": payment_kind.value,
                    "amount_minor": outcome["amount_minor"],
                },
            )
    except pg_errors.UniqueViolation:
        async with journal.pool.connection() as conn:  # a concurrent twin won: replay it
            replay = await _replay(conn, key, fingerprint)
        if replay is None:
            raise
        return replay
    return outcome


async def _replay(conn: Conn, key: str, fingerprint: str) -> dict[str, Any] | None:
    row = await store.payment_by_key(conn, key)
    if row is None:
        return None
    if row["request_hash"] != fingerprint:
        raise Conflict("was used before for a payment with other content", field="Idempotency-Key")
    return {**row["outcome"], "replay": True}


async def _take(
    conn: Conn,
    journal: Journal,
    request: PaymentRequest,
    *,
    kind: PaymentKind,
    actor: str,
    key: str,
    limits: PaymentLimits,
    today: date,
) -> dict[str, Any]:
    account = await ledger.account(conn, request.account, lock=True)
    if account.status is AccountStatus.CLOSED:
        raise Conflict(f"account {account.id} is closed: it takes no payments", field="account")
    if request.currency.upper() != account.currency:
        raise InvalidInput(f"is not the account's currency ({account.currency})", field="currency")
    minor = to_minor(request.amount, account.exponent, currency=account.currency)
    await store.lock_books_shared(conn)
    run_id, funds = await store.payment_context(conn, account.id, today=today)
    outcome: dict[str, Any] = {
        "account": account.id,
        "kind": kind.value,
        "amount": format_minor(minor, account.exponent),
        "amount_minor": minor,
        "currency": account.currency,
        "restored": [],
        "idempotency_key": key,
    }
    arrears = funds.arrears.amount
    writeoff, deposit = (
        split_arrears_payment(minor, arrears) if kind is PaymentKind.ARREARS else (0, minor)
    )
    check_payment_limits(
        minor,
        deposit=deposit,
        funds=funds,
        limits=limits,
        currency=account.currency,
        exponent=account.exponent,
    )
    if kind is PaymentKind.ARREARS:
        outcome.update(writeoff_minor=writeoff, deposit_minor=deposit)
        suspended = account.status is AccountStatus.SUSPENDED
        if restores_service(suspended=suspended, minor=minor, arrears=arrears):
            outcome["restored"] = await _service_changes(
                conn,
                journal,
                account.id,
                account.customer_id,
                restore=True,
                reason=f"arrears paid by {actor}",
                actor=actor,
                payment=key,
            )
    # An arrears payment beyond the arrears is two items: the write-off and a deposit
    # (they move different books, so the order settlement applies them in is immaterial).
    parts = [(PaymentKind.ARREARS, writeoff), (PaymentKind.DEPOSIT, deposit)]
    parts = [(part, amount) for part, amount in parts if amount > 0]
    if payment_status(run_id is not None) is PaymentStatus.STAGED:
        assert run_id is not None
        ids = []
        for part, amount in parts:
            row = await store.stage(
                conn,
                part,
                run_id=run_id,
                account_id=account.id,
                amount=amount,
                key=key,
                actor=actor,
            )
            ids.append(row["id"])
        outcome.update(
            status=PaymentStatus.STAGED.value,
            run_id=run_id,
            staged_id=ids[0],
            received_at=row["received_at"].isoformat(),
        )
        if len(ids) > 1:
            outcome["deposit_staged_id"] = ids[1]
        return outcome
    # The first part keeps the key the ledger has always had for a payment.
    tx_ids = []
    for i, (part, amount) in enumerate(parts):
        reference = f"payment:{key}" if i == 0 else f"payment:{key}:deposit"
        tx_ids.append(
            await ledger.post(
                conn,
                account.id,
                recipe_of(part),
                amount,
                actor=actor,
                key=reference,
                reference=reference,
            )
        )
    outcome.update(status=PaymentStatus.POSTED.value, transaction_id=tx_ids[0])
    if len(tx_ids) > 1:
        outcome["deposit_transaction_id"] = tx_ids[1]
    return outcome


async def _service_changes(
    conn: Conn,
    journal: Journal,
    account_id: str,
    customer_id: str,
    *,
    restore: bool,
    reason: str,
    actor: str,
    payment: str | None = None,
) -> list[str]:
    """Suspend or restore the account and every live contract billed to it, through
    the ledger's and customers' services, and queue the provisioning order (4204/4205)
    of each on the service lane, in the caller's transaction; returns the contracts. A
    restore triggered by a payment is recorded against it (billing.restores), and the
    lane's daemon records when each order was sent."""
    status = "active" if restore else "suspended"
    await ledger.set_account_status(conn, account_id, AccountStatus(status), actor=actor)
    # The contracts billed to this account (and any of the customer's from before
    # accounts were named on contracts): a customer's other accounts are not touched.
    contracts = [
        c
        for c in await customers.contracts_of_customer(conn, customer_id)
        if c.status is not customers.ContractStatus.TERMINATED
        and c.account_id in (account_id, None)
    ]
    orders = [
        ServiceOrder.change(
            restore=restore,
            account=account_id,
            sa_id=c.sa_id,
            product=c.product_code,
            reason=reason,
            payment=payment,
        )
        for c in contracts
    ]
    for contract in contracts:
        await customers.set_contract_status(conn, contract.sa_id, status, actor=actor)
        if payment is not None:
            await store.record_restore(
                conn, payment=payment, sa_id=contract.sa_id, account_id=account_id
            )
    await lanes.enqueue_service_orders(journal, conn, orders)
    return [c.sa_id for c in contracts]


async def authorize(
    journal: Journal, account_id: str, amount: object, currency: str
) -> dict[str, Any]:
    """B3: may this order be charged now? Online funds plus what is staged for the account."""
    check_text(account_id, "account")
    check_text(currency, "currency")
    async with journal.pool.connection() as conn:
        account = await ledger.account(conn, account_id)
        if currency.upper() != account.currency:
            raise InvalidInput(
                f"is not the account's currency ({account.currency})", field="currency"
            )
        minor = to_minor(amount, account.exponent, currency=account.currency)
        books = await ledger.balances(conn, account_id)
        deposits, writeoffs = await store.staged_totals(conn, account_id)
    funds = available(books) + deposits + writeoffs
    return {
        "account": account_id,
        "authorized": funds >= minor,
        "funds": format_minor(funds, account.exponent),
        "amount": format_minor(minor, account.exponent),
        "currency": account.currency,
    }


# -- B1: the bill period -----------------------------------------------------------------


async def current_state(conn: Conn, *, now: datetime | None = None) -> BillPeriodState:
    """Whether a run holds the books, in the caller's connection. Staging follows the
    run's real state, not the plan (B5)."""
    run = await store.open_run(conn)
    window = await store.planned_window(conn)
    planned_end = run["planned_end"] if run else None
    return BillPeriodState(
        staging=run is not None,
        run_id=run["id"] if run else None,
        run_status=run["status"] if run else None,
        planned_window=Window.model_validate(window) if window else None,
        overrunning=overrunning(planned_end, now or datetime.now(UTC)),
    )


async def bill_period_state(pool: Pool) -> BillPeriodState:
    async with pool.connection() as conn:
        return await current_state(conn)


async def add_window(
    pool: Pool, request: WindowRequest, *, actor: str, now: datetime | None = None
) -> int:
    """Plan a bill-run window for a bill cycle that has accounts; returns its id. A run
    of the cycle may open only while one of its windows contains now."""
    check_window(request.planned_start, request.planned_end, now=now or datetime.now(UTC))
    async with pool.connection() as conn, conn.transaction():
        await _check_cycle(conn, request.bill_cycle)
        return await store.add_window(
            conn, request.bill_cycle, request.planned_start, request.planned_end, actor=actor
        )


async def _check_cycle(conn: Conn, cycle: str) -> None:
    if not await store.cycle_has_accounts(conn, cycle):
        raise NotFound(f"no account bills in cycle {cycle}", field="cycle")


# -- runs (B4-B6) ------------------------------------------------------------------------


async def start_run(
    pool: Pool,
    *,
    cycle: str,
    period_start: date,
    period_end: date,
    due_days: int = 20,
    planned_end: datetime | None = None,
    actor: str,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    today: date | None = None,
) -> int:
    """Open a run: from this commit on, payments are staged (B2). The period must have
    begun, have ended at most `lookback_days` ago and overlap no other run of the cycle;
    the cycle must have accounts and a planned window containing now, whose end is the
    run's planned end unless one is given."""
    check_text(cycle, "cycle")
    check_period(period_start, period_end, today=today or date.today(), lookback_days=lookback_days)
    check_due_days(due_days)
    if planned_end is not None:
        check_planned_end(planned_end, now=datetime.now(UTC))
    try:
        async with pool.connection() as conn, conn.transaction():
            await _check_cycle(conn, cycle)
            window = await store.current_window(conn, cycle)
            if window is None:
                raise Conflict(
                    f"no bill-run window of the {cycle} cycle contains now: plan one first "
                    "(bossa billing window, POST /billing/windows)",
                    field="cycle",
                )
            await store.lock_books(conn)
            other = await store.overlapping_run(conn, cycle, period_start, period_end)
            if other is not None:
                raise Conflict(
                    f"bill run {other['id']} of the {cycle} cycle covers "
                    f"{other['period_start']} to {other['period_end']} already",
                    field="period_start",
                )
            run_id = await store.start_run(
                conn,
                cycle=cycle,
                period_start=period_start,
                period_end=period_end,
                due_days=due_days,
                planned_end=planned_end or window["planned_end"],
                actor=actor,
            )
            await _sync_event(
                conn,
                "billing.run_started",
                None,
                {"cycle": cycle, "run_id": run_id, "period_end": period_end.isoformat()},
            )
            return run_id
    except pg_errors.UniqueViolation as exc:
        async with pool.connection() as conn:
            open_run = await store.open_run(conn)
        if exc.diag.constraint_name == "runs_one_open" and open_run:
            raise Conflict(
                f"bill run {open_run['id']} is still {open_run['status']}", field="cycle"
            ) from exc
        raise Conflict(
            f"the {cycle} cycle was already billed for {period_start}", field="period_start"
        ) from exc


async def cancel_run(pool: Pool, run_id: int, *, actor: str, batch: int = 200) -> dict[str, Any]:
    """Cancel a run before billing has begun (no account billed): billing stops, and what
    was staged during it is settled as if no run had been open; who and when are
    recorded. Calling it again finishes an interrupted cancellation, or answers a
    cancelled run as it is."""
    _check_run_id(run_id)
    async with pool.connection() as conn, conn.transaction():
        run = await store.run_for_update(conn, run_id)  # after the chunks under way
        if run is None:
            raise NotFound(f"no bill run {run_id}", field="run")
        if run["status"] == RunStatus.CANCELLED:
            return {"run": run_id, "status": RunStatus.CANCELLED, "staged_applied": 0}
        if run["cancelled_at"] is None:
            if run["status"] != RunStatus.RUNNING:
                raise Conflict(
                    f"bill run {run_id} is {run['status']}: its accounts are billed, "
                    "so it can no longer be cancelled",
                    field="run",
                )
            billed = await store.billed_count(conn, run_id)
            if billed or not await store.cancel_run(conn, run_id, actor=actor):
                raise Conflict(
                    f"bill run {run_id} has begun billing ({billed} accounts billed): "
                    "finish it (bill, settle) instead",
                    field="run",
                )
    applied = await settle(pool, run_id, batch=batch, actor=actor)
    return {"run": run_id, "status": RunStatus.CANCELLED, "staged_applied": applied}


def _check_run_id(run_id: int) -> None:
    if not 1 <= run_id <= _BIGINT_MAX:
        raise NotFound(f"no bill run {run_id}", field="run")


async def _run(conn: Conn, run_id: int) -> dict[str, Any]:
    _check_run_id(run_id)
    row = await store.run(conn, run_id)
    if row is None:
        raise NotFound(f"no bill run {run_id}", field="run")
    return row


async def run_status(pool: Pool, run_id: int) -> dict[str, Any]:
    """A run, with the accounts billed so far and the share of the whole."""
    async with pool.connection() as conn:
        row = await _run(conn, run_id)
        billed = await store.billed_count(conn, run_id)
    return {**row, "billed": billed, "progress": billed / (row["accounts_total"] or 1)}


async def _progress(conn: Conn, run_id: int) -> RunProgress:
    _check_run_id(run_id)
    row = await store.progress(conn, run_id)
    if row is None:
        raise NotFound(f"no bill run {run_id}", field="run")
    return run_progress(row)


async def run_progress_of(pool: Pool, run_id: int) -> RunProgress:
    """A run's progress: phase, accounts total and billed, rate, time left, staged items
    left to settle (the API's and the CLI's one shape)."""
    async with pool.connection() as conn:
        return await _progress(conn, run_id)


async def bill(
    pool: Pool,
    run_id: int,
    *,
    workers: int = 1,
    chunk: int = 500,
    actor: str = "billing",
    progress: Progress | None = None,
) -> int:
    """Bill the run's pending accounts with parallel workers; when none is left, the run is
    over (B5) and settlement may begin. Returns the accounts billed by this call."""
    if not 1 <= workers <= MAX_WORKERS:
        raise InvalidInput(f"must be between 1 and {MAX_WORKERS}", field="workers")
    if not 1 <= chunk <= MAX_CHUNK:
        raise InvalidInput(f"must be between 1 and {MAX_CHUNK}", field="chunk")
    async with pool.connection() as conn:
        await _run(conn, run_id)
    billed = 0

    async def worker() -> None:
        nonlocal billed
        while True:
            async with pool.connection() as conn, conn.transaction():
                done, fees = await store.bill_chunk(conn, run_id, chunk, actor=actor)
                # S1: each fee charged publishes its CycleFeeApplied before the chunk
                # commits: a chunk that rolls back charged nothing and published nothing.
                await _fee_events(conn, fees)
            if done == 0:
                return
            billed += done
            if progress:
                async with pool.connection() as conn:
                    progress(await _progress(conn, run_id))

    await asyncio.gather(*(worker() for _ in range(workers)))
    async with pool.connection() as conn, conn.transaction():
        if await store.mark_settling(conn, run_id):
            run = await _run(conn, run_id)
            await _sync_event(
                conn, "billing.run_completed", None, {"cycle": run["bill_cycle"], "run_id": run_id}
            )
    return billed


async def _fee_events(conn: Conn, fees: list[dict[str, Any]]) -> None:
    """The CycleFeeApplied business events of a chunk's fees, in its transaction: each
    fee is a business operation of its own (two accounts of one customer: two events),
    all enqueued with one insert."""
    if not fees:
        return
    from bossa import sync  # sync's modules read the ledger: imported when used

    await sync.publish_each(
        conn,
        None,
        [
            [
                sync.InternalEvent(
                    name="billing.cycle_fee_applied",
                    customer_id=fee["customer"],
                    data={k: v for k, v in fee.items() if k != "customer"},
                )
            ]
            for fee in fees
        ],
    )


async def _sync_event(conn: Conn, name: str, customer: str | None, data: dict[str, Any]) -> None:
    """The business event for the rating pipeline, in this transaction (S1)."""
    from bossa import sync  # sync's modules read the ledger: imported when used

    await sync.publish(conn, None, [sync.InternalEvent(name=name, customer_id=customer, data=data)])


async def settle(pool: Pool, run_id: int, *, batch: int = 200, actor: str = "billing") -> int:
    """B4: apply the staged deposits and write-offs in the order they were taken, each
    once; then end staging. Returns the items applied by this call. A cancelled run's
    settlement ends it as cancelled."""
    if not 1 <= batch <= MAX_CHUNK:
        raise InvalidInput(f"must be between 1 and {MAX_CHUNK}", field="batch")
    async with pool.connection() as conn:
        run = await _run(conn, run_id)
    if run["status"] in (RunStatus.SETTLED, RunStatus.CANCELLED):
        return 0
    if run["status"] != RunStatus.SETTLING:
        raise Conflict(f"bill run {run_id} is still billing accounts", field="run")
    applied = 0
    # Catch up in rounds, each up to what was staged when it began, so that a steady
    # stream of payments cannot keep settlement going forever: each round is shorter.
    for _ in range(_CATCH_UP_ROUNDS):
        cutoff = datetime.now(UTC)
        applied_now = 0
        while True:
            async with pool.connection() as conn:
                done = await store.settle_batch(conn, cutoff, batch, actor=actor)
            applied_now += done
            if done < batch:
                break
        applied += applied_now
        if applied_now < batch:
            break
    # Under the exclusive lock no payment is being staged: apply the last few, end staging.
    async with pool.connection() as conn, conn.transaction():
        await store.lock_books(conn)
        applied += await store.settle_batch(conn, _FAR_FUTURE, 1_000_000, actor=actor)
        await store.mark_settled(conn, run_id)
    return applied


async def reconcile(pool: Pool, run_id: int, *, limit: int = 1000) -> dict[str, Any]:
    """B6: snapshot + the run's charges + the settled staged items = the final books,
    per account and in total; the first `limit` differences listed (none expected)."""
    if not 1 <= limit <= MAX_REPORT_ROWS:
        raise InvalidInput(f"must be between 1 and {MAX_REPORT_ROWS}", field="limit")
    async with pool.connection() as conn:
        run = await _run(conn, run_id)
        if run["status"] == RunStatus.CANCELLED:
            raise Conflict(
                f"bill run {run_id} was cancelled: it billed nothing to reconcile", field="run"
            )
        if run["status"] != RunStatus.SETTLED:
            raise Conflict(
                f"bill run {run_id} is {run['status']}: reconcile after settlement", field="run"
            )
        differences = await store.reconcile(conn, run_id, limit=limit)
        totals = await store.run_totals(conn, run_id)
    return {
        "run": run_id,
        "status": run["status"],
        "reconciled": not differences,
        "differences": differences,
        "totals": totals,
        "started_at": run["started_at"],
        "billed_at": run["billed_at"],
        "settled_at": run["settled_at"],
    }


# -- dunning -----------------------------------------------------------------------------


async def run_dunning(
    journal: Journal, *, today: date, limit: int = 1000, actor: str = "billing"
) -> list[str]:
    """Suspend every active account whose arrears are past their bills' due date plus its
    grace days, each in its own transaction with its contracts' suspend orders; returns
    the accounts suspended. Paying the arrears restores them (`pay`)."""
    async with journal.pool.connection() as conn:
        candidates = await store.overdue_accounts(conn, today=today, limit=limit)
    suspended: list[str] = []
    for candidate in candidates:
        async with journal.pool.connection() as conn, conn.transaction():
            # Asked again under the account's lock, which `pay` takes too: a payment
            # that committed since the list was read is seen, and one still running
            # is waited for, so an account is never suspended for arrears just paid.
            account = await ledger.account(conn, candidate["account_id"], lock=True)
            rows = await store.overdue_accounts(conn, today=today, limit=1, account=account.id)
            if not rows:
                log.info("dunning skipped a paid account", account=account.id)
                continue
            owed = format_minor(int(rows[0]["arrears"]), account.exponent)
            await _service_changes(
                conn,
                journal,
                account.id,
                account.customer_id,
                restore=False,
                reason=f"arrears of {owed} {account.currency} overdue on {today}",
                actor=actor,
            )
        suspended.append(account.id)
    return suspended


async def send_service_orders(
    journal: Journal,
    deliverer: Deliverer,
    *,
    listen_url: str | None = None,
    once: bool = False,
    install_signal_handlers: bool = False,
) -> None:
    """Run the service lane's daemon: each queued suspend or restore becomes a provisioning
    order. `once` stops when the lane is idle."""
    daemon = lanes.ServiceDaemon(journal, deliverer, listen_url=listen_url)
    await daemon.run(once=once, install_signal_handlers=install_signal_handlers)
