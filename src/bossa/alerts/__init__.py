"""Missed-call alerts (seed 003, CN 12401702; SPEC M1-M6): SMS alerts from SIP to SMPP
that keep going while the database is down. See docs/alerts.md.

The public face: the daemon (`AlertsDaemon`), the settings, and the use cases other
modules or edges may call.
"""

from bossa.alerts.lanes import AlertsDaemon
from bossa.alerts.models import MessageKind, MissedCall, Reason
from bossa.alerts.service import (
    SMS_LANE,
    DatabaseMonitor,
    add_trial_range,
    record_call,
    register,
    remove_trial_range,
    set_trial_quota,
    trial_set,
    unregister,
)
from bossa.alerts.settings import AlertsSettings

__all__ = [
    "SMS_LANE",
    "AlertsDaemon",
    "AlertsSettings",
    "DatabaseMonitor",
    "MessageKind",
    "MissedCall",
    "Reason",
    "add_trial_range",
    "record_call",
    "register",
    "remove_trial_range",
    "set_trial_quota",
    "trial_set",
    "unregister",
]
