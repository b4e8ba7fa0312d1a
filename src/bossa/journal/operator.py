"""What an operator does with the journal (P10): look, retry, edit, park, discard, purge.

Every change is audited with who, when, why and the entry before and after. A change to a
keyed entry first takes its key's lock, the same lock enqueue and ack take, so an
operator never races a worker into breaking per-key order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from bossa.db import Conn, Pool
from bossa.errors import Conflict, InvalidInput, NotFound
from bossa.journal.models import EntryState, encode_payload
from bossa.journal.store import QUERIES, Journal

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


@dataclass(frozen=True)
class EntryFilter:
    lane: str | None = None
    state: str | None = None
    key: str | None = None
    older_than_s: float | None = None
    error_code: str | None = None
    after_id: int = 0
    limit: int = 100

    def params(self) -> dict[str, Any]:
        if self.state is not None and self.state not in set(EntryState):
            known = ", ".join(EntryState)
            raise InvalidInput(f"unknown state {self.state!r} (known: {known})", field="state")
        if not 1 <= self.limit <= 10_000:
            raise InvalidInput("must be between 1 and 10000", field="limit")
        return {
            "lane": self.lane,
            "state": self.state,
            "key": self.key,
            "older_than_s": self.older_than_s,
            "error_code": self.error_code,
            "after_id": self.after_id,
            "limit": self.limit,
        }


async def list_entries(pool: Pool, where: EntryFilter) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cursor = await conn.execute(QUERIES["list_entries"], where.params())
        return await cursor.fetchall()


async def show(pool: Pool, entry_id: int) -> dict[str, Any]:
    """One entry with its error history and the operator actions taken on it."""
    async with pool.connection() as conn:
        row = await (await conn.execute(QUERIES["entry"], {"id": entry_id})).fetchone()
        if row is None:
            raise NotFound(f"no journal entry {entry_id}", field="id")
        audit = await (await conn.execute(QUERIES["audit_of_entry"], {"id": entry_id})).fetchall()
    return {**row, "state": str(row["state"]), "audit": audit}


@dataclass
class _Change:
    conn: Conn
    entry: dict[str, Any]
    is_head: bool
    after: dict[str, Any] = field(default_factory=dict)


async def _locked(conn: Conn, entry_id: int) -> _Change:
    peek = await (await conn.execute(QUERIES["entry"], {"id": entry_id})).fetchone()
    if peek is None:
        raise NotFound(f"no journal entry {entry_id}", field="id")
    if peek["key"] is not None:
        await conn.execute(QUERIES["lock_key"], {"lane": peek["lane"], "key": peek["key"]})
    entry = await (await conn.execute(QUERIES["entry_for_update"], {"id": entry_id})).fetchone()
    assert entry is not None
    head = True
    if entry["key"] is not None:
        row = await (
            await conn.execute(
                QUERIES["is_head"], {"lane": entry["lane"], "key": entry["key"], "id": entry_id}
            )
        ).fetchone()
        head = bool(row and row["head"])
    return _Change(conn, entry, head)


def _refuse_unless(change: _Change, allowed: set[EntryState], action: str) -> None:
    state = EntryState(change.entry["state"])
    if state in allowed:
        return
    if state is EntryState.TAKEN:
        reason = "it is in flight under a worker's lease; wait until it finishes or expires"
    elif state in (EntryState.DONE, EntryState.DISCARDED):
        reason = f"it is already {state}"
    else:
        reason = f"it is {state}"
    raise Conflict(f"cannot {action} entry {change.entry['id']}: {reason}", field="id")


async def _audit(
    change: _Change, *, actor: str, action: str, reason: str | None, after: dict[str, Any]
) -> None:
    before = {"state": str(change.entry["state"]), "payload": change.entry["payload"]}
    await change.conn.execute(
        QUERIES["audit"],
        {
            "actor": actor,
            "action": action,
            "entry_id": change.entry["id"],
            "lane": change.entry["lane"],
            "reason": reason,
            "before": Jsonb(before),
            "after": Jsonb(after),
        },
    )


def _need_actor(actor: str) -> None:
    if not actor or not actor.strip():
        raise InvalidInput("an operator action needs the operator's name", field="actor")


async def retry(journal: Journal, entry_id: int, *, actor: str, reason: str | None = None) -> str:
    """Make a parked or backing-off entry due now, with a fresh set of attempts."""
    _need_actor(actor)
    async with journal.pool.connection() as conn, conn.transaction():
        change = await _locked(conn, entry_id)
        _refuse_unless(change, {EntryState.PARKED, EntryState.READY}, "retry")
        state = EntryState.READY if change.is_head else EntryState.WAITING
        await conn.execute(
            QUERIES["set_state"],
            {"id": entry_id, "state": state.value, "not_before": datetime.now(UTC), "attempts": 0},
        )
        await _audit(
            change, actor=actor, action="retry", reason=reason, after={"state": state.value}
        )
        await conn.execute(QUERIES["wake"], {"lane": change.entry["lane"]})
    return state.value


async def park(journal: Journal, entry_id: int, *, actor: str, reason: str | None = None) -> None:
    """Park an entry: no worker takes it, and it keeps blocking its key."""
    _need_actor(actor)
    async with journal.pool.connection() as conn, conn.transaction():
        change = await _locked(conn, entry_id)
        _refuse_unless(change, {EntryState.WAITING, EntryState.READY}, "park")
        await conn.execute(
            QUERIES["set_state"],
            {"id": entry_id, "state": "parked", "not_before": None, "attempts": None},
        )
        await _audit(change, actor=actor, action="park", reason=reason, after={"state": "parked"})


async def discard(journal: Journal, entry_id: int, *, actor: str, reason: str) -> None:
    """Give up on an entry for good; the next entry of its key becomes due."""
    _need_actor(actor)
    if not reason or not reason.strip():
        raise InvalidInput("discarding needs a reason, kept in the audit", field="reason")
    async with journal.pool.connection() as conn, conn.transaction():
        change = await _locked(conn, entry_id)
        _refuse_unless(change, {EntryState.WAITING, EntryState.READY, EntryState.PARKED}, "discard")
        await conn.execute(
            QUERIES["set_state"],
            {"id": entry_id, "state": "discarded", "not_before": None, "attempts": None},
        )
        if change.entry["key"] is not None:
            await conn.execute(
                QUERIES["advance_keys"],
                {"lanes": [change.entry["lane"]], "keys": [change.entry["key"]]},
            )
        await _audit(
            change, actor=actor, action="discard", reason=reason, after={"state": "discarded"}
        )
        await conn.execute(QUERIES["wake"], {"lane": change.entry["lane"]})


async def edit(
    journal: Journal, entry_id: int, payload: Any, *, actor: str, reason: str | None = None
) -> None:
    """Replace the payload of an entry that is not in flight (to fix what made it fail)."""
    _need_actor(actor)
    async with journal.pool.connection() as conn, conn.transaction():
        change = await _locked(conn, entry_id)
        _refuse_unless(change, {EntryState.WAITING, EntryState.READY, EntryState.PARKED}, "edit")
        policy = await journal.policy(change.entry["lane"], conn=conn)
        text = encode_payload(payload, field_name="payload", max_bytes=policy.max_payload_bytes)
        await conn.execute(QUERIES["set_payload"], {"id": entry_id, "payload": text})
        await _audit(
            change,
            actor=actor,
            action="edit",
            reason=reason,
            after={"state": str(change.entry["state"]), "payload": payload},
        )


async def blocked_keys(
    pool: Pool, lane: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cursor = await conn.execute(QUERIES["blocked_keys"], {"lane": lane, "limit": limit})
        return await cursor.fetchall()


async def counts(pool: Pool, *, window_s: float = 60.0) -> dict[str, Any]:
    """Entries by lane and state, oldest age, and entries finished per second lately."""
    async with pool.connection() as conn:
        by_state = await (await conn.execute(QUERIES["counts"])).fetchall()
        finished = await (
            await conn.execute(QUERIES["throughput"], {"seconds": window_s})
        ).fetchall()
    return {
        "by_state": by_state,
        "throughput_per_s": {row["lane"]: row["finished"] / window_s for row in finished},
    }


async def purge(journal: Journal, lane: str | None = None) -> int:
    """Delete finished entries past their lane's retention, in batches; returns how many."""
    async with journal.pool.connection() as conn:
        if lane is None:
            lanes = [
                r["lane"] for r in await (await conn.execute(QUERIES["finished_lanes"])).fetchall()
            ]
        else:
            lanes = [lane]
    total = 0
    for name in lanes:
        policy = await journal.policy(name)
        while True:
            async with journal.pool.connection() as conn:
                cursor = await conn.execute(
                    QUERIES["purge"],
                    {
                        "lane": name,
                        "retention_s": policy.retention_s,
                        "limit": journal.settings.purge_batch,
                    },
                )
                deleted = cursor.rowcount
            total += deleted
            if deleted < journal.settings.purge_batch:
                break
    return total
