"""The system of record: which PostgreSQL to use, connections to it, and its schema.

`database(settings)` is the one way in: with `BOSSA_DATABASE_URL` set it uses that server
and starts nothing; without it, it runs the embedded PostgreSQL for as long as the block
lasts. `open_pool(url)` gives the psycopg 3 async pool that every module shares. `Conn`
and `Pool` are the types every module's store takes; `user_errors()` turns a driver
error the caller caused into bossa's typed errors.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from bossa.db.embedded import EmbeddedPostgres, EmbeddedStatus
from bossa.db.errors import translate, user_errors
from bossa.db.settings import DatabaseSettings

__all__ = [
    "Conn",
    "DatabaseSettings",
    "EmbeddedPostgres",
    "EmbeddedStatus",
    "Pool",
    "database",
    "embedded_from",
    "masked_url",
    "open_pool",
    "translate",
    "user_errors",
]

Conn = psycopg.AsyncConnection[dict[str, Any]]
Pool = AsyncConnectionPool[Conn]


_URL_PASSWORD = re.compile(r"(?P<head>://[^:/@]*:)(?P<secret>[^@]*)(?P<tail>@)")
_CONNINFO_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\S+)")


def masked_url(url: str) -> str:
    """The URL or conninfo with its password replaced by ***, for messages and listings."""
    if "://" in url:
        url = _URL_PASSWORD.sub(r"\g<head>***\g<tail>", url)
        return re.sub(r"([?&]password=)[^&]*", r"\1***", url)
    return _CONNINFO_PASSWORD.sub(r"\g<head>***", url)


def embedded_from(settings: DatabaseSettings) -> EmbeddedPostgres:
    return EmbeddedPostgres(
        settings.data_dir, port=settings.embedded_port, database=settings.embedded_database
    )


@contextlib.contextmanager
def database(settings: DatabaseSettings | None = None) -> Iterator[str]:
    """Yield the URL of the database to use, running the embedded server if none is set."""
    settings = settings or DatabaseSettings()
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    with embedded_from(settings).held() as url:
        yield url


async def _configure(conn: psycopg.AsyncConnection[object]) -> None:
    # Every bossa connection says who it is in pg_stat_activity.
    await conn.set_autocommit(True)
    await conn.execute("set application_name = 'bossa'")


@contextlib.asynccontextmanager
async def open_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, name: str = "bossa"
) -> AsyncIterator[Pool]:
    """An open async pool whose connections return rows as dicts.

    Connections are in autocommit: a single statement (the journal's take, ack, enqueue)
    costs one round trip, and work that must be atomic says so with `conn.transaction()`.
    They are not checked on checkout (that would cost a round trip per use): after
    PostgreSQL restarts, a stale connection fails once, the pool discards it, and callers
    retry, as every bossa worker does.
    """
    pool: Pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        kwargs={"row_factory": dict_row, "autocommit": True},
        configure=_configure,
        reconnect_timeout=3600,
    )
    await pool.open(wait=True, timeout=30)
    try:
        yield pool
    finally:
        await pool.close()
