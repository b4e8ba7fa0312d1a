"""The billing chapter of `bossa demo`: a bill run over the sample accounts while
payments arrive; one customer clears arrears and gets service back mid-run; then
settlement and the reconciliation report. The runs bill the last two months before
today, each inside a bill-run window planned for it."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from rich.console import Console

from bossa.billing import service
from bossa.billing.models import PaymentRequest, WindowRequest
from bossa.ledger import AccountRequest, format_minor
from bossa.provisioning import OrderType
from bossa.provisioning import service as provisioning
from bossa.runtime import Runtime
from bossa.terminal import table

__all__ = ["chapter"]


def _month_before(first: date) -> tuple[date, date]:
    """The month before the one starting on `first`: (its first day, its last day)."""
    last = first - timedelta(days=1)
    return last.replace(day=1), last


async def _open_run(runtime: Runtime, period: tuple[date, date]) -> int:
    """A window of the MONTHLY cycle from now for four hours, and the period's run in it."""
    now = datetime.now(UTC)
    window = WindowRequest(
        bill_cycle="MONTHLY",
        planned_start=now - timedelta(minutes=1),
        planned_end=now + timedelta(hours=4),
    )
    await service.add_window(runtime.pool, window, actor="demo")
    return await service.start_run(
        runtime.pool, cycle="MONTHLY", period_start=period[0], period_end=period[1], actor="demo"
    )


async def chapter(out: Console, runtime: Runtime) -> None:
    journal = runtime.journal
    pool = runtime.pool
    last_month = _month_before(date.today().replace(day=1))
    month_before = _month_before(last_month[0])

    async def say_payment(account: str, amount: str, kind: str) -> None:
        result = await service.pay(
            journal,
            PaymentRequest(account=account, amount=amount, currency="KRW"),
            kind=kind,
            actor="front-office",
            idempotency_key=f"demo-{uuid.uuid4()}",
        )
        extra = (
            f", service restored for {', '.join(result['restored'])}" if result["restored"] else ""
        )
        out.print(f"  {kind} {amount} KRW from {account}: {result['status']}{extra}")

    for n in range(1001, 1005):
        request = AccountRequest(account=f"A-{n}", customer=f"C-{n}", currency="KRW")
        await service.open_account(pool, request, actor="demo")
    first_name = f"{month_before[0]:%B}"
    second_name = f"{last_month[0]:%B}"
    out.print(f"Accounts A-1001..A-1004 (KRW). Prepayments before {first_name}'s run:")
    for account_id, amount in (
        ("A-1001", "5000000"),
        ("A-1003", "3000000"),
        ("A-1004", "1000000"),
    ):
        await say_payment(account_id, amount, "deposit")
    first = await _open_run(runtime, month_before)
    billed = await service.bill(pool, first)
    await service.settle(pool, first)
    out.print(
        f"{first_name} run {first}: {billed} accounts billed and settled. A-1002 paid nothing."
    )
    # Dunning as it would run once the first bills are past due (20 days) and grace (14).
    dunning_day = month_before[1] + timedelta(days=20 + 14 + 1)
    suspended = await service.run_dunning(journal, today=dunning_day, actor="demo")
    await service.send_service_orders(journal, runtime.deliverer, once=True)
    out.print(
        f"Dunning on {dunning_day} suspends {', '.join(suspended)}: order 4204 for its "
        "contract goes through provisioning."
    )

    second = await _open_run(runtime, last_month)
    out.print(
        f"[bold]{second_name} run {second} starts[/bold]: the books are snapshot; payments "
        "are staged and answered at once."
    )
    await say_payment("A-1004", "500000", "deposit")
    await say_payment("A-1002", "1900000", "arrears")
    await service.send_service_orders(journal, runtime.deliverer, once=True)
    # Provisioning's own record of the restore: its log names the work order, its
    # service gives the order.
    log = await provisioning.delivery_log(pool, sa_id="SA-5003", limit=1000)
    restores = dict.fromkeys(row.wo_no for row in log if row.intf_code == OrderType.RESUME)
    for wo_no in restores:
        order = await provisioning.order(pool, wo_no)
        routes = ", ".join(f"{d}={r}" for d, r in order.divisions.items())
        out.print(
            f"  restore {order.wo_no} for {order.sa_id} {order.status} during the run: {routes}"
        )
    billed = await service.bill(pool, second)
    out.print(f"  {billed} accounts billed; the run is over, settlement begins")
    await say_payment("A-1003", "250000", "deposit")
    applied = await service.settle(pool, second)
    out.print(f"Settlement applies the {applied} staged items in the order they were taken.")
    report = await service.reconcile(pool, second)
    totals = report["totals"]
    out.print(
        f"Reconciliation of run {second}: {totals['bills']} bills, "
        f"{totals['staged_deposits']} staged deposits, {totals['staged_writeoffs']} "
        f"staged write-offs; {'no difference' if report['reconciled'] else 'DIFFERENCES'}"
    )
    rows = []
    for n in range(1001, 1005):
        summary = await service.account_summary(pool, f"A-{n}")
        books = summary["books"]
        rows.append(
            {
                "account": f"A-{n}",
                "status": summary["account"]["status"],
                "prepaid": format_minor(-books["prepaid"], 0),
                "owed": format_minor(books["receivable"], 0),
            }
        )
    check = await service.check_books(pool)
    table(rows, ["account", "status", "prepaid", "owed"])
    out.print("ledger check: " + ("ok" if not any(check.values()) else str(check)))
