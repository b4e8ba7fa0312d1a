"""The journal against a model: random schedules of enqueue, claim, take, ack, fail,
release, heartbeat, lease expiry and operator actions, checked after every step; then
real workers draining thousands of keyed entries with a handler that fails at random.

Invariants: nothing vanishes, per key the acked entries are in enqueue order, never two
entries of one key are in flight, and `journal.keys.unfinished` counts each key's
unfinished entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bossa.db import Pool, open_pool
from bossa.errors import Conflict
from bossa.journal import Journal, JournalSettings, NewEntry, service
from bossa.journal.models import Entry
from bossa.journal.store import Failure
from bossa.journal.worker import Worker

T = TypeVar("T")
LANE = "model"
KEYS = ("SA-1", "SA-2", "SA-3")
MAX_ATTEMPTS = 3
UNFINISHED = frozenset({"waiting", "ready", "taken", "parked"})
# No backoff: a failed entry is due again at once, so the model knows exactly what is due.
MODEL_SETTINGS = JournalSettings(
    backoff_base_ms=0, backoff_max_ms=0, max_attempts=MAX_ATTEMPTS, lease_ms=60_000
)


@dataclass
class Hold:
    """A lease token some simulated worker holds, with the ids it was given."""

    token: uuid.UUID
    ids: list[int]
    short: bool  # taken with a 1 ms lease: expires unless extended


class JournalModel(RuleBasedStateMachine):
    db_url: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.stack = contextlib.AsyncExitStack()
        self.pool: Pool = self.run(
            self.stack.enter_async_context(open_pool(self.db_url, min_size=1, max_size=2))
        )
        self.journal = Journal(self.pool, MODEL_SETTINGS, actor="model")
        self.run(self.execute("truncate journal.entries, journal.keys, journal.audit"))
        self.order: dict[str, list[int]] = {key: [] for key in KEYS}
        self.key_of: dict[int, str] = {}
        self.state: dict[int, str] = {}
        self.attempts: dict[int, int] = {}
        self.payload: dict[int, Any] = {}
        self.holder: dict[int, int] = {}  # taken entry -> the hold it is leased under
        self.holds: list[Hold] = []
        self.acked: dict[str, list[int]] = {key: [] for key in KEYS}
        self.serial = 0

    # -- plumbing --------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def execute(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall() if cursor.description else []

    def teardown(self) -> None:
        try:
            self.drain_and_check()
        finally:
            self.run(self.stack.aclose())
            self.loop.close()

    # -- the model -------------------------------------------------------------------

    def unfinished_of(self, key: str) -> list[int]:
        return [i for i in self.order[key] if self.state[i] in UNFINISHED]

    def advance(self, key: str) -> None:
        """journal.advance_keys: the key's first unfinished entry, if waiting, is ready."""
        head = self.unfinished_of(key)
        if head and self.state[head[0]] == "waiting":
            self.state[head[0]] = "ready"

    def add(self, entry_id: int, key: str, state: str, payload: Any) -> None:
        assert entry_id not in self.state
        assert all(entry_id > i for i in self.state)  # ids follow enqueue order
        self.order[key].append(entry_id)
        self.key_of[entry_id] = key
        self.state[entry_id] = state
        self.attempts[entry_id] = 0
        self.payload[entry_id] = payload

    def new_hold(self, token: uuid.UUID, ids: list[int], *, short: bool) -> None:
        for entry_id in ids:
            self.holder[entry_id] = len(self.holds)
        self.holds.append(Hold(token, ids, short))

    def valid(self, hold_no: int, ids: list[int]) -> set[int]:
        return {i for i in ids if self.holder.get(i) == hold_no and self.state[i] == "taken"}

    def let_go(self, ids: set[int]) -> None:
        for entry_id in ids:
            del self.holder[entry_id]

    def next_payload(self) -> dict[str, int]:
        self.serial += 1
        return {"n": self.serial}

    # -- producers -------------------------------------------------------------------

    @rule(keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=4))
    def enqueue(self, keys: list[str]) -> None:
        payloads = [self.next_payload() for _ in keys]
        new = [NewEntry(LANE, "cmd", p, key=k) for k, p in zip(keys, payloads, strict=True)]
        results = self.run(self.journal.enqueue(new))
        for key, payload, result in zip(keys, payloads, results, strict=True):
            assert result.created
            state = "waiting" if self.unfinished_of(key) else "ready"
            self.add(result.id, key, state, payload)

    @rule(key=st.sampled_from(KEYS))
    def enqueue_or_claim(self, key: str) -> None:
        payload = self.next_payload()
        free = not self.unfinished_of(key)
        claim = self.run(self.journal.enqueue_or_claim(NewEntry(LANE, "cmd", payload, key=key)))
        assert claim.go_ahead == free
        self.add(claim.entry_id, key, "taken" if free else "waiting", payload)
        if claim.go_ahead:
            assert claim.token is not None
            self.attempts[claim.entry_id] = 1
            self.new_hold(claim.token, [claim.entry_id], short=False)

    # -- workers ---------------------------------------------------------------------

    @rule(limit=st.integers(1, 4), short=st.booleans())
    def take(self, limit: int, short: bool) -> None:
        due = {i for i, s in self.state.items() if s == "ready"}
        taken = self.run(self.journal.take(LANE, limit, lease_ms=1 if short else None))
        assert set(taken.ids) <= due, "took an entry that was not due, or not its key's head"
        assert len(taken.ids) == min(limit, len(due))
        assert len({e.key for e in taken.entries}) == len(taken.entries)
        for entry in taken.entries:
            self.state[entry.id] = "taken"
            self.attempts[entry.id] += 1
            assert entry.attempts == self.attempts[entry.id]
            assert entry.payload == self.payload[entry.id]
        if taken.ids:
            self.new_hold(taken.token, taken.ids, short=short)

    def pick(self, data: st.DataObject) -> tuple[int, Hold, list[int]]:
        # A heartbeat that splits a hold may leave it with no ids: never drawn again.
        live = [n for n, hold in enumerate(self.holds) if hold.ids]
        hold_no = data.draw(st.sampled_from(live), label="hold")
        hold = self.holds[hold_no]
        ids = data.draw(st.lists(st.sampled_from(hold.ids), min_size=1, unique=True), label="ids")
        return hold_no, hold, ids

    @precondition(lambda self: any(hold.ids for hold in self.holds))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        hold_no, hold, ids = self.pick(data)
        expected = self.valid(hold_no, ids)
        assert self.run(self.journal.ack(hold.token, ids)) == expected
        self.let_go(expected)
        for entry_id in sorted(expected):
            key = self.key_of[entry_id]
            self.state[entry_id] = "done"
            self.acked[key].append(entry_id)
            self.advance(key)

    @precondition(lambda self: any(hold.ids for hold in self.holds))
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        hold_no, hold, ids = self.pick(data)
        expected = self.valid(hold_no, ids)
        failures = [Failure(i, "E_TEST", f"attempt {self.attempts[i]} of {i}") for i in ids]
        results = self.run(self.journal.fail(hold.token, LANE, failures))
        assert {r.entry_id for r in results} == expected
        self.let_go(expected)
        for result in results:
            state = "parked" if self.attempts[result.entry_id] >= MAX_ATTEMPTS else "ready"
            assert result.state == state
            assert result.attempts == self.attempts[result.entry_id]
            self.state[result.entry_id] = state

    @precondition(lambda self: any(hold.ids for hold in self.holds))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        hold_no, hold, ids = self.pick(data)
        expected = self.valid(hold_no, ids)
        assert self.run(self.journal.release(hold.token, ids)) == expected
        self.let_go(expected)
        for entry_id in expected:
            self.state[entry_id] = "ready"
            self.attempts[entry_id] -= 1

    @precondition(lambda self: any(hold.ids for hold in self.holds))
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        hold_no, hold, ids = self.pick(data)
        expected = self.valid(hold_no, ids)
        assert self.run(self.journal.heartbeat(hold.token, LANE, ids, lease_ms=60_000)) == expected
        if expected == self.valid(hold_no, hold.ids):
            hold.short = False  # every entry it still holds now has a long lease
        elif hold.short:
            # Some of its entries still run on 1 ms leases: split them off.
            rest = sorted(self.valid(hold_no, hold.ids) - expected)
            self.let_go(set(rest))
            hold.ids = sorted(expected)
            hold.short = False
            self.new_hold(hold.token, rest, short=True)

    @rule()
    def leases_expire(self) -> None:
        """The workers holding short leases stall; the reaper hands their entries out again."""
        expected: dict[int, str] = {}
        for entry_id, hold_no in self.holder.items():
            if self.holds[hold_no].short and self.state[entry_id] == "taken":
                parked = self.attempts[entry_id] >= MAX_ATTEMPTS
                expected[entry_id] = "parked" if parked else "ready"
        self.run(asyncio.sleep(0.003))
        reaped = self.run(self.journal.reap_expired(LANE))
        assert dict(reaped) == expected
        self.let_go(set(expected))
        self.state.update(expected)

    # -- operators -------------------------------------------------------------------

    def operator_action(self, action: str, entry_id: int, allowed: set[str]) -> bool:
        """Run an operator action; it must be refused exactly when the state forbids it."""
        try:
            if action == "retry":
                result: Any = self.run(service.retry(self.journal, entry_id, actor="op"))
            elif action == "park":
                result = self.run(service.park(self.journal, entry_id, actor="op"))
            elif action == "discard":
                result = self.run(
                    service.discard(self.journal, entry_id, actor="op", reason="model")
                )
            else:
                payload = self.next_payload()
                result = self.run(service.edit(self.journal, entry_id, payload, actor="op"))
                self.payload[entry_id] = payload
        except Conflict:
            assert self.state[entry_id] not in allowed, f"{action} refused on {entry_id}"
            return False
        assert self.state[entry_id] in allowed, f"{action} allowed on a {self.state[entry_id]}"
        if action == "retry":
            key = self.key_of[entry_id]
            head = self.unfinished_of(key)[0] == entry_id
            assert result == ("ready" if head else "waiting")
            self.state[entry_id] = result
            self.attempts[entry_id] = 0
        return True

    @precondition(lambda self: self.state)
    @rule(data=st.data(), action=st.sampled_from(["retry", "park", "discard", "edit"]))
    def operator_acts(self, data: st.DataObject, action: str) -> None:
        parked = sorted(i for i, s in self.state.items() if s == "parked")
        # Mostly on parked entries (what operators do), sometimes on any entry.
        choices = parked if parked and data.draw(st.booleans(), label="parked") else None
        entry_id = data.draw(st.sampled_from(choices or sorted(self.state)), label="entry")
        allowed = {
            "retry": {"parked", "ready"},
            "park": {"waiting", "ready"},
            "discard": {"waiting", "ready", "parked"},
            "edit": {"waiting", "ready", "parked"},
        }[action]
        if not self.operator_action(action, entry_id, allowed):
            return
        if action == "park":
            self.state[entry_id] = "parked"
        elif action == "discard":
            self.state[entry_id] = "discarded"
            self.advance(self.key_of[entry_id])

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def journal_matches_model(self) -> None:
        found = self.run(
            self.execute("select id, state::text as state, attempts, payload from journal.entries")
        )
        db = {row["id"]: row for row in found}
        assert set(db) == set(self.state), "an entry vanished or appeared"
        for entry_id, row in db.items():
            assert (row["state"], row["attempts"]) == (
                self.state[entry_id],
                self.attempts[entry_id],
            ), f"entry {entry_id}"
            assert row["payload"] == self.payload[entry_id]
        for key in KEYS:
            unfinished = [db[i]["state"] for i in self.order[key] if db[i]["state"] in UNFINISHED]
            # The head may be ready, taken or parked; the rest wait (or are parked).
            if unfinished:
                assert unfinished[0] in {"ready", "taken", "parked"}, (key, unfinished)
            assert set(unfinished[1:]) <= {"waiting", "parked"}, (key, unfinished)
            assert unfinished.count("taken") <= 1
            assert self.acked[key] == sorted(self.acked[key]), "acked out of order"
        counted = self.run(self.execute("select key, unfinished from journal.keys"))
        expected = {k: len(self.unfinished_of(k)) for k in KEYS if self.unfinished_of(k)}
        assert {row["key"]: row["unfinished"] for row in counted} == expected

    # -- the end: operators clear what is parked, a worker drains the rest -----------

    def drain_and_check(self) -> None:
        for _ in range(200):
            parked = sorted(i for i, s in self.state.items() if s == "parked")
            for entry_id in parked:
                self.operator_action("retry", entry_id, {"parked", "ready"})
            self.holds.clear()
            self.holder.clear()
            self.run(
                self.execute(
                    "update journal.entries set lease_expires_at = now() - interval '1 second'"
                    " where state = 'taken'"
                )
            )
            self.state.update(dict(self.run(self.journal.reap_expired(LANE))))
            taken = self.run(self.journal.take(LANE, 100))
            for entry in taken.entries:
                self.state[entry.id] = "taken"
                self.attempts[entry.id] += 1
            accepted = self.run(self.journal.ack(taken.token, taken.ids))
            assert accepted == set(taken.ids)
            for entry_id in taken.ids:
                self.state[entry_id] = "done"
                self.acked[self.key_of[entry_id]].append(entry_id)
                self.advance(self.key_of[entry_id])
            if not any(s in UNFINISHED for s in self.state.values()):
                break
        self.journal_matches_model()
        for key in KEYS:
            delivered = [i for i in self.order[key] if self.state[i] == "done"]
            assert self.acked[key] == delivered, f"{key}: acked {self.acked[key]}"
        assert all(s in {"done", "discarded"} for s in self.state.values())


def test_journal_follows_the_model(db_url: str) -> None:
    JournalModel.db_url = db_url
    run_state_machine_as_test(
        JournalModel,
        settings=settings(
            max_examples=60,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
            database=None,
        ),
    )


# -- real concurrency -------------------------------------------------------------------


async def test_workers_drain_keyed_entries_in_order(db_url: str) -> None:
    keys = [f"SA-{n}" for n in range(50)]
    per_key = 40
    rng = random.Random(7)
    succeeded: dict[str, list[int]] = {key: [] for key in keys}
    calls: dict[int, int] = {}
    failures: dict[int, int] = {}
    in_flight: set[str] = set()
    overlaps: list[tuple[str, int]] = []

    async def handler(entry: Entry) -> None:
        assert entry.key is not None
        calls[entry.id] = calls.get(entry.id, 0) + 1
        if entry.key in in_flight:
            overlaps.append((entry.key, entry.payload["seq"]))
        in_flight.add(entry.key)
        try:
            await asyncio.sleep(rng.choice((0, 0, 0.001)))
            if rng.random() < 0.15:
                failures[entry.id] = failures.get(entry.id, 0) + 1
                raise RuntimeError(f"element busy ({entry.key}/{entry.payload['seq']})")
            succeeded[entry.key].append(entry.payload["seq"])
        finally:
            in_flight.discard(entry.key)

    fast = JournalSettings(
        backoff_base_ms=2,
        backoff_max_ms=10,
        max_attempts=50,
        lease_ms=5_000,
        poll_interval_s=0.2,
        reap_interval_s=0.2,
    )
    async with open_pool(db_url, min_size=2, max_size=16) as pool:
        journal = Journal(pool, fast, actor="test")
        ids = [
            r.id
            for r in await journal.enqueue(
                [
                    NewEntry(LANE, "cmd", {"seq": seq}, key=key)
                    for seq in range(per_key)
                    for key in keys
                ]
            )
        ]
        workers = [
            Worker(journal, LANE, {"*": handler}, concurrency=4, batch_size=25) for _ in range(3)
        ]
        await asyncio.wait_for(
            asyncio.gather(*(w.run(until_idle=True) for w in workers)), timeout=90
        )
        async with pool.connection() as conn:
            rows = await (
                await conn.execute("select id, state::text as state, attempts from journal.entries")
            ).fetchall()
            left = await (await conn.execute("select count(*) as n from journal.keys")).fetchone()

    assert overlaps == []  # never two entries of one key in a handler at once
    for key in keys:
        assert succeeded[key] == list(range(per_key)), key
    assert sum(w.stats.acked for w in workers) == len(ids)  # each entry acked once
    assert sum(w.stats.stale_acks for w in workers) == 0
    assert failures, "the handler never failed: retries were not exercised"
    # A handler saw an entry again only after that same entry failed.
    assert {i: calls[i] - 1 for i in ids} == {i: failures.get(i, 0) for i in ids}
    assert {row["state"] for row in rows} == {"done"}
    assert {row["id"]: row["attempts"] for row in rows} == calls
    assert left == {"n": 0}
