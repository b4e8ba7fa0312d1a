"""A long-running process's heap and Python's cyclic garbage collector.

Two uses, one reason: a full (generation 2) collection walks every tracked object in
the process with the event loop stopped.

The server (`settle`). A `bossa serve` process holds about 150,000 tracked objects once
it has started (FastAPI, pydantic and their models, every module's routes, psycopg):
one full walk takes about 90 ms of CPU on the 2-core benchmark machine (180-400 ms of
wall time when the machine is busy). Under load one came every 1-3 s, and the requests
waiting behind it made the partners' open API's whole p99 (97-110 ms against 12-19 ms
for the same SQL on a bare ASGI function; bench/partners, issue 16). `settle()` runs once
the server has started: one collection, then `gc.freeze()`, which moves every object
alive then into a permanent generation that collections never walk again. What start-up
built lives as long as the process anyway; the few of its objects that die later in a
cycle (a pooled connection replaced) are kept, so at most start-up's own memory is ever
held. Only the server process does this: a test process that builds many apps keeps
the collector as it is.

The daemons (`settled`). A backup daemon draining a backlog makes about ten tracked
objects per command (the taken row, its payload's dicts, the validated command, what is
sent): with the default thresholds (a young collection every 700 allocations, a full one
every hundred young ones) a 30,000-command drain ran about 600 collections, 21-25 us of
the daemon's 70-90 us of Python per command, the full ones walking every object of the
process with the event loop stopped (bench/provisioning, issue 13).

`settled()` is held while a daemon runs: what is alive when it starts (modules, classes,
models, pools) is frozen (`gc.freeze()`, as `settle` does for the server) so that no
collection walks it again, and the young generation is collected every 10,000
allocations instead of 700; a full collection then walks only what was made since the
freeze. Cycles are still collected, later. Held by several daemons of one process at
once, the first to start settles the heap and the last to stop puts the collector back
as it was (a test process keeps its collector).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["DAEMON_THRESHOLD", "settle", "settled"]

#: The collector's thresholds while a daemon runs (young, middle, old).
DAEMON_THRESHOLD = (10_000, 20, 10)

_lock = threading.Lock()
_holders = 0
_saved: tuple[int, int, int] | None = None
_froze = False


def settle() -> int:
    """Collect, then freeze what is alive (start-up's objects); the number frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@contextlib.contextmanager
def settled() -> Iterator[None]:
    global _holders, _saved, _froze
    with _lock:
        if _holders == 0:
            _saved = gc.get_threshold()
            # A process that froze its heap already (`bossa serve`) keeps it frozen.
            _froze = gc.get_freeze_count() == 0
            if _froze:
                gc.freeze()
            gc.set_threshold(*DAEMON_THRESHOLD)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                if _froze:
                    gc.unfreeze()
                _saved = None
