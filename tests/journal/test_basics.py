"""Enqueue, take, ack, fail, park: the journal's contract, one rule per test."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bossa.db import Pool
from bossa.errors import InvalidInput
from bossa.journal import EntryState, Failure, Journal, NewEntry


async def state_of(pool: Pool, entry_id: int) -> str:
    async with pool.connection() as conn:
        row = await (
            await conn.execute("select state::text from journal.entries where id = %s", (entry_id,))
        ).fetchone()
    assert row is not None
    return str(row["state"])


async def test_enqueue_take_ack(journal: Journal, pool: Pool) -> None:
    ids = [r.id for r in await journal.enqueue([NewEntry("l", "k", {"n": i}) for i in range(5)])]
    taken = await journal.take("l", 10)
    assert taken.ids == ids
    assert [e.payload for e in taken.entries] == [{"n": i} for i in range(5)]
    assert all(e.attempts == 1 for e in taken.entries)
    assert await journal.ack(taken.token, taken.ids) == set(ids)
    assert (await journal.take("l", 10)).entries == []
    assert {await state_of(pool, i) for i in ids} == {"done"}


async def test_per_key_fifo_one_in_flight(journal: Journal) -> None:
    await journal.enqueue([NewEntry("l", "k", {"n": i}, key="SA-1") for i in range(3)])
    await journal.enqueue([NewEntry("l", "k", {"n": 9}, key="SA-2")])
    first = await journal.take("l", 10)
    assert [(e.key, e.payload["n"]) for e in first.entries] == [("SA-1", 0), ("SA-2", 9)]
    assert (await journal.take("l", 10)).entries == []  # SA-1's next waits for its head
    await journal.ack(first.token, first.ids)
    second = await journal.take("l", 10)
    assert [(e.key, e.payload["n"]) for e in second.entries] == [("SA-1", 1)]


async def test_stale_token_is_refused(journal: Journal) -> None:
    await journal.enqueue_one(NewEntry("l", "k", {}))
    taken = await journal.take("l", 1, lease_ms=100)
    await asyncio.sleep(0.15)
    assert await journal.reap_expired("l") == [(taken.ids[0], EntryState.READY)]
    again = await journal.take("l", 1)
    assert again.ids == taken.ids
    assert again.entries[0].attempts == 2
    assert await journal.ack(taken.token, taken.ids) == set()  # the presumed-dead worker
    assert await journal.ack(again.token, again.ids) == set(taken.ids)


async def test_fail_retries_then_parks_and_blocks_key(journal: Journal, pool: Pool) -> None:
    poison, behind = await journal.enqueue(
        [NewEntry("l", "k", {"n": 0}, key="SA-1"), NewEntry("l", "k", {"n": 1}, key="SA-1")]
    )
    other = await journal.enqueue_one(NewEntry("l", "k", {"n": 2}, key="SA-2"))
    for attempt in range(1, 4):
        await asyncio.sleep(0.06)
        taken = await journal.take("l", 10)
        mine = [e for e in taken.entries if e.id == poison.id]
        assert mine
        assert mine[0].attempts == attempt
        results = await journal.fail(
            taken.token, "l", [Failure(poison.id, "E42", f"bad {attempt}")]
        )
        others = [e.id for e in taken.entries if e.id != poison.id]
        await journal.ack(taken.token, others)
    assert results[0].state is EntryState.PARKED
    assert await state_of(pool, other.id) == "done"  # other keys kept flowing
    assert await state_of(pool, behind.id) == "waiting"  # its key stays blocked
    await asyncio.sleep(0.06)
    assert (await journal.take("l", 10)).entries == []
    async with pool.connection() as conn:
        row = await (
            await conn.execute("select errors from journal.entries where id = %s", (poison.id,))
        ).fetchone()
    assert row is not None
    assert [(e["attempt"], e["code"], e["message"]) for e in row["errors"]] == [
        (1, "E42", "bad 1"),
        (2, "E42", "bad 2"),
        (3, "E42", "bad 3"),
    ]


async def test_dedup_key_while_pending(journal: Journal) -> None:
    first = await journal.enqueue_one(NewEntry("l", "k", {"a": 1}, dedup_key="WO-1"))
    again = await journal.enqueue_one(NewEntry("l", "k", {"a": 2}, dedup_key="WO-1"))
    assert again.id == first.id
    assert first.created
    assert not again.created
    in_batch = await journal.enqueue(
        [NewEntry("l", "k", {}, dedup_key="WO-2"), NewEntry("l", "k", {}, dedup_key="WO-2")]
    )
    assert in_batch[0].id == in_batch[1].id
    assert [r.created for r in in_batch] == [True, False]
    taken = await journal.take("l", 10)
    await journal.ack(taken.token, taken.ids)
    after = await journal.enqueue_one(NewEntry("l", "k", {"a": 3}, dedup_key="WO-1"))
    assert after.created
    assert after.id != first.id


async def test_concurrent_dedup_enqueues_make_one_entry(journal: Journal) -> None:
    results = await asyncio.gather(
        *(journal.enqueue_one(NewEntry("l", "k", {}, dedup_key="same")) for _ in range(8))
    )
    assert len({r.id for r in results}) == 1
    assert sum(r.created for r in results) == 1


async def test_not_before_delays(journal: Journal) -> None:
    from datetime import UTC, datetime, timedelta

    later = datetime.now(UTC) + timedelta(seconds=0.3)
    await journal.enqueue_one(NewEntry("l", "k", {}, not_before=later))
    assert (await journal.take("l", 1)).entries == []
    await asyncio.sleep(0.35)
    assert len((await journal.take("l", 1)).entries) == 1


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        (NewEntry("", "k", {}), "lane"),
        (NewEntry("l", "k", {}, key=""), "key"),
        (NewEntry("l", "", {}), "kind"),
        (NewEntry("l", "k", {1, 2}), "payload"),
        (NewEntry("l", "k", float("nan")), "payload"),
        (NewEntry("l", "k", "x" * 2_000_000), "payload"),
    ],
)
async def test_bad_input_enqueues_nothing(
    journal: Journal, pool: Pool, entry: NewEntry, field: str
) -> None:
    good = NewEntry("l", "k", {"fine": True})
    with pytest.raises(InvalidInput) as caught:
        await journal.enqueue([good, entry])
    assert caught.value.field == f"entries[1].{field}"
    async with pool.connection() as conn:
        row = await (await conn.execute("select count(*) as n from journal.entries")).fetchone()
    assert row == {"n": 0}


async def test_unknown_lane_setting_is_refused(journal: Journal) -> None:
    await journal.declare_lane("l", owner="journal")
    with pytest.raises(InvalidInput, match="max_atempts") as caught:
        await journal.set_policy("l", {"max_atempts": 3}, actor="op")
    assert "known settings" in str(caught.value)
    with pytest.raises(InvalidInput, match="max_attempts"):
        await journal.set_policy("l", {"max_attempts": 0}, actor="op")
    policy = await journal.set_policy("l", {"max_payload_bytes": 10}, actor="op")
    assert policy.max_payload_bytes == 10
    with pytest.raises(InvalidInput, match="at most 10"):
        await journal.enqueue_one(NewEntry("l", "k", {"long": "payload"}))


async def test_take_waits_in_the_database_for_an_entry(journal: Journal) -> None:
    # A lingering worker's take: it waits in the database (journal.wait_ready), and an
    # entry committed during the wait is taken by that same call, runs and all.
    waiting = asyncio.create_task(journal.take("l", 10, run=10, wait_s=1.0, poll_s=0.005))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    first, second = await journal.enqueue(
        [NewEntry("l", "k", {"n": 0}, key="SA-1"), NewEntry("l", "k", {"n": 1}, key="SA-1")]
    )
    taken = await waiting
    assert taken.ids == [first.id, second.id]
    assert await journal.ack(taken.token, taken.ids) == {first.id, second.id}


async def test_take_wait_ends_empty_and_leaves_delayed_entries(journal: Journal) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    await journal.enqueue([NewEntry("l", "k", {}, not_before=later)])
    assert (await journal.take("l", 10, wait_s=0.05, poll_s=0.01)).entries == []


async def test_take_wait_is_bounded(journal: Journal) -> None:
    for wait_s, poll_s in ((1.5, 0.005), (-1.0, 0.005), (float("nan"), 0.005), (0.1, 0.0)):
        with pytest.raises(InvalidInput):
            await journal.take("l", 1, wait_s=wait_s, poll_s=poll_s)
