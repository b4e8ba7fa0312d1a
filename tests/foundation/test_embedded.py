"""The embedded PostgreSQL: started on demand, shared by processes, stopped by the last
one out unless an operator pinned it; and the demo tour that runs on it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bossa.db import EmbeddedPostgres


def bossa(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BOSSA_DATABASE_URL"}
    env["BOSSA_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "bossa.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    """A data directory, its cluster deleted afterwards: run as root, pytest's private
    tmp_path puts the cluster under /var/lib/bossa/clusters, which pytest never cleans."""
    folder = tmp_path / "data"
    yield folder
    EmbeddedPostgres(folder).destroy()


@pytest.mark.slow
def test_db_commands_and_holders(data: Path) -> None:
    assert "stopped" in bossa(data, "db", "status").stdout
    started = bossa(data, "db", "start")
    assert started.returncode == 0, started.stderr
    status = bossa(data, "db", "status").stdout
    assert "running" in status
    assert "pinned by `bossa db start`: True" in status
    url = bossa(data, "db", "url").stdout.strip()
    with psycopg.connect(url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert bossa(data, "db", "stop").returncode == 0
    assert "stopped" in bossa(data, "db", "status").stdout

    server = EmbeddedPostgres(data)
    with server.held() as held_url:
        assert server.status().holders == 1
        with psycopg.connect(held_url) as conn:
            assert conn.execute("select current_database()").fetchone() == ("bossa",)
    assert not server.status().running  # the last holder out stops it


@pytest.mark.slow
def test_demo_tour(data: Path) -> None:
    result = bossa(data, "demo")
    assert result.returncode == 0, result.stderr
    for chapter in ("1. The database", "2. The schema", "3. A sample operator", "4. The journal"):
        assert chapter in result.stdout
    assert "SA-5003 4202 change" in result.stdout
    assert "tour finished" in result.stdout
    assert "Traceback" not in result.stderr
    again = bossa(data, "demo")  # idempotent: the same story twice
    assert again.returncode == 0, again.stderr
    assert not EmbeddedPostgres(data).status().running


@pytest.mark.slow
def test_durable_wal_settings_at_initdb_and_for_older_clusters(data: Path) -> None:
    def settings(url: str) -> dict[str, str]:
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "select name, current_setting(name) from pg_settings where name in "
                "('wal_buffers', 'max_wal_size', 'checkpoint_timeout', 'fsync', "
                "'synchronous_commit', 'full_page_writes')"
            ).fetchall()
        return {str(name): str(value) for name, value in rows}

    server = EmbeddedPostgres(data)
    with server.held() as url:
        made = settings(url)
        # A cluster made by an older bossa (no WAL settings), with an operator's own
        # max_wal_size: its next start adds the others and keeps the operator's.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("alter system reset all")
            conn.execute("alter system set max_wal_size = '2GB'")
    assert made["wal_buffers"] == "64MB"
    assert made["max_wal_size"] == "4GB"
    assert made["checkpoint_timeout"] == "15min"
    assert {made["fsync"], made["synchronous_commit"], made["full_page_writes"]} == {"on"}
    with server.held() as url:
        again = settings(url)
    assert again["wal_buffers"] == "64MB"
    assert again["checkpoint_timeout"] == "15min"
    assert again["max_wal_size"] == "2GB"
