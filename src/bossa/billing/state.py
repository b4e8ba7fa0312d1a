"""B1: is a bill run in progress? The planned calendar and the run's real state.

Staging follows the real state, not the plan (B5): it starts when a run opens (its
snapshot is taken) and ends when its settlement has applied everything staged, whether
that is before or after the planned window's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bossa.billing.queries import QUERIES
from bossa.db import Conn

__all__ = ["BillPeriodState", "current_state"]


@dataclass(frozen=True)
class BillPeriodState:
    #: A run holds the books: payments are staged.
    staging: bool
    run_id: int | None
    run_status: str | None
    #: The planned window now falls in, if any (informative: staging follows the run).
    planned_window: dict[str, Any] | None
    overrunning: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "staging": self.staging,
            "run_id": self.run_id,
            "run_status": self.run_status,
            "planned_window": self.planned_window,
            "overrunning": self.overrunning,
        }


async def current_state(conn: Conn, *, now: datetime | None = None) -> BillPeriodState:
    run = await (await conn.execute(QUERIES["open_run"])).fetchone()
    window = await (await conn.execute(QUERIES["planned_window"])).fetchone()
    overrunning = bool(
        run
        and run["planned_end"] is not None
        and (now or datetime.now(run["planned_end"].tzinfo)) > run["planned_end"]
    )
    return BillPeriodState(
        staging=run is not None,
        run_id=run["id"] if run else None,
        run_status=run["status"] if run else None,
        planned_window=window,
        overrunning=overrunning,
    )
