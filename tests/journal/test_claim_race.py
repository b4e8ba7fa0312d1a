"""P5's race: direct delivery (enqueue_or_claim) against the backup daemon draining the lane.

An order daemon asks "may I deliver this command now?" for each command of a key; a
backup daemon takes, delivers and acks whatever is queued. Whoever delivers, a key's
commands must be delivered in order, each exactly once, a failed direct delivery
included (it is retried from the buffer before any later command of its key).
"""

from __future__ import annotations

import asyncio
import random

from bossa.db import Pool
from bossa.journal import Claim, Failure, Journal, NewEntry

LANE = "provisioning"


async def unfinished(pool: Pool) -> int:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "select count(*) as n from journal.entries"
                " where state in ('waiting', 'ready', 'taken', 'parked')"
            )
        ).fetchone()
    assert row is not None
    return int(row["n"])


async def wait_drained(pool: Pool, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await unfinished(pool):
        assert asyncio.get_running_loop().time() < deadline, "the lane did not drain"
        await asyncio.sleep(0.01)


class Network:
    """The element the commands go to: records what it was sent, in order."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, int]] = []
        self.failed: list[tuple[str, int]] = []
        self.direct = 0
        self.buffered = 0


async def backup_daemon(journal: Journal, network: Network, stop: asyncio.Event) -> None:
    while not stop.is_set():
        taken = await journal.take(LANE, 10)
        if not taken.entries:
            await asyncio.sleep(0.002)
            continue
        for entry in taken.entries:
            network.delivered.append((entry.key or "", entry.payload["seq"]))
            network.buffered += 1
            await asyncio.sleep(random.choice((0, 0, 0.001)))
        assert await journal.ack(taken.token, taken.ids) == set(taken.ids)


async def deliver_directly(
    journal: Journal, network: Network, key: str, seq: int, claim: Claim, fail: bool, pause: float
) -> None:
    assert claim.token is not None
    await asyncio.sleep(pause)  # the element is slow: later commands arrive meanwhile
    if fail:
        network.failed.append((key, seq))
        results = await journal.fail(
            claim.token, LANE, [Failure(claim.entry_id, "E_NE", "element busy")]
        )
        assert [r.entry_id for r in results] == [claim.entry_id]
        return
    network.delivered.append((key, seq))
    network.direct += 1
    await asyncio.sleep(pause)
    assert await journal.ack(claim.token, [claim.entry_id]) == {claim.entry_id}


async def order_daemon(
    journal: Journal, network: Network, key: str, commands: int, rng: random.Random, fail_p: float
) -> None:
    """Commands of one key arrive one after another; a direct delivery runs in the
    background while the next command is already asking for the go-ahead."""
    deliveries: list[asyncio.Task[None]] = []
    for seq in range(commands):
        claim = await journal.enqueue_or_claim(NewEntry(LANE, "cmd", {"seq": seq}, key=key))
        if claim.go_ahead:
            pause = rng.choice((0, 0.0005, 0.002))
            fail = rng.random() < fail_p
            deliveries.append(
                asyncio.create_task(
                    deliver_directly(journal, network, key, seq, claim, fail, pause)
                )
            )
        else:
            assert claim.token is None
        await asyncio.sleep(rng.choice((0, 0, 0.0005, 0.002)))
    await asyncio.gather(*deliveries)


def assert_in_order(network: Network, keys: list[str], commands: int) -> None:
    by_key: dict[str, list[int]] = {key: [] for key in keys}
    for key, seq in network.delivered:
        by_key[key].append(seq)
    for key in keys:
        assert by_key[key] == list(range(commands)), f"{key}: delivered {by_key[key]}"


async def test_direct_delivery_races_the_backup_daemon(journal: Journal, pool: Pool) -> None:
    rng = random.Random(5)
    network = Network()
    stop = asyncio.Event()
    daemon = asyncio.create_task(backup_daemon(journal, network, stop))
    keys = [f"SA-{n}" for n in range(200)]
    commands = 5
    try:
        for key in keys:
            await order_daemon(journal, network, key, commands, rng, fail_p=0.0)
        await wait_drained(pool)
    finally:
        stop.set()
        await daemon
    assert_in_order(network, keys, commands)
    assert network.direct > 0
    assert network.buffered > 0  # both paths were taken


async def test_racing_with_failed_direct_deliveries(journal: Journal, pool: Pool) -> None:
    """Several order daemons at once, and some direct deliveries fail."""
    rng = random.Random(11)
    network = Network()
    stop = asyncio.Event()
    daemon = asyncio.create_task(backup_daemon(journal, network, stop))
    keys = [f"SA-{n}" for n in range(200)]
    commands = 5
    try:
        for start in range(0, len(keys), 4):
            await asyncio.gather(
                *(
                    order_daemon(journal, network, key, commands, rng, fail_p=0.25)
                    for key in keys[start : start + 4]
                )
            )
        await wait_drained(pool)
    finally:
        stop.set()
        await daemon
    assert_in_order(network, keys, commands)
    assert network.failed
    assert network.direct > 0


async def test_failed_direct_delivery_is_retried_before_later_commands(
    journal: Journal, pool: Pool
) -> None:
    first = await journal.enqueue_or_claim(NewEntry(LANE, "cmd", {"seq": 0}, key="SA-1"))
    assert first.go_ahead
    assert first.token is not None
    [failed] = await journal.fail(first.token, LANE, [Failure(first.entry_id, "E_NE", "down")])
    assert failed.state == "ready"
    # The key is not free: the failed command is still pending, so later ones queue.
    second = await journal.enqueue_or_claim(NewEntry(LANE, "cmd", {"seq": 1}, key="SA-1"))
    third = await journal.enqueue_or_claim(NewEntry(LANE, "cmd", {"seq": 2}, key="SA-1"))
    assert not second.go_ahead
    assert not third.go_ahead
    assert second.token is None
    # The refused token cannot ack the entry now that it waits for a retry.
    assert await journal.ack(first.token, [first.entry_id]) == set()
    seen: list[tuple[int, int]] = []
    deadline = asyncio.get_running_loop().time() + 5
    while len(seen) < 3:
        assert asyncio.get_running_loop().time() < deadline
        taken = await journal.take(LANE, 10)
        assert len(taken.entries) <= 1  # one command of the key at a time
        seen.extend((entry.payload["seq"], entry.attempts) for entry in taken.entries)
        await journal.ack(taken.token, taken.ids)
        await asyncio.sleep(0.01)
    assert seen == [(0, 2), (1, 1), (2, 1)]
    assert await unfinished(pool) == 0
    # The key is free again: the next command goes straight through.
    fourth = await journal.enqueue_or_claim(NewEntry(LANE, "cmd", {"seq": 3}, key="SA-1"))
    assert fourth.go_ahead
