"""Backup-mode provisioning (P1-P11): orders that complete while a downstream server is
down, its command kept in that server's buffer and delivered later, in per-contract
order, once. See docs/provisioning.md."""

from bossa.provisioning.adapters.base import Command, DeliveryError, Division, ServerType
from bossa.provisioning.catalogue import (
    add_division,
    add_plan_command,
    list_divisions,
    update_division,
)
from bossa.provisioning.daemons import BackupDaemon, OrderDaemon
from bossa.provisioning.delivery import Deliverer
from bossa.provisioning.orders import OrderRequest, lane_of, submit
from bossa.provisioning.settings import ProvisioningSettings

__all__ = [
    "BackupDaemon",
    "Command",
    "Deliverer",
    "DeliveryError",
    "Division",
    "OrderDaemon",
    "OrderRequest",
    "ProvisioningSettings",
    "ServerType",
    "add_division",
    "add_plan_command",
    "lane_of",
    "list_divisions",
    "submit",
    "update_division",
]
