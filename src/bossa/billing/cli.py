"""`bossa billing ...` and `bossa ledger ...`: accounts, payments, bill runs, settlement,
reconciliation, dunning. Each command parses its options, calls one service function and
renders the result. Audits record the CLI's actor (`bossa.access.cli_principal`: the
operating-system user, or BOSSA_ACCESS_CLI_ACTOR)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from bossa.access import cli_principal
from bossa.billing import service
from bossa.billing.models import (
    MAX_WINDOW,
    PaymentRequest,
    RunPhase,
    RunProgress,
    RunRequest,
    WindowRequest,
)
from bossa.billing.settings import MAX_CHUNK, MAX_WORKERS, BillingSettings
from bossa.clitools import date_arg, with_runtime
from bossa.ledger import AccountRequest
from bossa.runtime import Runtime
from bossa.terminal import out, print_json, table

__all__ = ["billing_app", "ledger_app"]

billing_app = typer.Typer(help="Bill runs that never stop business (B1-B6).", no_args_is_help=True)
ledger_app = typer.Typer(help="Accounts and the double-entry books.", no_args_is_help=True)
run_app = typer.Typer(help="Bill runs.", no_args_is_help=True)
pay_app = typer.Typer(
    help="Payments (staged during a run, answered at once).", no_args_is_help=True
)
billing_app.add_typer(run_app, name="run")
billing_app.add_typer(pay_app, name="pay")

KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        help="1-128 printable ASCII characters, no spaces. Without it, each invocation makes "
        "a new key (printed in the answer): give that key again to retry safely; a replay "
        "returns the first result and pays nothing twice.",
    ),
]


def _actor() -> str:
    return cli_principal().actor


@ledger_app.command("open")
def open_account(
    account: str,
    customer: str,
    currency: Annotated[str, typer.Option(help="ISO 4217 code")] = "KRW",
    cycle: Annotated[str, typer.Option(help="Bill cycle")] = "MONTHLY",
    grace_days: Annotated[
        int, typer.Option(min=0, max=3650, help="Days past a bill's due date before dunning")
    ] = 14,
) -> None:
    """Open a billing account for a customer."""
    request = AccountRequest.parse(
        {
            "account": account,
            "customer": customer,
            "currency": currency,
            "bill_cycle": cycle,
            "grace_days": grace_days,
        }
    )
    actor = _actor()
    created = with_runtime(lambda rt: service.open_account(rt.pool, request, actor=actor))
    out.print(f"account {account} {'opened' if created else 'exists already'}")


@ledger_app.command("show")
def show_account(account: str) -> None:
    """An account's books and staged items."""
    print_json(with_runtime(lambda rt: service.account_summary(rt.pool, account)))


@ledger_app.command("check")
def check() -> None:
    """Prove the invariants: every transaction sums to zero; balances equal postings."""
    found = with_runtime(lambda rt: service.check_books(rt.pool))
    if any(found.values()):
        print_json(found)
        raise typer.Exit(1)
    out.print("ledger ok: every transaction balances, every balance equals its postings")


def _pay(kind: str, account: str, amount: str, currency: str, key: str | None) -> None:
    request = PaymentRequest.parse({"account": account, "amount": amount, "currency": currency})
    actor = _actor()
    key = key if key is not None else f"cli-{uuid.uuid4()}"
    print_json(
        with_runtime(
            lambda rt: service.pay(
                rt.journal,
                request,
                kind=kind,
                actor=actor,
                idempotency_key=key,
                limits=rt.settings(BillingSettings).limits(),
            )
        )
    )


@pay_app.command("deposit")
def pay_deposit(account: str, amount: str, currency: str, idempotency_key: KeyOpt = None) -> None:
    """Take a prepayment deposit (at most the currency's largest payment; the account's
    prepaid funds stay within their maximum)."""
    _pay("deposit", account, amount, currency, idempotency_key)


@pay_app.command("arrears")
def pay_arrears(account: str, amount: str, currency: str, idempotency_key: KeyOpt = None) -> None:
    """Pay off arrears (a write-off); restores a suspended account's service at once."""
    _pay("arrears", account, amount, currency, idempotency_key)


@billing_app.command("authorize")
def authorize(account: str, amount: str, currency: str) -> None:
    """May an order of this amount be charged now (online funds plus staged payments)?"""
    print_json(with_runtime(lambda rt: service.authorize(rt.journal, account, amount, currency)))


@billing_app.command("state")
def state() -> None:
    """B1: is a bill run in progress (planned window and real state)?"""
    found = with_runtime(lambda rt: service.bill_period_state(rt.pool))
    print_json(found.model_dump(mode="json"))


@billing_app.command("window")
def window(cycle: str, start: str, end: str) -> None:
    """Plan a bill-run window (ISO times with their offset, e.g. 2026-12-01T00:00+09:00);
    a run of the cycle opens only inside one. At most 7 days long, ending in the future."""
    request = WindowRequest.parse({"bill_cycle": cycle, "planned_start": start, "planned_end": end})
    actor = _actor()
    planned = with_runtime(lambda rt: service.add_window(rt.pool, request, actor=actor))
    out.print(f"window {planned} planned")


@run_app.command("start")
def run_start(
    period_start: str,
    period_end: str,
    cycle: Annotated[str, typer.Option()] = "MONTHLY",
    planned_hours: Annotated[
        float | None,
        typer.Option(
            help="When the run should be over, in hours from now (default: its window's end).",
            min=0,
            max=MAX_WINDOW.days * 24,
        ),
    ] = None,
    due_days: Annotated[
        int | None,
        typer.Option(
            help="Days from the period's end to the due date (default: settings).", min=1, max=90
        ),
    ] = None,
) -> None:
    """Open a bill run inside a planned window of the cycle (snapshot the books; payments
    are staged from now on). The period must have begun and have ended at most
    BOSSA_BILLING_PERIOD_LOOKBACK_DAYS ago."""
    actor = _actor()
    planned_end = None
    if planned_hours is not None:
        planned_end = datetime.now(UTC) + timedelta(hours=planned_hours)
    request = RunRequest.parse(
        {
            "period_start": period_start,
            "period_end": period_end,
            "bill_cycle": cycle,
            "planned_end": planned_end,
            "due_days": due_days,
        }
    )

    async def go(rt: Runtime) -> int:
        settings = rt.settings(BillingSettings)
        return await service.start_run(
            rt.pool,
            cycle=request.bill_cycle,
            period_start=request.period_start,
            period_end=request.period_end,
            due_days=settings.due_days if request.due_days is None else request.due_days,
            planned_end=request.planned_end,
            actor=actor,
            lookback_days=settings.period_lookback_days,
        )

    out.print(f"bill run {with_runtime(go)} started")


@run_app.command("cancel")
def run_cancel(run: int) -> None:
    """Cancel a run before any account is billed: what was staged during it is settled as
    if no run had been open (audited); its period may be billed by a later run."""
    actor = _actor()
    done = with_runtime(
        lambda rt: service.cancel_run(
            rt.pool, run, actor=actor, batch=rt.settings(BillingSettings).settle_batch
        )
    )
    out.print(f"bill run {run} cancelled; {done['staged_applied']} staged items applied")


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "eta ?"
    return f"eta {timedelta(seconds=round(seconds))}"


def _rate(per_s: float | None) -> str:
    return "-" if per_s is None else f"{per_s:,.1f}/s"


def progress_line(p: RunProgress) -> str:
    """One plain line of a run's progress (what a pipe or a log file gets)."""
    return (
        f"bill run {p.run}: {p.phase.value} {p.accounts_billed:,}/{p.accounts_total:,}"
        f" accounts ({p.ratio:.1%}), {_rate(p.rate_per_s)}, {_eta(p.eta_s)},"
        f" {p.staged_unsettled:,} staged to settle"
    )


class RunBar:
    """A run's progress (`RunProgress`, the API's shape) as a rich bar on a terminal, and
    as plain lines, at most one every `plain_every_s` and the last one always, when
    stdout is not a terminal."""

    def __init__(self, run: int, *, plain_every_s: float = 5.0) -> None:
        self.run = run
        self.plain_every_s = plain_every_s
        self.last: RunProgress | None = None
        self._printed = 0.0
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._last_line: str | None = None

    def __enter__(self) -> RunBar:
        if out.is_terminal:
            self._bar = Progress(
                TextColumn(f"bill run {self.run}"),
                TextColumn("{task.fields[phase]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TextColumn("{task.fields[eta]}"),
                console=out,
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                "billing", total=None, phase="waiting", rate="-", eta="eta ?"
            )
        return self

    def show(self, p: RunProgress) -> None:
        self.last = p
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task,
                completed=p.accounts_billed,
                total=p.accounts_total,
                phase=p.phase.value,
                rate=_rate(p.rate_per_s),
                eta=_eta(p.eta_s),
            )
            return
        now = time.monotonic()
        if now - self._printed >= self.plain_every_s:
            self._printed = now
            self._write(progress_line(p))

    def _write(self, line: str) -> None:
        # Written as is: rich would wrap it at 80 columns when stdout is not a terminal.
        self._last_line = line
        out.file.write(line + "\n")
        out.file.flush()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, error, trace)
        elif self.last is not None and kind is None:
            final = progress_line(self.last)
            if final != self._last_line:  # the last state, always
                self._write(final)


@run_app.command("bill")
def run_bill(
    run: int,
    workers: Annotated[int | None, typer.Option(min=1, max=MAX_WORKERS)] = None,
    chunk: Annotated[int | None, typer.Option(min=1, max=MAX_CHUNK)] = None,
) -> None:
    """Bill the run's accounts (resumable; several processes may share a run), with the
    run's progress (`run progress` shows the same from elsewhere)."""
    actor = _actor()

    async def go(rt: Runtime) -> int:
        settings = rt.settings(BillingSettings)
        with RunBar(run) as bar:
            return await service.bill(
                rt.pool,
                run,
                workers=workers or settings.workers,
                chunk=chunk or settings.chunk_size,
                actor=actor,
                progress=bar.show,
            )

    # A connection per worker plus one for progress; the pool opens them only as needed,
    # so the bound of the setting serves when the number comes from the settings.
    billed = with_runtime(go, pool_max=(workers or MAX_WORKERS) + 2)
    out.print(f"{billed} accounts billed by this process")


#: Phases in which `run progress --follow` keeps following.
_FOLLOWED = (RunPhase.WAITING, RunPhase.BILLING)


@run_app.command("progress")
def run_progress(
    run: int,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Follow the run while it waits or bills: a progress bar on a terminal, "
            "a plain line every 5 s otherwise; ends when billing is over.",
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.2, max=60.0, help="Seconds between two reads (--follow).")
    ] = 1.0,
) -> None:
    """A run's progress: phase, accounts total and billed, rate, time left, staged items
    left to settle (the shape of GET /billing/runs/{run}/progress)."""

    async def once(rt: Runtime) -> RunProgress:
        return await service.run_progress_of(rt.pool, run)

    async def follow_run(rt: Runtime) -> RunProgress:
        with RunBar(run) as bar:
            while True:
                found = await service.run_progress_of(rt.pool, run)
                bar.show(found)
                if found.phase not in _FOLLOWED:
                    return found
                await asyncio.sleep(interval)

    if not follow:
        print_json(with_runtime(once).model_dump(mode="json"))
        return
    final = with_runtime(follow_run)
    if out.is_terminal:  # under the bar; plain output ended with this line already
        out.print(progress_line(final))


@run_app.command("settle")
def run_settle(run: int) -> None:
    """Apply what was staged during the run, in the order taken; then end staging."""
    actor = _actor()
    applied = with_runtime(
        lambda rt: service.settle(
            rt.pool, run, batch=rt.settings(BillingSettings).settle_batch, actor=actor
        )
    )
    out.print(f"{applied} staged items applied; run {run} settled")


@run_app.command("status")
def run_status(run: int) -> None:
    """A run's state and progress."""
    print_json(with_runtime(lambda rt: service.run_status(rt.pool, run)))


@billing_app.command("reconcile")
def reconcile(
    run: int,
    limit: Annotated[
        int, typer.Option(min=1, max=service.MAX_REPORT_ROWS, help="Differences listed at most.")
    ] = 1000,
) -> None:
    """B6: snapshot + charges + staged items = final books, per account and in total."""
    report: dict[str, Any] = with_runtime(lambda rt: service.reconcile(rt.pool, run, limit=limit))
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
    actor = _actor()
    day = date_arg(today, "today") if today else date.today()
    suspended = with_runtime(lambda rt: service.run_dunning(rt.journal, today=day, actor=actor))
    out.print(f"{len(suspended)} accounts suspended: {', '.join(suspended) or '-'}")


@billing_app.command("service-daemon")
def service_daemon(once: Annotated[bool, typer.Option()] = False) -> None:
    """Send billing's suspend/restore commands to provisioning (4204/4205)."""
    with_runtime(
        lambda rt: service.send_service_orders(
            rt.journal, rt.deliverer, listen_url=rt.url, once=once, install_signal_handlers=True
        )
    )
