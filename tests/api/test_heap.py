"""The server process settles its heap once started (`bossa.heap.settle`): what start-up
built is frozen out of the garbage collector's full collections; an app built for a test
process leaves the collector alone."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

import httpx

from bossa.api import create_app
from bossa.journal import Journal
from bossa.runtime import Runtime


def _factory(runtime: Runtime) -> contextlib.AbstractAsyncContextManager[Runtime]:
    @contextlib.asynccontextmanager
    async def factory() -> AsyncIterator[Runtime]:
        yield runtime

    return factory()


async def test_the_server_freezes_what_start_up_built(journal: Journal, db_url: str) -> None:
    runtime = Runtime.around(db_url, journal, embedded=False)
    app = create_app(lambda: _factory(runtime), settle_heap=True)
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 1000  # modules, routes, models: all of start-up
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as http:
                assert (await http.get("/readyz")).json() == {"status": "ready"}
            # Cycles made after it are still collected.
            cycle: list[object] = []
            cycle.append(cycle)
            del cycle
            assert gc.collect() >= 1
    finally:
        gc.unfreeze()  # the test process's heap as it was
        await runtime.deliverer.close()


async def test_an_app_built_in_a_test_process_leaves_the_collector_alone(
    journal: Journal, db_url: str
) -> None:
    runtime = Runtime.around(db_url, journal, embedded=False)
    app = create_app(lambda: _factory(runtime))
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() == 0
    finally:
        await runtime.deliverer.close()
