"""HTTP routes of billing and the ledger: accounts, payments, runs, reconciliation."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel

from bossa.billing import runs
from bossa.billing.payments import PaymentRequest, account_summary, authorize, pay
from bossa.billing.queries import QUERIES
from bossa.billing.state import current_state
from bossa.errors import NotFound
from bossa.journal import Journal
from bossa.ledger import store as ledger

__all__ = ["router"]

router = APIRouter(tags=["billing"])


def _journal(request: Request) -> Journal:
    journal: Journal = request.app.state.runtime.journal
    return journal


JournalDep = Annotated[Journal, Depends(_journal)]
KeyHeader = Annotated[str | None, Header()]


class AccountBody(BaseModel):
    account: str
    customer: str
    currency: str
    bill_cycle: str = "MONTHLY"
    grace_days: int = 14
    actor: str


class RunBody(BaseModel):
    period_start: date
    period_end: date
    bill_cycle: str = "MONTHLY"
    due_days: int = 20
    actor: str


@router.post("/ledger/accounts", status_code=201)
async def open_account(body: AccountBody, journal: JournalDep) -> dict[str, Any]:
    async with journal.pool.connection() as conn:
        created = await ledger.create_account(
            conn,
            body.account,
            body.customer,
            body.currency.upper(),
            cycle=body.bill_cycle,
            grace_days=body.grace_days,
            actor=body.actor,
        )
    return {"account": body.account, "created": created}


@router.get("/ledger/accounts/{account}")
async def show_account(account: str, journal: JournalDep) -> dict[str, Any]:
    async with journal.pool.connection() as conn:
        return await account_summary(conn, account)


@router.post("/billing/payments/deposit", status_code=201)
async def deposit(
    body: dict[str, Any], journal: JournalDep, idempotency_key: KeyHeader = None
) -> dict[str, Any]:
    """A prepayment; staged and answered at once during a bill run."""
    request = PaymentRequest.parse(body)
    return await pay(journal, request, kind="deposit", actor="api", idempotency_key=idempotency_key)


@router.post("/billing/payments/arrears", status_code=201)
async def arrears(
    body: dict[str, Any], journal: JournalDep, idempotency_key: KeyHeader = None
) -> dict[str, Any]:
    """Pay off arrears; a suspended account clearing them is restored at once."""
    request = PaymentRequest.parse(body)
    return await pay(journal, request, kind="arrears", actor="api", idempotency_key=idempotency_key)


@router.get("/billing/authorize")
async def authorize_route(
    account: str, amount: str, currency: str, journal: JournalDep
) -> dict[str, Any]:
    return await authorize(journal, account, amount, currency)


@router.get("/billing/state")
async def state(journal: JournalDep) -> dict[str, Any]:
    async with journal.pool.connection() as conn:
        return (await current_state(conn)).as_dict()


@router.post("/billing/runs", status_code=201)
async def start(body: RunBody, journal: JournalDep) -> dict[str, Any]:
    run_id = await runs.start_run(
        journal.pool,
        cycle=body.bill_cycle,
        period_start=body.period_start,
        period_end=body.period_end,
        due_days=body.due_days,
        actor=body.actor,
    )
    return {"run": run_id}


@router.get("/billing/runs/{run}")
async def run_status(run: int, journal: JournalDep) -> dict[str, Any]:
    async with journal.pool.connection() as conn:
        row = await (await conn.execute(QUERIES["run"], {"run": run})).fetchone()
        if row is None:
            raise NotFound(f"no bill run {run}", field="run")
        progress = await (await conn.execute(QUERIES["progress"], {"run": run})).fetchone()
    assert progress is not None
    total = int(progress["total"]) or 1
    return {**row, "billed": progress["billed"], "progress": int(progress["billed"]) / total}


@router.get("/billing/runs/{run}/reconcile")
async def reconcile_route(run: int, journal: JournalDep) -> dict[str, Any]:
    return await runs.reconcile(journal.pool, run)
