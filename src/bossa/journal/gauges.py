"""Transitional: the table gauges moved to `metrics.py` (`metrics.refresh`).

Delete this file once nothing imports `bossa.journal.gauges`.
"""

from __future__ import annotations

from bossa.journal.metrics import refresh

__all__ = ["refresh"]
