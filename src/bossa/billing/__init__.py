"""Bill runs without stopping business (B1-B6): staging during runs, settlement after,
reconciliation with the snapshot, dunning and restore. See docs/billing.md."""

from bossa.billing.dunning import run_dunning
from bossa.billing.payments import PaymentRequest, authorize, pay
from bossa.billing.runs import bill, reconcile, settle, start_run
from bossa.billing.service import ServiceDaemon
from bossa.billing.settings import BillingSettings
from bossa.billing.state import BillPeriodState, current_state

__all__ = [
    "BillPeriodState",
    "BillingSettings",
    "PaymentRequest",
    "ServiceDaemon",
    "authorize",
    "bill",
    "current_state",
    "pay",
    "reconcile",
    "run_dunning",
    "settle",
    "start_run",
]
