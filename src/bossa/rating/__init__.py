"""Rating: usage records (CDRs) priced with tariffs and the account data the sync
pipeline keeps current (SPEC S; docs/sync-and-rating.md)."""

from bossa.rating.models import BatchReport, SuspendedRecord, SuspenseReason, TariffVersion
from bossa.rating.service import (
    Pipeline,
    add_tariff,
    put_subscription,
    rate_file,
    subscribe,
    suspended,
    unsubscribe,
)

__all__ = [
    "BatchReport",
    "Pipeline",
    "SuspendedRecord",
    "SuspenseReason",
    "TariffVersion",
    "add_tariff",
    "put_subscription",
    "rate_file",
    "subscribe",
    "suspended",
    "unsubscribe",
]
