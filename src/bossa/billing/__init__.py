"""Bill runs without stopping business (B1-B6): staging during runs, settlement after,
reconciliation with the snapshot, dunning and restore. See docs/billing.md."""

from bossa.billing.lanes import SERVICE_LANE, ServiceDaemon
from bossa.billing.models import (
    BillPeriodState,
    PaymentLimits,
    PaymentRequest,
    RunStatus,
    ServiceOrder,
    WindowRequest,
)
from bossa.billing.service import (
    account_summary,
    add_window,
    authorize,
    bill,
    bill_period_state,
    cancel_run,
    check_books,
    current_state,
    open_account,
    pay,
    reconcile,
    run_dunning,
    run_status,
    send_service_orders,
    settle,
    start_run,
)
from bossa.billing.settings import BillingSettings

__all__ = [
    "SERVICE_LANE",
    "BillPeriodState",
    "BillingSettings",
    "PaymentLimits",
    "PaymentRequest",
    "RunStatus",
    "ServiceDaemon",
    "ServiceOrder",
    "WindowRequest",
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
    "run_status",
    "send_service_orders",
    "settle",
    "start_run",
]
