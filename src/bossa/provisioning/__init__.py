"""Backup-mode provisioning (P1-P11): orders that complete while a downstream server is
down, its command kept in that server's buffer and delivered later, in per-contract
order, once. See docs/provisioning.md.

The public face: the order and division models, the use cases other modules and the
runtime call (`submit` an order, divisions and plans), the `Deliverer` the runtime
holds, and the daemons.
"""

from bossa.provisioning.adapters.base import Command, DeliveryError
from bossa.provisioning.lanes import BackupDaemon, Deliverer, OrderDaemon, lane_of
from bossa.provisioning.models import (
    Division,
    Order,
    OrderRequest,
    OrderType,
    ProvisioningCommand,
    ServerType,
)
from bossa.provisioning.service import (
    Accepted,
    accept,
    add_division,
    add_plan_command,
    deliver_direct,
    list_divisions,
    plan_codes,
    submit,
    update_division,
)
from bossa.provisioning.settings import ProvisioningSettings

__all__ = [
    "Accepted",
    "BackupDaemon",
    "Command",
    "Deliverer",
    "DeliveryError",
    "Division",
    "Order",
    "OrderDaemon",
    "OrderRequest",
    "OrderType",
    "ProvisioningCommand",
    "ProvisioningSettings",
    "ServerType",
    "accept",
    "add_division",
    "add_plan_command",
    "deliver_direct",
    "lane_of",
    "list_divisions",
    "plan_codes",
    "submit",
    "update_division",
]
