"""Dunning, the counterpart of B3: an account in arrears past its grace period is
suspended through provisioning; paying the arrears restores it at once (payments.py)."""

from __future__ import annotations

from datetime import date

from bossa.billing.payments import service_changes
from bossa.billing.queries import QUERIES
from bossa.journal import Journal

__all__ = ["run_dunning"]


async def run_dunning(journal: Journal, *, today: date, limit: int = 1000) -> list[str]:
    """Suspend every active account with overdue arrears; returns the accounts suspended."""
    suspended: list[str] = []
    async with journal.pool.connection() as conn:
        rows = await (
            await conn.execute(QUERIES["overdue_accounts"], {"today": today, "limit": limit})
        ).fetchall()
    for row in rows:
        async with journal.pool.connection() as conn, conn.transaction():
            await service_changes(
                conn,
                journal,
                row["account_id"],
                restore=False,
                reason=f"arrears overdue on {today}",
            )
        suspended.append(row["account_id"])
    return suspended
