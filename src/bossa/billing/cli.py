"""`bossa billing ...` and `bossa ledger ...`: accounts, payments, bill runs, settlement,
reconciliation, dunning."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bossa import config
from bossa.billing import runs
from bossa.billing.dunning import run_dunning
from bossa.billing.payments import PaymentRequest, account_summary, authorize, pay
from bossa.billing.queries import QUERIES
from bossa.billing.settings import BillingSettings
from bossa.billing.state import current_state
from bossa.errors import InvalidInput
from bossa.ledger import store as ledger
from bossa.runtime import Runtime, running
from bossa.terminal import out, print_json, table

__all__ = ["billing_app", "ledger_app"]

T = TypeVar("T")
billing_app = typer.Typer(help="Bill runs that never stop business (B1-B6).", no_args_is_help=True)
ledger_app = typer.Typer(help="Accounts and the double-entry books.", no_args_is_help=True)
run_app = typer.Typer(help="Bill runs.", no_args_is_help=True)
pay_app = typer.Typer(
    help="Payments (staged during a run, answered at once).", no_args_is_help=True
)
billing_app.add_typer(run_app, name="run")
billing_app.add_typer(pay_app, name="pay")

ActorOpt = Annotated[str, typer.Option("--actor", envvar="USER", help="Who acts.")]
KeyOpt = Annotated[
    str | None, typer.Option("--idempotency-key", help="A replay returns the first result.")
]


def _with(action: Callable[[Runtime], Awaitable[T]]) -> T:
    async def go() -> T:
        settings = config.load(BillingSettings)
        async with running(actor="cli", pool_max=settings.workers + 2) as runtime:
            return await action(runtime)

    return asyncio.run(go())


def _date(text: str, field: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not a date (YYYY-MM-DD)", field=field) from None


@ledger_app.command("open")
def open_account(
    account: str,
    customer: str,
    currency: Annotated[str, typer.Option(help="ISO 4217 code")] = "KRW",
    cycle: Annotated[str, typer.Option(help="Bill cycle")] = "MONTHLY",
    grace_days: int = 14,
    actor: ActorOpt = "operator",
) -> None:
    """Open a billing account for a customer."""

    async def go(rt: Runtime) -> bool:
        async with rt.pool.connection() as conn:
            return await ledger.create_account(
                conn,
                account,
                customer,
                currency.upper(),
                cycle=cycle,
                grace_days=grace_days,
                actor=actor,
            )

    created = _with(go)
    out.print(f"account {account} {'opened' if created else 'exists already'}")


@ledger_app.command("show")
def show_account(account: str) -> None:
    """An account's books and staged items."""

    async def go(rt: Runtime) -> dict[str, Any]:
        async with rt.pool.connection() as conn:
            return await account_summary(conn, account)

    print_json(_with(go))


@ledger_app.command("check")
def check() -> None:
    """Prove the invariants: every transaction sums to zero; balances equal postings."""

    async def go(rt: Runtime) -> dict[str, list[dict[str, Any]]]:
        async with rt.pool.connection() as conn:
            return await ledger.check(conn)

    found = _with(go)
    if any(found.values()):
        print_json(found)
        raise typer.Exit(1)
    out.print("ledger ok: every transaction balances, every balance equals its postings")


def _pay(kind: str, account: str, amount: str, currency: str, key: str | None, actor: str) -> None:
    request = PaymentRequest.parse({"account": account, "amount": amount, "currency": currency})
    print_json(
        _with(lambda rt: pay(rt.journal, request, kind=kind, actor=actor, idempotency_key=key))
    )


@pay_app.command("deposit")
def pay_deposit(
    account: str,
    amount: str,
    currency: str,
    idempotency_key: KeyOpt = None,
    actor: ActorOpt = "front-office",
) -> None:
    """Take a prepayment deposit."""
    _pay("deposit", account, amount, currency, idempotency_key, actor)


@pay_app.command("arrears")
def pay_arrears(
    account: str,
    amount: str,
    currency: str,
    idempotency_key: KeyOpt = None,
    actor: ActorOpt = "front-office",
) -> None:
    """Pay off arrears (a write-off); restores a suspended account's service at once."""
    _pay("arrears", account, amount, currency, idempotency_key, actor)


@billing_app.command("authorize")
def authorize_cmd(account: str, amount: str, currency: str) -> None:
    """May an order of this amount be charged now (online funds plus staged payments)?"""
    print_json(_with(lambda rt: authorize(rt.journal, account, amount, currency)))


@billing_app.command("state")
def state() -> None:
    """B1: is a bill run in progress (planned window and real state)?"""

    async def go(rt: Runtime) -> dict[str, Any]:
        async with rt.pool.connection() as conn:
            return (await current_state(conn)).as_dict()

    print_json(_with(go))


@billing_app.command("window")
def window(cycle: str, start: str, end: str, actor: ActorOpt = "operator") -> None:
    """Plan a bill-run window (ISO times, e.g. 2026-12-01T00:00+09:00)."""
    try:
        planned = (datetime.fromisoformat(start), datetime.fromisoformat(end))
    except ValueError as exc:
        raise InvalidInput(str(exc), field="start/end") from exc

    async def go(rt: Runtime) -> Any:
        async with rt.pool.connection() as conn:
            return await (
                await conn.execute(
                    QUERIES["add_window"],
                    {"cycle": cycle, "start": planned[0], "end": planned[1], "actor": actor},
                )
            ).fetchone()

    out.print(f"window {_with(go)['id']} planned")


@run_app.command("start")
def run_start(
    period_start: str,
    period_end: str,
    cycle: Annotated[str, typer.Option()] = "MONTHLY",
    planned_hours: Annotated[
        float | None, typer.Option(help="Planned length of the window.")
    ] = None,
    actor: ActorOpt = "operator",
) -> None:
    """Open a bill run (snapshot the books; payments are staged from now on)."""
    start, end = _date(period_start, "period_start"), _date(period_end, "period_end")
    settings = config.load(BillingSettings)

    async def go(rt: Runtime) -> int:
        planned = None
        if planned_hours is not None:
            from datetime import UTC, timedelta

            planned = datetime.now(UTC) + timedelta(hours=planned_hours)
        return await runs.start_run(
            rt.pool,
            cycle=cycle,
            period_start=start,
            period_end=end,
            due_days=settings.due_days,
            planned_end=planned,
            actor=actor,
        )

    out.print(f"bill run {_with(go)} started")


@run_app.command("bill")
def run_bill(
    run: int,
    workers: Annotated[int | None, typer.Option()] = None,
    chunk: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Bill the run's accounts (resumable; several processes may share a run)."""
    settings = config.load(BillingSettings)

    async def go(rt: Runtime) -> int:
        with Progress(
            TextColumn(f"bill run {run}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=out,
            transient=False,
        ) as bar:
            task = bar.add_task("billing", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            return await runs.bill(
                rt.pool,
                run,
                workers=workers or settings.workers,
                chunk=chunk or settings.chunk_size,
                progress=progress,
            )

    out.print(f"{_with(go)} accounts billed by this process")


@run_app.command("settle")
def run_settle(run: int) -> None:
    """Apply what was staged during the run, in the order taken; then end staging."""
    settings = config.load(BillingSettings)
    applied = _with(lambda rt: runs.settle(rt.pool, run, batch=settings.settle_batch))
    out.print(f"{applied} staged items applied; run {run} settled")


@run_app.command("status")
def run_status(run: int) -> None:
    """A run's state and progress."""

    async def go(rt: Runtime) -> dict[str, Any]:
        async with rt.pool.connection() as conn:
            row = await (await conn.execute(QUERIES["run"], {"run": run})).fetchone()
            if row is None:
                raise InvalidInput(f"no bill run {run}", field="run")
            progress = await (await conn.execute(QUERIES["progress"], {"run": run})).fetchone()
        return {**row, "progress": progress}

    print_json(_with(go))


@billing_app.command("reconcile")
def reconcile_cmd(run: int) -> None:
    """B6: snapshot + charges + staged items = final books, per account and in total."""
    report = _with(lambda rt: runs.reconcile(rt.pool, run))
    totals = report["totals"]
    out.print(
        f"bill run {run}: {totals['bills']} bills, {totals['billed']} billed; "
        f"{totals['staged_deposits']} staged deposits ({totals['staged_deposit_amount']}), "
        f"{totals['staged_writeoffs']} staged write-offs ({totals['staged_writeoff_amount']})"
    )
    if report["reconciled"]:
        out.print("reconciled: no difference, per account and in total")
        return
    table(report["differences"], ["account_id", "book", "expected", "final"])
    raise typer.Exit(1)


@billing_app.command("dunning")
def dunning(
    today: Annotated[str | None, typer.Option(help="YYYY-MM-DD (default: today)")] = None,
) -> None:
    """Suspend accounts whose arrears are past their grace period (through provisioning)."""
    day = _date(today, "today") if today else date.today()
    suspended = _with(lambda rt: run_dunning(rt.journal, today=day))
    out.print(f"{len(suspended)} accounts suspended: {', '.join(suspended) or '-'}")


@billing_app.command("service-daemon")
def service_daemon(once: Annotated[bool, typer.Option()] = False) -> None:
    """Send billing's suspend/restore commands to provisioning (4204/4205)."""
    from bossa.billing.service import ServiceDaemon
    from bossa.provisioning import Deliverer

    async def go(rt: Runtime) -> None:
        deliverer = Deliverer(rt.pool)
        try:
            await ServiceDaemon(rt.journal, deliverer, listen_url=rt.url).run(
                once=once, install_signal_handlers=True
            )
        finally:
            await deliverer.close()

    _with(go)
