"""Sync: business events carry changes of account data to the rating pipeline (SPEC S;
docs/sync-and-rating.md, "Business events").

The public face: `publish` (a module's internal events of one business operation, in
its transaction: S1-S4), `contract_changed` (a contract's change: customers calls it),
`apply` (contracts' events to the account data), `listen` (the listener daemon),
`report` (the queue by state), the publisher's and listeners' switches, the account
router, the policy-hook and pipeline-module registries, and the event models.
"""

from bossa.sync.models import (
    ACCOUNT_SYNC_KIND,
    BUSINESS_KIND,
    AccountEvent,
    BusinessEvent,
    BusinessType,
    EventState,
    EventType,
    InternalEvent,
    LaneReport,
    ListenerState,
    PublisherState,
    policy,
)
from bossa.sync.service import (
    ModuleContext,
    apply,
    contract_changed,
    held,
    instance_of,
    listen,
    listener_state,
    module,
    publish,
    publish_each,
    publisher,
    report,
    request_recycle,
    set_route,
    switch_listener,
    switch_publisher,
)
from bossa.sync.settings import SyncSettings

__all__ = [
    "ACCOUNT_SYNC_KIND",
    "BUSINESS_KIND",
    "AccountEvent",
    "BusinessEvent",
    "BusinessType",
    "EventState",
    "EventType",
    "InternalEvent",
    "LaneReport",
    "ListenerState",
    "ModuleContext",
    "PublisherState",
    "SyncSettings",
    "apply",
    "contract_changed",
    "held",
    "instance_of",
    "listen",
    "listener_state",
    "module",
    "policy",
    "publish",
    "publish_each",
    "publisher",
    "report",
    "request_recycle",
    "set_route",
    "switch_listener",
    "switch_publisher",
]
