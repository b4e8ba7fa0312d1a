"""S7: the listener's threads (DAT_Listener EventThreadAllocation), with no I/O.

One default thread takes every event type without an allocation, strictly in queue
order. A type with an allocation gets that many threads of its own. Items are started
in queue order: the dispatcher waits until a thread of the item's pool is free, starts
the item there, and waits until its processing has begun before it looks at the next
(the seed: "a new thread can begin processing an event as soon as processing for the
previous event has begun"). So with RecycleRequest = 1 and OpenNewActgCycle = 2, a
slow recycle request does not hold CycleForward events back, but the next recycle
request waits for it, and nothing overtakes an earlier event in the queue to start.

The threads are asyncio tasks: the listener's work is database round trips, and one
event loop runs them concurrently; "thread" is the seed's word and the operator's.

`halt()` stops the dispatch (an event is held, or the listener is being disconnected):
items not started are given back to the caller, those running finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["DEFAULT_POOL", "Dispatcher", "Outcome"]

DEFAULT_POOL = "default"

T = TypeVar("T")


@dataclass
class Outcome(Generic[T]):
    started: list[T] = field(default_factory=list)
    unstarted: list[T] = field(default_factory=list)


class Dispatcher(Generic[T]):
    """Runs items on the threads of their pools, started in the order given."""

    def __init__(self, allocation: Mapping[str, int]) -> None:
        self.sizes = {DEFAULT_POOL: 1, **allocation}
        self._free: dict[str, asyncio.Queue[str]] = {}
        for pool, n in self.sizes.items():
            queue: asyncio.Queue[str] = asyncio.Queue()
            for i in range(1, n + 1):
                queue.put_nowait(f"{pool}#{i}")
            self._free[pool] = queue
        self._halted = asyncio.Event()
        #: Threads processing an event now (the seed's "total counter of active threads").
        self.active = 0

    def pool_of(self, event_type: str) -> str:
        return event_type if event_type in self.sizes else DEFAULT_POOL

    def halt(self) -> None:
        self._halted.set()

    @property
    def halted(self) -> bool:
        return self._halted.is_set()

    def resume(self) -> None:
        self._halted.clear()

    async def run(
        self,
        items: Sequence[tuple[str, T]],
        work: Callable[[T, str, Callable[[], None]], Awaitable[None]],
    ) -> Outcome[T]:
        """Start each (pool, item) in order on a free thread of its pool; returns once
        every started item is done. `work(item, thread, began)` calls `began()` when its
        processing has begun (the next item may start from then on; returning counts as
        begun too); it must not raise: it settles its own item (a failure halts the
        dispatcher through `halt`)."""
        outcome: Outcome[T] = Outcome()
        tasks: list[asyncio.Task[None]] = []
        for n, (pool, item) in enumerate(items):
            thread = await self._acquire(pool)
            if thread is None:
                outcome.unstarted.extend(i for _, i in items[n:])
                break
            began = asyncio.Event()
            tasks.append(asyncio.create_task(self._one(pool, thread, item, work, began)))
            outcome.started.append(item)
            await began.wait()
        if tasks:
            await asyncio.gather(*tasks)
        return outcome

    async def _acquire(self, pool: str) -> str | None:
        """A free thread of the pool, or None once halted (nothing more starts)."""
        if self.halted:
            return None
        getter = asyncio.ensure_future(self._free[pool].get())
        halted = asyncio.ensure_future(self._halted.wait())
        try:
            await asyncio.wait([getter, halted], return_when=asyncio.FIRST_COMPLETED)
        finally:
            halted.cancel()
        if getter.done() and not self.halted:
            return getter.result()
        if getter.done():
            self._free[pool].put_nowait(getter.result())
        else:
            getter.cancel()
        return None

    async def _one(
        self,
        pool: str,
        thread: str,
        item: T,
        work: Callable[[T, str, Callable[[], None]], Awaitable[None]],
        began: asyncio.Event,
    ) -> None:
        self.active += 1
        try:
            await work(item, thread, began.set)
        finally:
            began.set()
            self.active -= 1
            self._free[pool].put_nowait(thread)
