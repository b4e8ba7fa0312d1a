"""S7 without a database: the seed's EventThreadAllocation example (RecycleRequest = 1,
OpenNewActgCycle = 2, a default thread for the rest) processes its nine events in the
order the seed lists, and halting starts nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from bossa.sync.models import Dispatcher

pytestmark = pytest.mark.anyio

#: The seed's queue, in order, with how long each takes (time units): a slow first
#: recycle request, quick cycle-forwards, and open-new-cycle events of varied length.
QUEUE = [
    ("RecycleRequest", 1, 6),
    ("CycleForward", 1, 2),
    ("OpenNewActgCycle", 1, 3),
    ("OpenNewActgCycle", 2, 1),
    ("OpenNewActgCycle", 3, 2),
    ("OpenNewActgCycle", 4, 1),
    ("CycleForward", 2, 1),
    ("RecycleRequest", 2, 1),
    ("CycleForward", 3, 1),
]
UNIT = 0.02


async def run_seed_example() -> list[tuple[str, str, str, float, float]]:
    dispatcher: Dispatcher[tuple[str, int, int]] = Dispatcher(
        {"RecycleRequest": 1, "OpenNewActgCycle": 2}
    )
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    log: list[tuple[str, str, str, float, float]] = []

    async def work(item: tuple[str, int, int], thread: str, start: Callable[[], None]) -> None:
        began = loop.time() - t0
        start()
        await asyncio.sleep(item[2] * UNIT)
        log.append((f"{item[0]} #{item[1]}", thread, "", began, loop.time() - t0))

    items = [(dispatcher.pool_of(t), (t, n, d)) for t, n, d in QUEUE]
    outcome = await dispatcher.run(items, work)
    assert len(outcome.started) == 9
    assert outcome.unstarted == []
    return sorted(log, key=lambda r: r[3])


async def test_the_seeds_thread_allocation_example() -> None:
    log = await run_seed_example()
    started = [name for name, *_ in log]
    # Processing starts in queue order: a new thread begins an event only once the
    # previous one has begun (the seed's steps 1-6).
    assert started == [f"{t} #{n}" for t, n, _ in QUEUE]
    by = {name: (thread, begin, end) for name, thread, _, begin, end in log}
    # 1. the RecycleRequest thread, 2. the default thread.
    assert by["RecycleRequest #1"][0] == "RecycleRequest#1"
    assert by["CycleForward #1"][0] == "default#1"
    # 3. two OpenNewActgCycle threads take #1-#4; #3 goes to whichever finished first
    # (#2, the short one, on thread 2), #4 to the next free.
    assert by["OpenNewActgCycle #1"][0] == "OpenNewActgCycle#1"
    assert by["OpenNewActgCycle #2"][0] == "OpenNewActgCycle#2"
    assert by["OpenNewActgCycle #3"][0] == "OpenNewActgCycle#2"
    assert by["OpenNewActgCycle #3"][1] >= by["OpenNewActgCycle #2"][2]
    # #1 and #2 ran at the same time, and alongside the recycle request.
    assert by["OpenNewActgCycle #2"][1] < by["OpenNewActgCycle #1"][2]
    assert by["OpenNewActgCycle #1"][1] < by["RecycleRequest #1"][2]
    # 4. CycleForward #2 starts once OpenNewActgCycle #4 has started and CycleForward #1
    # is done (the default thread is one thread).
    assert by["CycleForward #2"][1] >= by["OpenNewActgCycle #4"][1]
    assert by["CycleForward #2"][1] >= by["CycleForward #1"][2]
    assert by["CycleForward #2"][0] == "default#1"
    # 5. RecycleRequest #2 waits for #1 on the one recycle thread.
    assert by["RecycleRequest #2"][0] == "RecycleRequest#1"
    assert by["RecycleRequest #2"][1] >= by["RecycleRequest #1"][2]
    # 6. CycleForward #3 starts after RecycleRequest #2 has started.
    assert by["CycleForward #3"][1] >= by["RecycleRequest #2"][1]
    # Never more threads busy than allocated: at most one recycle, two open-new-cycle,
    # one default at any moment.
    for pool, limit in (("RecycleRequest", 1), ("OpenNewActgCycle", 2), ("default", 1)):
        spans = [(b, e) for _, th, _, b, e in log if th.startswith(pool)]
        for begin, _ in spans:
            assert sum(1 for b, e in spans if b <= begin < e) <= limit


async def test_a_halt_starts_nothing_more_and_lets_the_running_finish() -> None:
    dispatcher: Dispatcher[int] = Dispatcher({})
    finished: list[int] = []

    async def work(item: int, thread: str, began: Callable[[], None]) -> None:
        began()
        if item == 2:
            dispatcher.halt()  # e.g. this event is held, or a disconnect was asked
        await asyncio.sleep(0.01)
        finished.append(item)

    outcome = await dispatcher.run([("default", n) for n in range(1, 6)], work)
    assert finished == [1, 2]
    assert outcome.started == [1, 2]
    assert outcome.unstarted == [3, 4, 5]
    assert dispatcher.active == 0
