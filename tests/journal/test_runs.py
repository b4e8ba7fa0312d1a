"""Runs: a take leases a key's head with the entries right behind it, in order, and every
way a run ends early (a failure, a stop, a dead worker) puts its tail back behind the
key's first unfinished entry, so per-key order holds.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bossa.db import Pool
from bossa.errors import InvalidInput
from bossa.journal import Journal, NewEntry, service
from bossa.journal.models import Entry
from bossa.journal.store import Failure
from bossa.journal.worker import HandlerError, Worker

LANE = "runs"


async def states(pool: Pool) -> dict[int, str]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("select id, state::text as state from journal.entries order by id")
        ).fetchall()
    return {int(r["id"]): r["state"] for r in rows}


async def enqueue(journal: Journal, keys: list[str]) -> list[int]:
    entries = [NewEntry(LANE, "cmd", {"n": n}, key=k) for n, k in enumerate(keys)]
    return [r.id for r in await journal.enqueue(entries)]


async def test_a_run_is_the_head_and_the_entries_behind_it(journal: Journal) -> None:
    a = await enqueue(journal, ["A"] * 5)
    b = await enqueue(journal, ["B"] * 2)
    taken = await journal.take(LANE, 100, run=3)
    # Each head with at most two behind it, in id order.
    assert taken.ids == [*a[:3], *b]
    assert [e.attempts for e in taken.entries] == [1] * 5
    # The limit counts every entry, heads first.
    await journal.ack(taken.token, taken.ids)
    c = await enqueue(journal, ["C"] * 3)
    again = await journal.take(LANE, 3, run=10)
    assert again.ids == [a[3], a[4], c[0]]  # both heads, and one of the oldest head's run


async def test_run_one_takes_heads_only(journal: Journal) -> None:
    a = await enqueue(journal, ["A"] * 3)
    taken = await journal.take(LANE, 100)
    assert taken.ids == [a[0]]
    with pytest.raises(InvalidInput):
        await journal.take(LANE, 100, run=0)


async def test_a_run_stops_at_an_entry_that_is_not_waiting(journal: Journal) -> None:
    a = await enqueue(journal, ["A"] * 4)
    await service.park(journal, a[2], actor="op", reason="hold this one")
    taken = await journal.take(LANE, 100, run=10)
    assert taken.ids == a[:2]  # never past the parked entry


async def test_release_and_reap_put_the_tail_back_behind_the_head(
    journal: Journal, pool: Pool
) -> None:
    a = await enqueue(journal, ["A"] * 4)
    taken = await journal.take(LANE, 100, run=10)
    assert taken.ids == a
    # The first done, the second failed: the rest given back waits behind it.
    await journal.ack(taken.token, [a[0]])
    await journal.fail(taken.token, LANE, [Failure(a[1], "E", "refused")])
    # The failure gave back the tail of its run already; releasing it again changes
    # nothing (a worker that does both is harmless).
    assert await journal.release(taken.token, a[2:]) <= set(a[2:])
    assert (await states(pool)) == {a[0]: "done", a[1]: "ready", a[2]: "waiting", a[3]: "waiting"}

    # A worker dies holding a run: the head comes back ready, its tail waiting. (The
    # failed head's retry is made due now: its backoff is not what this test is about.)
    async with pool.connection() as conn:
        await conn.execute("update journal.entries set not_before = now() where id = %s", (a[1],))
    again = await journal.take(LANE, 100, run=10, lease_ms=1)
    assert again.ids == a[1:]
    await asyncio.sleep(0.01)
    reaped = dict(await journal.reap_expired(LANE))
    assert reaped == {a[1]: "ready", a[2]: "waiting", a[3]: "waiting"}
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "select count(*) filter (where state = 'ready') as ready from journal.entries"
            )
        ).fetchone()
    assert row is not None
    assert row["ready"] == 1  # never two entries of a key ready at once


async def test_a_worker_runs_a_key_in_order_and_gives_back_from_the_first_failure(
    journal: Journal, pool: Pool
) -> None:
    ids = await enqueue(journal, ["A"] * 6 + ["B"] * 3)
    seen: list[int] = []
    refused_once: set[int] = set()

    async def handler(entry: Entry) -> None:
        seen.append(entry.id)
        if entry.id == ids[2] and entry.id not in refused_once:
            refused_once.add(entry.id)
            raise HandlerError("E_BUSY", "try again")

    worker = Worker(journal, LANE, {"cmd": handler}, concurrency=1, run_length=100)
    await asyncio.wait_for(worker.run(until_idle=True), timeout=60)
    a, b = ids[:6], ids[6:]
    in_a = [i for i in seen if i in a]
    # A's first two, the refused third (its tail not started but given back), then the
    # third again and the rest, in order; B untouched by A's failure.
    assert in_a == [a[0], a[1], a[2], a[2], a[3], a[4], a[5]]
    assert [i for i in seen if i in b] == b
    assert set((await states(pool)).values()) == {"done"}
    assert worker.stats.released == 3  # A's tail behind the failure, attempt not counted
    async with pool.connection() as conn:
        attempts: list[dict[str, Any]] = await (
            await conn.execute(
                "select id, attempts from journal.entries where id = any(%s)", (a[3:],)
            )
        ).fetchall()
    assert {r["attempts"] for r in attempts} == {1}


@pytest.mark.parametrize("give_back", ["release", "reap"])
async def test_a_tail_given_back_while_its_head_is_acked_is_not_stranded(
    journal: Journal, pool: Pool, give_back: str
) -> None:
    """The race the keyed drain hit: worker A holds a run whose head failed and was taken
    by worker B; B acks the head while A gives the tail back. Each decides on its own
    snapshot (B: the next entry is taken, nothing to promote; A: an earlier entry is
    unfinished, so wait), and without a lock between them the tail waits behind nothing,
    for ever. Giving back takes the key's lock first, as ack does, so one sees the other."""
    a = await enqueue(journal, ["A"] * 3)
    run = await journal.take(LANE, 100, run=3, lease_ms=60_000)
    assert run.ids == a
    await journal.fail(run.token, LANE, [Failure(a[0], "E", "refused")])
    async with pool.connection() as conn:
        await conn.execute("update journal.entries set not_before = now() where id = %s", (a[0],))
    retry = await journal.take(LANE, 100)
    assert retry.ids == [a[0]]
    if give_back == "reap":
        async with pool.connection() as conn:
            await conn.execute(
                "update journal.entries set lease_expires_at = now() - interval '1 s'"
                " where id = any(%s)",
                (a[1:],),
            )

    async def hand_back() -> object:
        if give_back == "release":
            return await journal.release(run.token, a[1:])
        return await journal.reap_expired(LANE)

    async with pool.connection() as conn, conn.transaction():
        assert await journal.ack(retry.token, [a[0]], conn=conn) == {a[0]}
        # B's ack is not committed yet: A must wait for it rather than decide without it.
        handing = asyncio.create_task(hand_back())
        await asyncio.sleep(0.3)
        assert not handing.done()
    await asyncio.wait_for(handing, timeout=10)
    assert (await states(pool)) == {a[0]: "done", a[1]: "ready", a[2]: "waiting"}
