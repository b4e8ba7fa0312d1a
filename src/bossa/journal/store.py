"""The journal's storage: the only code that loads and runs sql/queries.sql.

Two kinds of callers, two kinds of code:

- `Journal`, the hot-path API every module and worker uses (enqueue, claim, take, ack,
  fail, heartbeat, the lane registry and policies). Each method is one of the journal's
  own one-statement transactions: it joins the caller's transaction when given `conn`
  (and then never checks out another connection), or runs on a pooled autocommit
  connection. None holds a transaction open while a handler works.
- Plain functions taking a `Conn` for the operator's use cases in `service.py`, which
  owns their transactions. They open nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.rows import args_row
from psycopg.types.json import Jsonb
from pydantic_core import from_json

from bossa.db import Conn, Pool
from bossa.errors import Forbidden, InvalidInput, NotFound
from bossa.journal.models import (
    AuditRecord,
    BlockedKey,
    BulkAction,
    BulkFilter,
    Claim,
    Counts,
    EncodedBatch,
    Enqueued,
    Entry,
    EntryFilter,
    EntryRecord,
    EntryState,
    EntrySummary,
    Lane,
    NewEntry,
    StateCount,
    Taken,
    check_owner,
    encode_batch,
    encode_payload,
    encode_single,
    lane_name,
)
from bossa.journal.settings import (
    CLAIM_LEASE_MS,
    MAX_LEASE_MS,
    MAX_RUN,
    JournalSettings,
    LanePolicy,
)
from bossa.sql import load_queries

__all__ = ["QUERIES", "FailResult", "Failure", "Journal"]

QUERIES = load_queries("bossa.journal", "sql/queries.sql")


_POLICY_TTL_S = 5.0
_DEDUP_RETRIES = 3
#: The longest a take waits in the database for an entry (a worker asks again after it):
#: a worker asked to stop answers within it, and the wait's snapshot holds vacuum back
#: no longer.
_MAX_WAIT_S = 1.0
#: SQLSTATE raised by journal.declare_lane for a lane another module owns.
_LANE_OWNED = "BJ001"


def _lease(lease_ms: int) -> int:
    """A lease a caller asks for explicitly, bounded like the lane setting (a huge one
    would put its expiry past what a timestamp holds and fail every take)."""
    if not 1 <= lease_ms <= MAX_LEASE_MS:
        raise InvalidInput(f"must be between 1 and {MAX_LEASE_MS}", field="lease_ms")
    return lease_ms


def _loads_payload(data: Buffer) -> Any:
    """A taken entry's jsonb, parsed by pydantic-core's JSON parser (in Rust; the
    standard library's took about 5 us of a backup daemon's 50-70 us per command, this
    one 1.5). The same values for anything jsonb can hold; json.loads for anything else."""
    raw = data if isinstance(data, bytes) else bytes(data)
    try:
        return from_json(raw)
    except ValueError:
        return json.loads(raw)


class _JsonbLoader(Loader):
    def load(self, data: Buffer) -> Any:
        return _loads_payload(data)


#: Rows of take and take_runs (their columns are in Entry's order) as entries.
_entry_row = args_row(Entry)


def _entry_id(entry: Entry) -> int:
    return entry.id


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one entry failed: a short code operators filter on, and a message. A `final`
    failure parks the entry at once: retrying cannot help (a payload no plan defines)."""

    entry_id: int
    code: str
    message: str
    final: bool = False
    #: False for a failure that says nothing about the entry (its target could not be
    #: reached): recorded in its history, but the attempt is given back, so it never
    #: parks for it (provisioning's divisions that are down).
    counted: bool = True


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
        #: The policy lookup in flight per lane, shared by every caller that misses.
        self._policy_loads: dict[str, asyncio.Future[LanePolicy]] = {}

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

    @contextlib.asynccontextmanager
    async def _conn(self, conn: Conn | None) -> AsyncIterator[Conn]:
        """The caller's connection as it is, or a pooled one: never a second one."""
        if conn is not None:
            yield conn
            return
        async with self.pool.connection() as own:
            yield own

    # -- the lane registry and lane policies -----------------------------------------

    async def declare_lane(self, lane: str, *, owner: str, conn: Conn | None = None) -> None:
        """Declare `lane` for the module that consumes it; idempotent. Refused (Forbidden)
        when another module declared it first. Enqueue and take never ask for this."""
        async with self._tx(conn) as tx:
            await declare_lane(tx, lane, owner, self.actor)

    async def lane(self, lane: str, *, conn: Conn | None = None) -> Lane:
        """A declared lane, or NotFound naming it."""
        async with self._conn(conn) as c:
            return await lane_of(c, lane)

    async def lanes(
        self, *, after: str = "", limit: int | None = None, conn: Conn | None = None
    ) -> list[Lane]:
        """Declared lanes with their owners, by name: those after `after`, at most `limit`
        (all when None)."""
        async with self._conn(conn) as c:
            params = {"after": after, "limit": limit}
            rows = await (await c.execute(QUERIES["lanes"], params)).fetchall()
        return [Lane.model_validate(row) for row in rows]

    async def policy(
        self, lane: str, *, fresh: bool = False, conn: Conn | None = None
    ) -> LanePolicy:
        """The lane's effective settings: defaults with its stored overrides, cached briefly.

        Any lane, declared or not (the hot path never asks). A caller inside a
        transaction passes its connection: checking out a second one while holding the
        first deadlocks a pool whose every connection is so held.
        """
        cached = self._policies.get(lane)
        if cached and not fresh and time.monotonic() - cached[0] < _POLICY_TTL_S:
            return cached[1]
        if conn is not None or fresh:
            return await self._load_policy(lane, conn)
        # One lookup per lane at a time. When the entry expires under load, every caller
        # that misses would check out a connection for the same row: a producer thousands
        # of enqueues behind spent a sixth of its time so, every five seconds, and fell
        # further behind. The others wait for the one lookup (shielded: a caller that is
        # cancelled does not cancel it for the rest).
        loading = self._policy_loads.get(lane)
        if loading is None or loading.get_loop() is not asyncio.get_running_loop():
            loading = asyncio.ensure_future(self._load_policy(lane, None))
            self._policy_loads[lane] = loading
            loading.add_done_callback(lambda done: self._policy_loaded(lane, done))
        return await asyncio.shield(loading)

    async def _load_policy(self, lane: str, conn: Conn | None) -> LanePolicy:
        now = time.monotonic()
        async with self._conn(conn) as c:
            row = await (await c.execute(QUERIES["lane_settings"], {"lane": lane})).fetchone()
        policy = self._defaults.merged(dict(row["settings"]) if row else {}, lane=lane)
        self._policies[lane] = (now, policy)
        return policy

    def _policy_loaded(self, lane: str, done: asyncio.Future[LanePolicy]) -> None:
        if self._policy_loads.get(lane) is done:
            del self._policy_loads[lane]
        if not done.cancelled():
            # Marked retrieved: its waiters got it, and with none left (all cancelled)
            # asyncio would log it as never retrieved.
            done.exception()

    async def set_policy(
        self, lane: str, changes: dict[str, Any], *, actor: str, conn: Conn | None = None
    ) -> LanePolicy:
        """Change a declared lane's overrides (NotFound for an undeclared one); unknown
        names and bad values are refused, nothing stored. Any owner's lane: operators
        tune provisioning's lanes here, and provisioning pauses its divisions here."""
        async with self._conn(conn) as c, c.transaction():
            stored = dict((await lane_of(c, lane)).settings)
            stored.update(changes)
            policy = self._defaults.merged(stored, lane=lane)  # validates before writing
            await c.execute(
                QUERIES["update_lane_settings"],
                {"lane": lane, "settings": Jsonb(stored), "actor": actor},
            )
            await record_audit(
                c, actor=actor, action="set-lane", lane=lane, after=changes, entry_id=None
            )
        self._policies.pop(lane, None)
        self._policy_loads.pop(lane, None)
        return policy

    # -- enqueue ---------------------------------------------------------------------

    async def enqueue(
        self, entries: Sequence[NewEntry], *, conn: Conn | None = None, actor: str | None = None
    ) -> list[Enqueued]:
        """Enqueue a batch, all or nothing, in input order; returns one result per input.

        `actor` is recorded as the entries' creator (the journal's own name by default):
        an operator's enqueue records the operator."""
        if not entries:
            return []
        if len(entries) == 1:
            one = entries[0]
            if (
                type(one.lane) is str
                and one.key is None
                and one.dedup_key is None
                and one.not_before is None
            ):
                return [await self._enqueue_single(one, conn=conn, actor=actor)]
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
            "created_by": actor or self.actor,
        }
        plain = all(k is None for k in batch.keys) and all(d is None for d in batch.dedup_keys)
        if (
            plain
            and len(set(batch.lanes)) == 1
            and len(set(batch.kinds)) == 1
            and all(n is None for n in batch.not_befores)
        ):
            return await self._enqueue_uniform(batch, conn=conn, actor=actor)
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

    async def _enqueue_single(
        self, entry: NewEntry, *, conn: Conn | None, actor: str | None
    ) -> Enqueued:
        """One entry with no key, no dedup key, due now: the commonest call of all (a
        producer per event), so it skips the batch's column arrays and bookkeeping, which
        cost about as much Python as the statement's own execution in psycopg."""
        lane = entry.lane
        limit = (await self.policy(lane, conn=conn)).max_payload_bytes
        params = {
            "lane": lane,
            "kind": entry.kind,
            "payload": encode_single(entry, limit),
            "created_by": actor or self.actor,
        }
        if conn is not None:
            async with conn.transaction():
                cursor = await conn.execute(QUERIES["enqueue_single"], params, prepare=True)
                row = await cursor.fetchone()
        else:
            # getconn and putconn, not connection(): two context managers less a call
            # (_tx's and the pool's), and no commit of an autocommit connection.
            own = await self.pool.getconn()
            try:
                cursor = await own.execute(QUERIES["enqueue_single"], params, prepare=True)
                row = await cursor.fetchone()
            finally:
                await self.pool.putconn(own)
        assert row is not None
        return Enqueued(row["id"], True)

    async def _enqueue_uniform(
        self, batch: EncodedBatch, *, conn: Conn | None, actor: str | None
    ) -> list[Enqueued]:
        params = {
            "lane": batch.lanes[0],
            "kind": batch.kinds[0],
            "payloads": batch.payloads,
            "created_by": actor or self.actor,
        }
        async with self._tx(conn) as tx:
            cursor = await tx.execute(QUERIES["enqueue_uniform"], params, prepare=True)
            row = await cursor.fetchone()
        assert row is not None
        assert len(row["ids"]) == len(batch.payloads)
        return [Enqueued(int(entry_id), True) for entry_id in row["ids"]]

    async def enqueue_one(
        self, entry: NewEntry, *, conn: Conn | None = None, actor: str | None = None
    ) -> Enqueued:
        return (await self.enqueue([entry], conn=conn, actor=actor))[0]

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
            # No heartbeat runs for a direct delivery: it keeps the long lease it always
            # had unless the caller says otherwise, so that a slow call is not handed
            # to a worker (and delivered twice, maybe out of order) while it is running.
            "lease_ms": (
                max(policy.lease_ms, CLAIM_LEASE_MS) if lease_ms is None else _lease(lease_ms)
            ),
            "created_by": self.actor,
        }
        async with self._tx(conn) as tx:
            row = await (await tx.execute(QUERIES["enqueue_or_claim"], params)).fetchone()
        assert row is not None
        go_ahead = row["state"] == EntryState.TAKEN
        return Claim(int(row["id"]), go_ahead, token if go_ahead else None)

    # -- take, ack, fail -------------------------------------------------------------

    async def take(
        self,
        lane: str,
        limit: int,
        *,
        lease_ms: int | None = None,
        run: int = 1,
        wait_s: float = 0.0,
        poll_s: float = 0.005,
    ) -> Taken:
        """Lease up to `limit` due entries of `lane`, oldest first.

        With `run` 1, at most one entry per key (each key's head). With `run` > 1, each
        head comes with up to `run - 1` entries of its key right behind it, in order,
        under the same lease: the caller handles a key's entries one after another, and
        from the first failure on releases the rest (they wait behind the failed one).

        With `wait_s`, an empty lane is watched in the database, every `poll_s`, for up
        to `wait_s` (at most a second), and the take runs as soon as an entry is ready:
        still one round trip (see journal.take_batch).
        """
        if not 1 <= run <= MAX_RUN:
            raise InvalidInput(f"must be between 1 and {MAX_RUN}", field="run")
        if not 0 <= wait_s <= _MAX_WAIT_S:  # also refuses NaN
            raise InvalidInput(f"must be between 0 and {_MAX_WAIT_S:g}", field="wait_s")
        if not 0.001 <= poll_s <= _MAX_WAIT_S:
            raise InvalidInput(f"must be between 0.001 and {_MAX_WAIT_S:g}", field="poll_s")
        token = uuid.uuid4()
        lease_ms = (await self.policy(lane)).lease_ms if lease_ms is None else _lease(lease_ms)
        params = {"lane": lane, "limit": limit, "token": token, "lease_ms": lease_ms}
        async with self.pool.connection() as conn:
            # Rows straight into entries (no dict per row), payloads by the fast parser.
            cursor = conn.cursor(row_factory=_entry_row)
            cursor.adapters.register_loader("jsonb", _JsonbLoader)
            if run == 1 and wait_s == 0:
                # The single-statement take, after lease_settings in one pipeline and
                # transaction (a generic plan, no fsync wait: see queries.sql).
                async with conn.pipeline():
                    await conn.execute(QUERIES["lease_settings"], prepare=True)
                    await cursor.execute(QUERIES["take"], params, prepare=True)
                    entries = await cursor.fetchall()
            else:
                # One statement: the wait, the same settings and take_runs in the
                # database (see journal.take_batch), half the client's work of a pipeline.
                params |= {
                    "run": run,
                    "wait_ms": round(wait_s * 1000),
                    "poll_ms": round(poll_s * 1000),
                }
                await cursor.execute(QUERIES["take_batch"], params, prepare=True)
                entries = await cursor.fetchall()
        entries.sort(key=_entry_id)
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
        """Record errors and schedule retries (or park); returns what became of each entry.
        An uncounted failure (`counted=False`) gives its attempt back and makes the entry
        ready again at once: whoever reported it decides when to take it again."""
        if not failures:
            return []
        policy = await self.policy(lane, conn=conn)
        rows: list[dict[str, Any]] = []
        async with self._tx(conn) as tx:
            uncounted = [f for f in failures if not f.counted and not f.final]
            if uncounted:
                cursor = await tx.execute(
                    QUERIES["fail_uncounted"],
                    {
                        "ids": [f.entry_id for f in uncounted],
                        "token": token,
                        "codes": [f.code[:200] for f in uncounted],
                        "messages": [f.message[:4000] for f in uncounted],
                    },
                    prepare=True,
                )
                rows += await cursor.fetchall()
            for final in (False, True):
                group = [f for f in failures if f.final is final and (f.counted or f.final)]
                if not group:
                    continue
                cursor = await tx.execute(
                    QUERIES["fail"],
                    {
                        "ids": [f.entry_id for f in group],
                        "token": token,
                        "codes": [f.code[:200] for f in group],
                        "messages": [f.message[:4000] for f in group],
                        # A taken entry has made at least one attempt: a limit of 1 parks it.
                        "max_attempts": 1 if final else policy.max_attempts,
                        "backoff_base_ms": policy.backoff_base_ms,
                        "backoff_max_ms": policy.backoff_max_ms,
                    },
                    prepare=True,
                )
                rows += await cursor.fetchall()
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
        lease_ms = (await self.policy(lane)).lease_ms if lease_ms is None else _lease(lease_ms)
        async with self._tx(None) as tx:
            cursor = await tx.execute(
                QUERIES["heartbeat"], {"ids": list(ids), "token": token, "lease_ms": lease_ms}
            )
            return {int(row["id"]) for row in await cursor.fetchall()}

    async def release(self, token: uuid.UUID, ids: Sequence[int]) -> set[int]:
        """Give back taken entries that were not started; their attempt is not counted."""
        if not ids:
            return set()
        # Two statements, one transaction: the key lock holds until release has decided.
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(QUERIES["lock_keys_of"], {"ids": list(ids)})
            cursor = await conn.execute(QUERIES["release"], {"ids": list(ids), "token": token})
            return {int(row["id"]) for row in await cursor.fetchall()}

    async def reap_expired(
        self, lane: str, *, limit: int = 1000, held: Sequence[uuid.UUID] = ()
    ) -> list[tuple[int, EntryState]]:
        """Hand out again the entries whose lease ran out, but those under the tokens in
        `held` (the caller's own, which it is still extending); returns (id, new state)."""
        policy = await self.policy(lane)
        async with self._tx(None) as tx:
            cursor = await tx.execute(
                QUERIES["reap_expired"],
                {
                    "lane": lane,
                    "max_attempts": policy.max_attempts,
                    "limit": limit,
                    "held": list(held),
                },
            )
            return [(int(r["id"]), EntryState(r["state"])) for r in await cursor.fetchall()]

    # -- what a worker asks between batches ------------------------------------------

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

    async def busy(self, lane: str) -> bool:
        """Anything ready (due now or after a backoff) or leased in the lane?"""
        async with self.pool.connection() as conn:
            row = await (await conn.execute(QUERIES["lane_busy"], {"lane": lane})).fetchone()
        return bool(row and row["busy"])

    async def mark_asleep(self, lane: str) -> None:
        """A worker of `lane` goes to sleep: ask enqueue to NOTIFY the lane."""
        async with self.pool.connection() as conn:
            await conn.execute(QUERIES["sleep"], {"lane": lane}, prepare=True)


# -- the lane registry -------------------------------------------------------------------


async def declare_lane(conn: Conn, lane: str, owner: str, actor: str) -> None:
    """Declare a lane for `owner`; Forbidden when another module owns it."""
    params = {"lane": lane_name(lane), "owner": check_owner(owner), "actor": actor}
    try:
        await conn.execute(QUERIES["declare_lane"], params)
    except psycopg.Error as exc:
        if exc.sqlstate != _LANE_OWNED:
            raise
        holder = exc.diag.message_hint or "another module"
        raise Forbidden(
            f"lane {lane!r} belongs to {holder}; it cannot be declared for {owner}", field="lane"
        ) from None


async def find_lane(conn: Conn, lane: str) -> Lane | None:
    row = await (await conn.execute(QUERIES["lane"], {"lane": lane})).fetchone()
    return None if row is None else Lane.model_validate(row)


async def lane_of(conn: Conn, lane: str) -> Lane:
    """A declared lane, or NotFound naming it: an operator's typo must not make a lane."""
    found = await find_lane(conn, lane)
    if found is None:
        raise NotFound(f"no lane {lane!r}: no module or operator declared it", field="lane")
    return found


# -- one entry, for the operator's actions -----------------------------------------------


async def entry(conn: Conn, entry_id: int) -> EntryRecord | None:
    row = await (await conn.execute(QUERIES["entry"], {"id": entry_id})).fetchone()
    return None if row is None else EntryRecord.model_validate(row)


async def entry_for_update(conn: Conn, entry_id: int) -> EntryRecord:
    """The entry, locked until the transaction ends (the caller holds its key's lock)."""
    row = await (await conn.execute(QUERIES["entry_for_update"], {"id": entry_id})).fetchone()
    assert row is not None, "entries are deleted only by purge, and only when finished"
    return EntryRecord.model_validate(row)


async def lock_key(conn: Conn, lane: str, key: str) -> None:
    """The per-key lock enqueue and ack take too: an operator never races a worker."""
    await conn.execute(QUERIES["lock_key"], {"lane": lane, "key": key})


async def is_head(conn: Conn, lane: str, key: str, entry_id: int) -> bool:
    """True when no unfinished entry of the same key comes before this one."""
    params = {"lane": lane, "key": key, "id": entry_id}
    row = await (await conn.execute(QUERIES["is_head"], params)).fetchone()
    return bool(row and row["head"])


async def set_state(
    conn: Conn,
    entry_id: int,
    state: EntryState,
    *,
    not_before: datetime | None = None,
    attempts: int | None = None,
) -> None:
    await conn.execute(
        QUERIES["set_state"],
        {"id": entry_id, "state": state.value, "not_before": not_before, "attempts": attempts},
    )


async def set_payload(conn: Conn, entry_id: int, payload: str) -> None:
    """Store an already encoded (checked) payload."""
    await conn.execute(QUERIES["set_payload"], {"id": entry_id, "payload": payload})


async def advance_keys(conn: Conn, lanes: list[str], keys: list[str]) -> None:
    """Count finished entries off their keys and make each key's next entry ready."""
    await conn.execute(QUERIES["advance_keys"], {"lanes": lanes, "keys": keys})


async def wake(conn: Conn, lane: str) -> None:
    """Wake a worker asleep on the lane (if one is): an entry became due."""
    await conn.execute(QUERIES["wake"], {"lane": lane})


async def record_audit(
    conn: Conn,
    *,
    actor: str,
    action: str,
    entry_id: int | None,
    lane: str,
    reason: str | None = None,
    before: Any = None,
    after: Any = None,
) -> None:
    await conn.execute(
        QUERIES["audit"],
        {
            "actor": actor,
            "action": action,
            "entry_id": entry_id,
            "lane": lane,
            "reason": reason,
            "before": None if before is None else Jsonb(before),
            "after": None if after is None else Jsonb(after),
        },
    )


async def audit_of_entry(conn: Conn, entry_id: int) -> list[AuditRecord]:
    rows = await (await conn.execute(QUERIES["audit_of_entry"], {"id": entry_id})).fetchall()
    return [AuditRecord.model_validate(row) for row in rows]


# -- reports -----------------------------------------------------------------------------


async def list_entries(conn: Conn, where: EntryFilter) -> list[EntrySummary]:
    params = {
        "lane": where.lane,
        "state": where.state,
        "key": where.key,
        "older_than_s": where.older_than_s,
        "error_code": where.error_code,
        "after_id": where.after_id,
        "limit": where.limit,
    }
    rows = await (await conn.execute(QUERIES["list_entries"], params)).fetchall()
    return [EntrySummary.model_validate(row) for row in rows]


async def blocked_keys(conn: Conn, lane: str | None, limit: int) -> list[BlockedKey]:
    params = {"lane": lane, "limit": limit}
    rows = await (await conn.execute(QUERIES["blocked_keys"], params)).fetchall()
    return [BlockedKey.model_validate(row) for row in rows]


async def counts(conn: Conn, window_s: float) -> Counts:
    by_state = await (await conn.execute(QUERIES["counts"])).fetchall()
    finished = await (await conn.execute(QUERIES["throughput"], {"seconds": window_s})).fetchall()
    return Counts(
        by_state=[StateCount.model_validate(row) for row in by_state],
        throughput_per_s={row["lane"]: row["finished"] / window_s for row in finished},
    )


# -- retention ---------------------------------------------------------------------------


async def finished_lanes(conn: Conn) -> list[str]:
    """Lanes holding finished entries."""
    rows = await (await conn.execute(QUERIES["finished_lanes"])).fetchall()
    return [str(row["lane"]) for row in rows]


async def purge(conn: Conn, lane: str, *, retention_s: int, limit: int) -> int:
    """Delete up to `limit` finished entries of `lane` past `retention_s`; returns how many."""
    cursor = await conn.execute(
        QUERIES["purge"], {"lane": lane, "retention_s": retention_s, "limit": limit}
    )
    return cursor.rowcount


# -- bulk actions ------------------------------------------------------------------------


def _bulk_params(action: BulkAction, where: BulkFilter) -> dict[str, Any]:
    return {
        "lane": where.lane,
        "states": [s.value for s in action.from_states],
        "key": where.key,
        "older_than_s": where.older_than_s,
        "error_code": where.error_code,
    }


async def bulk_count(conn: Conn, action: BulkAction, where: BulkFilter) -> int:
    """How many entries the selection holds now."""
    row = await (await conn.execute(QUERIES["bulk_count"], _bulk_params(action, where))).fetchone()
    return int(row["n"]) if row else 0


async def bulk_set_state(
    conn: Conn, action: BulkAction, where: BulkFilter, *, actor: str, reason: str
) -> list[dict[str, Any]]:
    """Lock the selection's keys, then change up to `where.limit` entries in one
    statement, each audited; returns them (id, lane, key, before, after)."""
    params = _bulk_params(action, where)
    await conn.execute(QUERIES["bulk_lock_keys"], params)
    params |= {
        "action": action.value,
        "state": action.to_state.value,
        "limit": where.limit,
        "actor": actor,
        "reason": reason,
        "selection": Jsonb(where.described()),
    }
    return list(await (await conn.execute(QUERIES["bulk_set_state"], params)).fetchall())
