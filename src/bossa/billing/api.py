"""HTTP routes of billing and of the ledger's accounts: accounts, payments, authorisation,
the bill period, runs, reconciliation. Each route parses a typed body, calls one service
function and answers a typed model, so /openapi.json documents every body."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import Field

from bossa.billing import service
from bossa.billing.models import (
    AccountOpened,
    AccountSummary,
    Authorization,
    BillPeriodState,
    PaymentOutcome,
    PaymentRequest,
    ReconcileReport,
    RunRequest,
    RunStarted,
    RunState,
    WindowPlanned,
    WindowRequest,
)
from bossa.billing.settings import BillingSettings
from bossa.errors import InvalidInput
from bossa.ledger import AccountRequest
from bossa.runtime import Runtime

__all__ = ["router"]


class _UserErrorRoute(APIRoute):
    """A body or parameter that fails validation is an `InvalidInput` naming the field, as
    the CLI says it (`parse_model`), not FastAPI's own `detail` list."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                first = exc.errors()[0]
                where = [str(part) for part in first.get("loc", ())][1:]  # drop body/query/path
                raise InvalidInput(first["msg"], field=".".join(where) or "body") from exc

        return checked


router = APIRouter(tags=["billing"], route_class=_UserErrorRoute)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
KeyHeader = Annotated[
    str | None, Header(description="A replay with the same key answers the first outcome")
]


class AccountBody(AccountRequest):
    actor: str = Field(description="Who opens it (audited)")


class RunBody(RunRequest):
    actor: str = Field(description="Who starts the run (audited)")


class WindowBody(WindowRequest):
    actor: str = Field(description="Who plans it (audited)")


@router.post("/ledger/accounts", status_code=201)
async def open_account(body: AccountBody, rt: RuntimeDep) -> AccountOpened:
    created = await service.open_account(rt.pool, body, actor=body.actor)
    return AccountOpened(account=body.account, created=created)


@router.get("/ledger/accounts/{account}")
async def show_account(account: str, rt: RuntimeDep) -> AccountSummary:
    return AccountSummary.model_validate(await service.account_summary(rt.pool, account))


@router.post(
    "/billing/payments/deposit",
    status_code=201,
    response_model=PaymentOutcome,
    response_model_exclude_none=True,
)
async def deposit(
    body: PaymentRequest, rt: RuntimeDep, idempotency_key: KeyHeader = None
) -> dict[str, Any]:
    """A prepayment; staged and answered at once during a bill run."""
    return await service.pay(
        rt.journal, body, kind="deposit", actor="api", idempotency_key=idempotency_key
    )


@router.post(
    "/billing/payments/arrears",
    status_code=201,
    response_model=PaymentOutcome,
    response_model_exclude_none=True,
)
async def arrears(
    body: PaymentRequest, rt: RuntimeDep, idempotency_key: KeyHeader = None
) -> dict[str, Any]:
    """Pay off arrears; a suspended account clearing them is restored at once."""
    return await service.pay(
        rt.journal, body, kind="arrears", actor="api", idempotency_key=idempotency_key
    )


@router.get("/billing/authorize")
async def authorize(account: str, amount: str, currency: str, rt: RuntimeDep) -> Authorization:
    """B3: may an order of this amount be charged now (online funds plus staged items)?"""
    return Authorization.model_validate(
        await service.authorize(rt.journal, account, amount, currency)
    )


@router.get("/billing/state")
async def state(rt: RuntimeDep) -> BillPeriodState:
    """B1: is a bill run in progress (the planned window and the run's real state)?"""
    return await service.bill_period_state(rt.pool)


@router.post("/billing/windows", status_code=201)
async def plan_window(body: WindowBody, rt: RuntimeDep) -> WindowPlanned:
    """B1: plan a bill-run window for a bill cycle."""
    return WindowPlanned(window=await service.add_window(rt.pool, body, actor=body.actor))


@router.post("/billing/runs", status_code=201)
async def start(body: RunBody, rt: RuntimeDep) -> RunStarted:
    """Open a bill run: the books are snapshot; payments are staged from now on."""
    run_id = await service.start_run(
        rt.pool,
        cycle=body.bill_cycle,
        period_start=body.period_start,
        period_end=body.period_end,
        due_days=rt.settings(BillingSettings).due_days if body.due_days is None else body.due_days,
        planned_end=body.planned_end,
        actor=body.actor,
    )
    return RunStarted(run=run_id)


@router.get("/billing/runs/{run}")
async def run_status(run: int, rt: RuntimeDep) -> RunState:
    return RunState.model_validate(await service.run_status(rt.pool, run))


@router.get("/billing/runs/{run}/reconcile")
async def reconcile(run: int, rt: RuntimeDep) -> ReconcileReport:
    """B6: snapshot + the run's charges + the settled staged items = the final books."""
    return ReconcileReport.model_validate(await service.reconcile(rt.pool, run))
