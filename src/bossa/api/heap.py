"""The server process's heap and Python's cyclic garbage collector.

A full (generation 2) collection walks every tracked object in the process, and a
`bossa serve` process holds about 150,000 of them once it has started (FastAPI, pydantic
and their models, every module's routes, psycopg): one such walk takes about 90 ms of CPU
on the 2-core benchmark machine (180-400 ms of wall time when the machine is busy), with
the event loop stopped for all of it. Under load one came every 1-3 s (objects of
requests in flight survive the young collections and count towards the next full one),
and the requests waiting behind it made the partners' open API's whole p99 (97-110 ms
against 12-19 ms for the same SQL on a bare ASGI function; bench/partners, issue 16).

`settle()` runs once the server has started: one collection, then `gc.freeze()`, which
moves every object alive then into a permanent generation that collections never walk
again: a full collection then walks only what was made since, and cycles made later
are collected as before. What start-up built (modules, classes, routes, models) lives as
long as the process anyway; the few of its objects that die later in a cycle (a pooled
connection replaced) are kept, so at most start-up's own memory is ever held. Only the
server process does this (`bossa serve`): a test process that builds many apps keeps the
collector as it is.
"""

from __future__ import annotations

import gc

__all__ = ["settle"]


def settle() -> int:
    """Collect, then freeze what is alive (start-up's objects); the number frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
