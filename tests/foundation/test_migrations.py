"""Migrations: the steps build exactly the schema files, run once under a lock, and a
changed or unknown migration stops `migrate` instead of drifting silently."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import resources

import psycopg
import pytest

from bossa.db.embedded import _bin
from bossa.db.migrations import MODULES, MigrationError, discover, migrate


def schema_dump(url: str) -> str:
    args = [str(_bin("pg_dump")), "--schema-only", "--no-owner", "--no-privileges", "-d", url]
    for module in MODULES:
        args += ["--schema", module]
    dump = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    # pg_dump 18 against an older server writes each column's pg_attver, a number of the
    # database's own (PostgreSQL 15): not part of the schema.
    dump = re.sub(r"pg_attver=\d+", "pg_attver=N", dump)
    return "\n".join(
        line for line in dump.splitlines() if line and not line.startswith(("--", "\\", "SET "))
    )


def test_migrations_build_the_schema_files(db_url: str, empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        for module in MODULES:
            text = resources.files(f"bossa.{module}").joinpath("sql/schema.sql").read_text()
            conn.execute(text.encode())
    assert schema_dump(empty_db_url) == schema_dump(db_url)


def test_migrate_twice_applies_nothing_new(db_url: str) -> None:
    assert migrate(db_url) == []


def test_changed_migration_is_refused(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update bossa.migrations set checksum = 'abc' where module = 'journal'")
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        migrate(db_url)


def test_unknown_applied_migration_is_refused(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "insert into bossa.migrations (module, version, name, checksum)"
            " values ('journal', 9999, 'future', 'x')"
        )
    with pytest.raises(MigrationError, match="newer version"):
        migrate(db_url)


@pytest.mark.slow
def test_two_migrate_processes_at_once(empty_db_url: str) -> None:
    env = {**os.environ, "BOSSA_DATABASE_URL": empty_db_url}
    command = [sys.executable, "-m", "bossa.cli", "db", "migrate"]
    procs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    applied_counts = sorted(out.count("applying ") for out, _ in outputs)
    assert applied_counts == [0, len(discover())]
    with psycopg.connect(empty_db_url) as conn:
        rows = conn.execute("select module, version from bossa.migrations").fetchall()
    assert len(rows) == len(set(rows)) == len(discover())
