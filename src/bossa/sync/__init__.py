"""Sync: business events carry changes of account data to the rating pipeline (SPEC S;
docs/sync-and-rating.md, "Business events").

The public face: `contract_changed` (publish a contract's change in the caller's
transaction: customers calls it), `apply` (the account-data module), `listen` (the
listener daemon), `report` (the queue by state), and the event model.
"""

from bossa.sync.models import ACCOUNT_SYNC_KIND, AccountEvent, EventState, EventType, LaneReport
from bossa.sync.service import apply, contract_changed, held, listen, report
from bossa.sync.settings import SyncSettings

__all__ = [
    "ACCOUNT_SYNC_KIND",
    "AccountEvent",
    "EventState",
    "EventType",
    "LaneReport",
    "SyncSettings",
    "apply",
    "contract_changed",
    "held",
    "listen",
    "report",
]
