"""The handler the fault tests' worker subprocesses run (`--handler ...:slow_handler`).

It records each delivery in `public.deliveries` (committed at once, so that a delivery
survives the process being killed) and then works slowly, so that a test can kill the
process in the middle of a batch.
"""

from __future__ import annotations

import asyncio
import os

import psycopg

from bossa.journal.models import Entry

_connections: dict[str, psycopg.AsyncConnection[tuple[object, ...]]] = {}


async def _connection() -> psycopg.AsyncConnection[tuple[object, ...]]:
    conn = _connections.get("deliveries")
    if conn is None or conn.closed:
        conn = await psycopg.AsyncConnection.connect(
            os.environ["BOSSA_DATABASE_URL"], autocommit=True
        )
        _connections["deliveries"] = conn
    return conn


async def slow_handler(entry: Entry) -> None:
    conn = await _connection()
    await conn.execute(
        "insert into public.deliveries (entry_id, pid) values (%s, %s)", (entry.id, os.getpid())
    )
    await asyncio.sleep(float(os.environ.get("BOSSA_TEST_HANDLER_S", "0.1")))
