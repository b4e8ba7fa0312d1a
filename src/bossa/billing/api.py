"""HTTP routes of billing and of the ledger's accounts: accounts, payments, authorisation,
the bill period, runs, reconciliation. Each route declares the permission it needs
(docs/security.md), parses a typed body, calls one service function and answers a typed
model, so /openapi.json documents every body. Audits record the caller's credential
(`principal.actor`), never a name from the body."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request

from bossa.access import Permission
from bossa.access.api import PrincipalDep, guarded
from bossa.billing import service
from bossa.billing.models import (
    IDEMPOTENCY_KEY,
    KEY_PATTERN,
    AccountOpened,
    AccountSummary,
    Authorization,
    BillPeriodState,
    PaymentOutcome,
    PaymentRequest,
    ReconcileReport,
    RunCancelled,
    RunProgress,
    RunRequest,
    RunStarted,
    RunState,
    WindowPlanned,
    WindowRequest,
)
from bossa.billing.settings import BillingSettings
from bossa.ledger import TEXT_PATTERN, AccountRequest
from bossa.runtime import Runtime

__all__ = ["router"]

router = APIRouter(tags=["billing"])

_BIGINT_MAX = 2**63 - 1


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
KeyHeader = Annotated[
    str,
    Header(
        alias=IDEMPOTENCY_KEY,
        min_length=1,
        max_length=128,
        json_schema_extra={"pattern": KEY_PATTERN},
        description="Required: 1-128 printable ASCII characters without spaces, unique per "
        "payment. Sending the same key again answers the first outcome (nothing is paid "
        "twice); the same key with other content is a 409.",
    ),
]
RunId = Annotated[int, Path(ge=1, le=_BIGINT_MAX, description="The bill run's id")]
_TEXT = {"pattern": TEXT_PATTERN}
AccountId = Annotated[
    str,
    Path(min_length=1, max_length=64, json_schema_extra=_TEXT, description="The account's id"),
]


@router.post("/ledger/accounts", status_code=201, **guarded(Permission.ACCOUNTS_WRITE))
async def open_account(
    body: AccountRequest, rt: RuntimeDep, principal: PrincipalDep
) -> AccountOpened:
    """Open a billing account; opening one that exists changes nothing (`created`: false)."""
    created = await service.open_account(rt.pool, body, actor=principal.actor)
    return AccountOpened(account=body.account, created=created)


@router.get("/ledger/accounts/{account}", **guarded(Permission.BILLING_READ))
async def show_account(account: AccountId, rt: RuntimeDep) -> AccountSummary:
    return AccountSummary.model_validate(await service.account_summary(rt.pool, account))


async def _pay(
    kind: str, body: PaymentRequest, rt: Runtime, principal: PrincipalDep, key: str
) -> dict[str, Any]:
    return await service.pay(
        rt.journal,
        body,
        kind=kind,
        actor=principal.actor,
        idempotency_key=key,
        limits=rt.settings(BillingSettings).limits(),
    )


@router.post(
    "/billing/payments/deposit",
    status_code=201,
    response_model=PaymentOutcome,
    response_model_exclude_none=True,
    **guarded(Permission.PAYMENTS_WRITE),
)
async def deposit(
    body: PaymentRequest, rt: RuntimeDep, principal: PrincipalDep, idempotency_key: KeyHeader
) -> dict[str, Any]:
    """A prepayment; staged and answered at once during a bill run. At most the currency's
    largest payment, and the account's prepaid funds stay within their maximum."""
    return await _pay("deposit", body, rt, principal, idempotency_key)


@router.post(
    "/billing/payments/arrears",
    status_code=201,
    response_model=PaymentOutcome,
    response_model_exclude_none=True,
    **guarded(Permission.PAYMENTS_WRITE),
)
async def arrears(
    body: PaymentRequest, rt: RuntimeDep, principal: PrincipalDep, idempotency_key: KeyHeader
) -> dict[str, Any]:
    """Pay off arrears; a suspended account clearing them is restored at once."""
    return await _pay("arrears", body, rt, principal, idempotency_key)


@router.get("/billing/authorize", **guarded(Permission.BILLING_READ))
async def authorize(
    account: Annotated[str, Query(min_length=1, max_length=64, json_schema_extra=_TEXT)],
    amount: Annotated[
        str, Query(min_length=1, max_length=64, description="In the currency, e.g. '12.50'")
    ],
    currency: Annotated[str, Query(min_length=3, max_length=3, json_schema_extra=_TEXT)],
    rt: RuntimeDep,
) -> Authorization:
    """B3: may an order of this amount be charged now (online funds plus staged items)?"""
    return Authorization.model_validate(
        await service.authorize(rt.journal, account, amount, currency)
    )


@router.get("/billing/state", **guarded(Permission.BILLING_READ))
async def state(rt: RuntimeDep) -> BillPeriodState:
    """B1: is a bill run in progress (the planned window and the run's real state)?"""
    return await service.bill_period_state(rt.pool)


@router.post("/billing/windows", status_code=201, **guarded(Permission.BILLING_RUN))
async def plan_window(
    body: WindowRequest, rt: RuntimeDep, principal: PrincipalDep
) -> WindowPlanned:
    """B1: plan a bill-run window for a bill cycle; a run of the cycle opens only inside one."""
    return WindowPlanned(window=await service.add_window(rt.pool, body, actor=principal.actor))


@router.post("/billing/runs", status_code=201, **guarded(Permission.BILLING_RUN))
async def start(body: RunRequest, rt: RuntimeDep, principal: PrincipalDep) -> RunStarted:
    """Open a bill run inside a planned window of its cycle, for a period that has begun
    and ended at most BOSSA_BILLING_PERIOD_LOOKBACK_DAYS ago: the books are snapshot;
    payments are staged from now on."""
    settings = rt.settings(BillingSettings)
    run_id = await service.start_run(
        rt.pool,
        cycle=body.bill_cycle,
        period_start=body.period_start,
        period_end=body.period_end,
        due_days=settings.due_days if body.due_days is None else body.due_days,
        planned_end=body.planned_end,
        actor=principal.actor,
        lookback_days=settings.period_lookback_days,
    )
    return RunStarted(run=run_id)


@router.get("/billing/runs/{run}", **guarded(Permission.BILLING_READ))
async def run_status(run: RunId, rt: RuntimeDep) -> RunState:
    return RunState.model_validate(await service.run_status(rt.pool, run))


@router.get("/billing/runs/{run}/progress", **guarded(Permission.BILLING_READ))
async def run_progress(run: RunId, rt: RuntimeDep) -> RunProgress:
    """A run's progress: phase, accounts total and billed, rate over the last minute,
    seconds left, staged items left to settle (`bossa billing run progress` shows the
    same)."""
    return await service.run_progress_of(rt.pool, run)


@router.post("/billing/runs/{run}/cancel", **guarded(Permission.BILLING_RUN))
async def cancel(run: RunId, rt: RuntimeDep, principal: PrincipalDep) -> RunCancelled:
    """Cancel a run before any account is billed: what was staged during it is settled as
    if no run had been open, and its period may be billed by a later run. Cancelling a
    cancelled run answers it again."""
    settings = rt.settings(BillingSettings)
    return RunCancelled.model_validate(
        await service.cancel_run(rt.pool, run, actor=principal.actor, batch=settings.settle_batch)
    )


@router.get("/billing/runs/{run}/reconcile", **guarded(Permission.BILLING_RUN))
async def reconcile(
    run: RunId,
    rt: RuntimeDep,
    limit: Annotated[
        int, Query(ge=1, le=service.MAX_REPORT_ROWS, description="Differences listed at most")
    ] = 1000,
) -> ReconcileReport:
    """B6: snapshot + the run's charges + the settled staged items = the final books."""
    return ReconcileReport.model_validate(await service.reconcile(rt.pool, run, limit=limit))
