"""What a running bossa process holds: its settings, its database, a pool and the
long-lived services built on them (the journal, provisioning's deliverer).

Every long-running command (serve, workers, demo) and every CLI command enters
`running()`. It loads and checks every settings section once, first, so a bad one stops
start-up with a message that names it; edges then take settings and services from the
runtime instead of building their own. Everything is closed in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

import psycopg

from bossa import config
from bossa.access import AccessSettings, Authenticator
from bossa.config import BossaSettings
from bossa.db import DatabaseSettings, Pool, database, masked_url, open_pool
from bossa.db.migrations import MigrationError, migrate, pending
from bossa.errors import UserError
from bossa.journal import Journal, JournalSettings
from bossa.provisioning import Deliverer, ProvisioningSettings

__all__ = ["DatabaseUnavailable", "Runtime", "running"]


class DatabaseUnavailable(UserError):
    """bossa's PostgreSQL cannot be reached: nothing can be done until it can."""

    http_status = 503


S = TypeVar("S", bound=BossaSettings)


@dataclass
class Runtime:
    url: str
    pool: Pool
    journal: Journal
    deliverer: Deliverer
    embedded: bool
    sections: dict[str, BossaSettings]
    authenticator: Authenticator

    @classmethod
    def around(
        cls,
        url: str,
        journal: Journal,
        *,
        embedded: bool,
        provisioning: ProvisioningSettings | None = None,
    ) -> Runtime:
        """A runtime around a journal (and its pool) that the caller opened and will close:
        the demo's and the tests'. The deliverer is built here; close it with the pool."""
        sections = config.load_all()
        if provisioning is not None:
            sections["provisioning"] = provisioning
        deliverer = Deliverer(journal.pool, provisioning or ProvisioningSettings())
        access = sections["access"]
        assert isinstance(access, AccessSettings)
        authenticator = Authenticator(journal.pool, access)
        return cls(url, journal.pool, journal, deliverer, embedded, sections, authenticator)

    def settings(self, cls: type[S]) -> S:
        """The section of type `cls`, as loaded and checked at start-up."""
        section = self.sections[cls.section]
        assert isinstance(section, cls)
        return section


@contextlib.asynccontextmanager
async def running(*, actor: str = "bossa", pool_max: int | None = None) -> AsyncIterator[Runtime]:
    sections = config.load_all()
    db_settings = sections["database"]
    assert isinstance(db_settings, DatabaseSettings)
    journal_settings = sections["journal"]
    assert isinstance(journal_settings, JournalSettings)
    provisioning_settings = sections["provisioning"]
    assert isinstance(provisioning_settings, ProvisioningSettings)
    access_settings = sections["access"]
    assert isinstance(access_settings, AccessSettings)
    embedded = db_settings.database_url is None
    with database(db_settings) as url:
        # In a thread: a signal handled by the event loop (a worker asked to stop while it
        # waits for its database) is not held up by a connect that hangs.
        await asyncio.to_thread(_ensure_schema, url, embedded=embedded)
        async with open_pool(
            url,
            min_size=db_settings.pool_min_size,
            max_size=pool_max or db_settings.pool_max_size,
        ) as pool:
            deliverer = Deliverer(pool, provisioning_settings)
            try:
                yield Runtime(
                    url,
                    pool,
                    Journal(pool, journal_settings, actor=actor),
                    deliverer,
                    embedded,
                    sections,
                    Authenticator(pool, access_settings),
                )
            finally:
                await deliverer.close()


def _ensure_schema(url: str, *, embedded: bool) -> None:
    """The embedded database is bossa's own: migrate it. An operator's server: only check."""
    if embedded:
        migrate(url)
        return
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            todo = pending(conn)
    except psycopg.OperationalError as exc:
        # libpq's reason names the host and what failed; the URL is shown masked.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(
            f"cannot connect to {masked_url(url)}: {reason.replace(url, masked_url(url))}",
            field="BOSSA_DATABASE_URL",
        ) from None
    if todo:
        names = ", ".join(m.label for m in todo[:5])
        raise MigrationError(
            f"{len(todo)} migration(s) not applied ({names}); run `bossa db migrate` first"
        )
