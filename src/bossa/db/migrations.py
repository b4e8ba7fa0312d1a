"""Versioned SQL migrations, one folder per module, applied in order under an advisory lock.

Each module keeps `sql/migrations/NNNN_name.sql` (the steps) and `sql/schema.sql` (the
whole current schema, for review); a test builds a database each way and compares them.
Applied files are recorded with their SHA-256: a changed file stops `migrate` instead of
leaving the database different from what the code believes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import psycopg

from bossa.errors import UserError

__all__ = ["MODULES", "Migration", "MigrationError", "applied", "discover", "migrate", "pending"]

#: Modules with a schema, in the order their migrations apply (later ones may refer to earlier).
MODULES: tuple[str, ...] = (
    "access",
    "customers",
    "journal",
    "provisioning",
    "ledger",
    "rating",
    "sync",
    "billing",
    "imports",
    "alerts",
    "partners",
)

# Any constant shared by every bossa process; pg_advisory_lock takes a bigint.
_LOCK_ID = int.from_bytes(hashlib.sha256(b"bossa.migrate").digest()[:8], "big", signed=True)
_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

_BOOTSTRAP = """
create schema if not exists bossa;
create table if not exists bossa.migrations (
    module      text        not null,
    version     integer     not null,
    name        text        not null,
    checksum    text        not null,
    applied_at  timestamptz not null default now(),
    applied_by  text        not null default current_user,
    primary key (module, version)
);
"""


class MigrationError(UserError):
    """The database and the code disagree about the schema."""


@dataclass(frozen=True)
class Migration:
    module: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.module}/{self.version:04d}_{self.name}"


def discover() -> list[Migration]:
    found: list[Migration] = []
    for module in MODULES:
        folder = resources.files(f"bossa.{module}").joinpath("sql/migrations")
        for item in sorted(folder.iterdir(), key=lambda entry: entry.name):
            match = _FILE.match(item.name)
            if match is None:
                continue
            found.append(Migration(module, int(match["version"]), match["name"], item.read_text()))
    return found


def applied(conn: psycopg.Connection[tuple[object, ...]]) -> dict[tuple[str, int], str]:
    exists = conn.execute("select to_regclass('bossa.migrations')").fetchone()
    if exists is None or exists[0] is None:
        return {}
    rows = conn.execute("select module, version, checksum from bossa.migrations").fetchall()
    return {(str(module), int(str(version))): str(checksum) for module, version, checksum in rows}


def pending(conn: psycopg.Connection[tuple[object, ...]]) -> list[Migration]:
    done = applied(conn)
    return [m for m in discover() if (m.module, m.version) not in done]


def _check(done: dict[tuple[str, int], str], known: list[Migration]) -> None:
    by_id = {(m.module, m.version): m for m in known}
    for ident, checksum in sorted(done.items()):
        migration = by_id.get(ident)
        if migration is None:
            raise MigrationError(
                f"the database has migration {ident[0]}/{ident[1]:04d} that this bossa does not "
                "know: it was migrated by a newer version; upgrade bossa before running it"
            )
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {migration.label} was changed after it was applied "
                f"(checksum {checksum[:12]} in the database, {migration.checksum[:12]} on disk); "
                "restore the file and add a new migration instead"
            )


def migrate(url: str, *, progress: Callable[[Migration], None] | None = None) -> list[Migration]:
    """Apply every pending migration; safe to run from several processes at once."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute(_BOOTSTRAP)
            known = discover()
            done = applied(conn)
            _check(done, known)
            todo = [m for m in known if (m.module, m.version) not in done]
            for migration in todo:
                if progress:
                    progress(migration)
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "insert into bossa.migrations (module, version, name, checksum)"
                        " values (%s, %s, %s, %s)",
                        (migration.module, migration.version, migration.name, migration.checksum),
                    )
            return todo
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_LOCK_ID,))
