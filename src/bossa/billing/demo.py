"""The billing chapter of `bossa demo`: a bill run over the sample accounts while
payments arrive; one customer clears arrears and gets service back mid-run; then
settlement and the reconciliation report."""

from __future__ import annotations

from datetime import date

from rich.console import Console

from bossa.billing import service
from bossa.billing.models import PaymentRequest
from bossa.ledger import AccountRequest, format_minor
from bossa.runtime import Runtime
from bossa.terminal import table

__all__ = ["chapter"]


async def chapter(out: Console, runtime: Runtime) -> None:
    journal = runtime.journal
    pool = runtime.pool

    async def say_payment(account: str, amount: str, kind: str) -> None:
        result = await service.pay(
            journal,
            PaymentRequest(account=account, amount=amount, currency="KRW"),
            kind=kind,
            actor="front-office",
        )
        extra = (
            f", service restored for {', '.join(result['restored'])}" if result["restored"] else ""
        )
        out.print(f"  {kind} {amount} KRW from {account}: {result['status']}{extra}")

    for n in range(1001, 1005):
        request = AccountRequest(account=f"A-{n}", customer=f"C-{n}", currency="KRW")
        await service.open_account(pool, request, actor="demo")
    out.print("Accounts A-1001..A-1004 (KRW). Prepayments before October's run:")
    for account_id, amount in (
        ("A-1001", "5000000"),
        ("A-1003", "3000000"),
        ("A-1004", "1000000"),
    ):
        await say_payment(account_id, amount, "deposit")
    october = await service.start_run(
        pool,
        cycle="MONTHLY",
        period_start=date(2026, 10, 1),
        period_end=date(2026, 10, 31),
        actor="demo",
    )
    billed = await service.bill(pool, october)
    await service.settle(pool, october)
    out.print(f"October run {october}: {billed} accounts billed and settled. A-1002 paid nothing.")
    suspended = await service.run_dunning(journal, today=date(2026, 12, 15), actor="demo")
    await service.send_service_orders(journal, runtime.deliverer, once=True)
    out.print(
        f"Dunning on 2026-12-15 suspends {', '.join(suspended)}: order 4204 for its "
        "contract goes through provisioning."
    )

    november = await service.start_run(
        pool,
        cycle="MONTHLY",
        period_start=date(2026, 11, 1),
        period_end=date(2026, 11, 30),
        actor="demo",
    )
    out.print(
        f"[bold]November run {november} starts[/bold]: the books are snapshot; payments "
        "are staged and answered at once."
    )
    await say_payment("A-1004", "500000", "deposit")
    await say_payment("A-1002", "1900000", "arrears")
    await service.send_service_orders(journal, runtime.deliverer, once=True)
    async with pool.connection() as conn:
        # The tour shows provisioning's own record of the restore (its orders table).
        restored = await (
            await conn.execute(
                "select wo_no, sa_id, intf_code, result, completed_at from provisioning.orders"
                " where sa_id = 'SA-5003' and intf_code = '4205'"
            )
        ).fetchall()
    for row in restored:
        out.print(
            f"  restore {row['wo_no']} for {row['sa_id']} completed during the run: {row['result']}"
        )
    billed = await service.bill(pool, november)
    out.print(f"  {billed} accounts billed; the run is over, settlement begins")
    await say_payment("A-1003", "250000", "deposit")
    applied = await service.settle(pool, november)
    out.print(f"Settlement applies the {applied} staged items in the order they were taken.")
    report = await service.reconcile(pool, november)
    totals = report["totals"]
    out.print(
        f"Reconciliation of run {november}: {totals['bills']} bills, "
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
