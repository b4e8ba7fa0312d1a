"""Rating: usage records (CDRs) priced with tariffs and the account data the sync
pipeline keeps current (SPEC S; docs/sync-and-rating.md).

For the sync listener, in its ack's transaction: `subscribe` / `unsubscribe` (a product
bought, changed, cancelled), `account_changed` (any other change of a number's or an
account's data: pipelines drop it from memory and load it again on next usage),
`billing_started` / `billing_completed` (S14 holds), and `recycle_fixed` (a recycle
request, with `force=True`, outside any transaction: it rates). For the interleaving
pipeline (S13, `bossa sync pipeline`): `Inbox` and `rate_inbox_file`, the inbox
daemon's look and its per-file step."""

from bossa.rating.models import (
    BatchReport,
    RatedRecord,
    RecycleReport,
    RerateReport,
    SuspendedRecord,
    SuspenseReason,
    TariffRequest,
    TariffVersion,
)
from bossa.rating.service import (
    Inbox,
    Pipeline,
    account_changed,
    add_tariff,
    billing_completed,
    billing_started,
    put_subscription,
    rate_file,
    rate_inbox_file,
    rate_records,
    rated,
    recycle,
    recycle_fixed,
    recycle_requested,
    rerate,
    subscribe,
    suspended,
    unsubscribe,
)

__all__ = [
    "BatchReport",
    "Inbox",
    "Pipeline",
    "RatedRecord",
    "RecycleReport",
    "RerateReport",
    "SuspendedRecord",
    "SuspenseReason",
    "TariffRequest",
    "TariffVersion",
    "account_changed",
    "add_tariff",
    "billing_completed",
    "billing_started",
    "put_subscription",
    "rate_file",
    "rate_inbox_file",
    "rate_records",
    "rated",
    "recycle",
    "recycle_fixed",
    "recycle_requested",
    "rerate",
    "subscribe",
    "suspended",
    "unsubscribe",
]
