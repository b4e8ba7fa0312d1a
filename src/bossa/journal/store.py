"""The journal's operations on PostgreSQL: enqueue, claim, take, ack, fail, heartbeat.

Only named queries from sql/queries.sql run here. Each operation either joins the
caller's transaction (pass `conn`) or runs in a short transaction of its own; none
holds a transaction open while a handler works.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from bossa.db import Conn, Pool
from bossa.journal.models import (
    Claim,
    Enqueued,
    Entry,
    EntryState,
    NewEntry,
    Taken,
    encode_batch,
    encode_payload,
)
from bossa.journal.settings import JournalSettings, LanePolicy
from bossa.sql import load_queries

__all__ = ["FailResult", "Failure", "Journal"]

QUERIES = load_queries("bossa.journal", "sql/queries.sql")


_POLICY_TTL_S = 5.0
_DEDUP_RETRIES = 3


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one entry failed: a short code operators filter on, and a message."""

    entry_id: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class FailResult:
    entry_id: int
    state: EntryState
    attempts: int
    not_before: datetime


class Journal:
    """The durable queue under every bossa system. Cheap to create; share one per process."""

    def __init__(
        self, pool: Pool, settings: JournalSettings | None = None, *, actor: str = "bossa"
    ) -> None:
        self.pool = pool
        self.settings = settings or JournalSettings()
        self.actor = actor
        self._defaults = self.settings.default_policy()
        self._policies: dict[str, tuple[float, LanePolicy]] = {}

    # -- connections -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _tx(self, conn: Conn | None) -> AsyncIterator[Conn]:
        """The caller's transaction (as a savepoint), or a pooled autocommit connection.

        Every statement run through this is a single statement (a CTE or a function
        call), atomic on its own: no BEGIN/COMMIT round trips on the hot path.
        """
        if conn is not None:
            async with conn.transaction():
                yield conn
            return
        async with self.pool.connection() as own:
            yield own

    # -- lane policies ---------------------------------------------------------------

    async def policy(
        self, lane: str, *, fresh: bool = False, conn: Conn | None = None
    ) -> LanePolicy:
        """The lane's effective settings: defaults with its stored overrides, cached briefly.

        A caller inside a transaction passes its connection: checking out a second one
        while holding the first deadlocks a pool whose every connection is so held.
        """
        now = time.monotonic()
        cached = self._policies.get(lane)
        if cached and not fresh and now - cached[0] < _POLICY_TTL_S:
            return cached[1]
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self.pool.connection())
            row = await (await conn.execute(QUERIES["lane_settings"], {"lane": lane})).fetchone()
        policy = self._defaults.merged(dict(row["settings"]) if row else {}, lane=lane)
        self._policies[lane] = (now, policy)
        return policy

    async def set_policy(self, lane: str, changes: dict[str, Any], *, actor: str) -> LanePolicy:
        """Change a lane's overrides; unknown names and bad values are refused, nothing stored."""
        async with self.pool.connection() as conn, conn.transaction():
            row = await (await conn.execute(QUERIES["lane_settings"], {"lane": lane})).fetchone()
            stored = dict(row["settings"]) if row else {}
            stored.update(changes)
            policy = self._defaults.merged(stored, lane=lane)  # validates before writing
            await conn.execute(
                QUERIES["upsert_lane_settings"],
                {"lane": lane, "settings": psycopg.types.json.Jsonb(stored), "actor": actor},
            )
            await conn.execute(
                QUERIES["audit"],
                {
                    "actor": actor,
                    "action": "set-lane",
                    "entry_id": None,
                    "lane": lane,
                    "reason": None,
                    "before": None,
                    "after": psycopg.types.json.Jsonb(changes),
                },
            )
        self._policies.pop(lane, None)
        return policy

    # -- enqueue ---------------------------------------------------------------------

    async def enqueue(
        self, entries: Sequence[NewEntry], *, conn: Conn | None = None
    ) -> list[Enqueued]:
        """Enqueue a batch, all or nothing, in input order; returns one result per input."""
        if not entries:
            return []
        limits = {
            lane: (await self.policy(lane, conn=conn)).max_payload_bytes
            for lane in {e.lane for e in entries if isinstance(e.lane, str)}
        }
        batch = encode_batch(entries, limits)
        params = {
            "lanes": batch.lanes,
            "keys": batch.keys,
            "kinds": batch.kinds,
            "payloads": batch.payloads,
            "not_befores": batch.not_befores,
            "dedup_keys": batch.dedup_keys,
            "created_by": self.actor,
        }
        plain = all(k is None for k in batch.keys) and all(d is None for d in batch.dedup_keys)
        query = QUERIES["enqueue_plain" if plain else "enqueue"]
        for attempt in range(_DEDUP_RETRIES):
            try:
                async with self._tx(conn) as tx:
                    rows = await (await tx.execute(query, params, prepare=True)).fetchall()
                break
            except pg_errors.UniqueViolation as exc:
                # Two transactions enqueued the same dedup key at once; the loser retries
                # and now sees the winner's entry as a duplicate.
                if exc.diag.constraint_name != "entries_dedup" or attempt == _DEDUP_RETRIES - 1:
                    raise
        by_position = {
            int(row["ord"]) - 1: Enqueued(int(row["id"]), bool(row["created"])) for row in rows
        }
        return [
            Enqueued(by_position[position].id, by_position[position].created and not folded)
            for position, folded in zip(batch.positions, batch.folded, strict=True)
        ]

    async def enqueue_one(self, entry: NewEntry, *, conn: Conn | None = None) -> Enqueued:
        return (await self.enqueue([entry], conn=conn))[0]

    async def enqueue_or_claim(
        self, entry: NewEntry, *, conn: Conn | None = None, lease_ms: int | None = None
    ) -> Claim:
        """P5's question, answered atomically for a keyed entry: deliver now, or queue behind."""
        if entry.key is None:
            raise ValueError("enqueue_or_claim needs a key: it orders by key")
        if entry.dedup_key is not None or entry.not_before is not None:
            raise ValueError("enqueue_or_claim delivers now: no dedup_key or not_before")
        policy = await self.policy(entry.lane, conn=conn)
        encode_batch([entry], policy.max_payload_bytes)  # validates names
        token = uuid.uuid4()
        params = {
            "lane": entry.lane,
            "key": entry.key,
            "kind": entry.kind,
            "payload": encode_payload(
                entry.payload, field_name="entry.payload", max_bytes=policy.max_payload_bytes
            ),
            "token": token,
            "lease_ms": lease_ms or policy.lease_ms,
            "created_by": self.actor,
        }
        async with self._tx(conn) as tx:
            row = await (await tx.execute(QUERIES["enqueue_or_claim"], params)).fetchone()
        assert row is not None
        go_ahead = row["state"] == EntryState.TAKEN
        return Claim(int(row["id"]), go_ahead, token if go_ahead else None)

    # -- take, ack, fail -------------------------------------------------------------

    async def take(self, lane: str, limit: int, *, lease_ms: int | None = None) -> Taken:
        """Lease up to `limit` due entries of `lane`, at most one per key."""
        token = uuid.uuid4()
        if lease_ms is None:
            lease_ms = (await self.policy(lane)).lease_ms
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                QUERIES["take"],
                {"lane": lane, "limit": limit, "token": token, "lease_ms": lease_ms},
                prepare=True,
            )
            rows = await cursor.fetchall()
        entries = sorted(
            (
                Entry(
                    row["id"],
                    row["lane"],
                    row["key"],
                    row["kind"],
                    row["payload"],
                    row["attempts"],
                    row["created_at"],
                    row["lease_expires_at"],
                )
                for row in rows
            ),
            key=lambda entry: entry.id,
        )
        return Taken(token, entries)

    async def ack(
        self, token: uuid.UUID, ids: Sequence[int], *, conn: Conn | None = None
    ) -> set[int]:
        """Finish entries held under `token`; returns the ids accepted (stale ones are not)."""
        if not ids:
            return set()
        async with self._tx(conn) as tx:
            cursor = await tx.execute(
                QUERIES["ack"], {"ids": list(ids), "token": token}, prepare=True
            )
            return {int(row["id"]) for row in await cursor.fetchall()}

    async def fail(
        self,
        token: uuid.UUID,
        lane: str,
        failures: Sequence[Failure],
        *,
        conn: Conn | None = None,
    ) -> list[FailResult]:
        """Record errors and schedule retries (or park); returns what became of each entry."""
        if not failures:
            return []
        policy = await self.policy(lane, conn=conn)
        async with self._tx(conn) as tx:
            cursor = await tx.execute(
                QUERIES["fail"],
                {
                    "ids": [f.entry_id for f in failures],
                    "token": token,
                    "codes": [f.code[:200] for f in failures],
                    "messages": [f.message[:4000] for f in failures],
                    "max_attempts": policy.max_attempts,
                    "backoff_base_ms": policy.backoff_base_ms,
                    "backoff_max_ms": policy.backoff_max_ms,
                },
                prepare=True,
            )
            rows = await cursor.fetchall()
        return [
            FailResult(int(r["id"]), EntryState(r["state"]), int(r["attempts"]), r["not_before"])
            for r in rows
        ]

    async def heartbeat(
        self, token: uuid.UUID, lane: str, ids: Sequence[int], *, lease_ms: int | None = None
    ) -> set[int]:
        """Extend the lease of entries still held under `token`; returns those extended."""
        if not ids:
            return set()
        if lease_ms is None:
            lease_ms = (await self.policy(lane)).lease_ms
        async with self._tx(None) as tx:
            cursor = await tx.execute(
                QUERIES["heartbeat"], {"ids": list(ids), "token": token, "lease_ms": lease_ms}
            )
            return {int(row["id"]) for row in await cursor.fetchall()}

    async def release(self, token: uuid.UUID, ids: Sequence[int]) -> set[int]:
        """Give back taken entries that were not started; their attempt is not counted."""
        if not ids:
            return set()
        async with self._tx(None) as tx:
            cursor = await tx.execute(QUERIES["release"], {"ids": list(ids), "token": token})
            return {int(row["id"]) for row in await cursor.fetchall()}

    async def reap_expired(self, lane: str, *, limit: int = 1000) -> list[tuple[int, EntryState]]:
        """Hand out again the entries whose lease ran out; returns (id, new state)."""
        policy = await self.policy(lane)
        async with self._tx(None) as tx:
            cursor = await tx.execute(
                QUERIES["reap_expired"],
                {"lane": lane, "max_attempts": policy.max_attempts, "limit": limit},
            )
            return [(int(r["id"]), EntryState(r["state"])) for r in await cursor.fetchall()]

    async def next_wakeup(self, lane: str) -> datetime | None:
        """The earliest of the lane's next due entry and next lease expiry."""
        async with self.pool.connection() as conn:
            due = await (await conn.execute(QUERIES["next_due"], {"lane": lane})).fetchone()
            lease = await (
                await conn.execute(QUERIES["next_lease_expiry"], {"lane": lane})
            ).fetchone()
        times: list[datetime] = [
            t for t in (due["due"] if due else None, lease["expires"] if lease else None) if t
        ]
        return min(times) if times else None
