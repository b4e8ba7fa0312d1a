"""Transitional: the operator's functions under their old names and signatures.

`service.py` holds the operator's use cases now (typed results, one transaction each).
This file only keeps other modules' callers working while they move to `service`;
delete it once nothing imports `bossa.journal.operator`.
"""

from __future__ import annotations

from typing import Any

from bossa.db import Pool
from bossa.journal import service, store
from bossa.journal.models import GENERIC_OWNER, EntryFilter
from bossa.journal.store import Journal

__all__ = [
    "EntryFilter",
    "blocked_keys",
    "counts",
    "discard",
    "edit",
    "list_entries",
    "park",
    "purge",
    "retry",
    "show",
]


async def list_entries(pool: Pool, where: EntryFilter) -> list[dict[str, Any]]:
    return [row.model_dump() for row in await service.list_entries(Journal(pool), where)]


async def show(pool: Pool, entry_id: int) -> dict[str, Any]:
    return (await service.show(Journal(pool), entry_id)).model_dump()


async def blocked_keys(
    pool: Pool, lane: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    # As before lanes were declared (the demo's lane is not): no check of the name.
    async with pool.connection() as conn:
        return [row.model_dump() for row in await store.blocked_keys(conn, lane, limit)]


async def counts(pool: Pool, *, window_s: float = 60.0) -> dict[str, Any]:
    return (await service.counts(Journal(pool), window_s=window_s)).model_dump()


async def retry(journal: Journal, entry_id: int, *, actor: str, reason: str | None = None) -> str:
    return str(await service.retry(journal, entry_id, actor=actor, reason=reason))


async def park(journal: Journal, entry_id: int, *, actor: str, reason: str | None = None) -> None:
    await service.park(journal, entry_id, actor=actor, reason=reason)


async def discard(journal: Journal, entry_id: int, *, actor: str, reason: str) -> None:
    await service.discard(journal, entry_id, actor=actor, reason=reason)


async def edit(
    journal: Journal, entry_id: int, payload: Any, *, actor: str, reason: str | None = None
) -> None:
    # The old callers are the owning modules' own (provisioning's CLI): edit as the owner.
    lane = (await service.show(journal, entry_id)).lane
    owners = {declared.lane: declared.owner for declared in await journal.lanes()}
    owner = owners.get(lane, GENERIC_OWNER)
    await service.edit(journal, entry_id, payload, actor=actor, reason=reason, owner=owner)


async def purge(journal: Journal, lane: str | None = None) -> int:
    return await service.purge(journal, lane)
