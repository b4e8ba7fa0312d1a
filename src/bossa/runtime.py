"""What a running bossa process holds: its settings, its database, a pool and the journal.

Every long-running command (serve, workers, demo) enters `running()`; it validates all
settings first, so a bad one stops start-up with a message that names it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bossa import config
from bossa.db import DatabaseSettings, Pool, database, open_pool
from bossa.db.migrations import MigrationError, migrate, pending
from bossa.journal import Journal, JournalSettings

__all__ = ["Runtime", "running"]


@dataclass
class Runtime:
    url: str
    pool: Pool
    journal: Journal
    embedded: bool


@contextlib.asynccontextmanager
async def running(*, actor: str = "bossa", pool_max: int | None = None) -> AsyncIterator[Runtime]:
    settings = config.load_all()
    db_settings = settings["database"]
    assert isinstance(db_settings, DatabaseSettings)
    journal_settings = settings["journal"]
    assert isinstance(journal_settings, JournalSettings)
    embedded = db_settings.database_url is None
    with database(db_settings) as url:
        _ensure_schema(url, embedded=embedded)
        async with open_pool(
            url,
            min_size=db_settings.pool_min_size,
            max_size=pool_max or db_settings.pool_max_size,
        ) as pool:
            yield Runtime(url, pool, Journal(pool, journal_settings, actor=actor), embedded)


def _ensure_schema(url: str, *, embedded: bool) -> None:
    """The embedded database is bossa's own: migrate it. An operator's server: only check."""
    if embedded:
        migrate(url)
        return
    import psycopg

    with psycopg.connect(url) as conn:
        todo = pending(conn)
    if todo:
        names = ", ".join(m.label for m in todo[:5])
        raise MigrationError(
            f"{len(todo)} migration(s) not applied ({names}); run `bossa db migrate` first"
        )
