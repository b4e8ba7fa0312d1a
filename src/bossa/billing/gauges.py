"""Transitional: billing's gauges moved to `metrics.py` (`metrics.refresh`).

Delete this file once `bossa.api.app` imports `bossa.billing.metrics` instead.
"""

from __future__ import annotations

from bossa.billing.metrics import refresh

__all__ = ["refresh"]
