"""`bossa serve` end to end: health, readiness that follows its PostgreSQL, metrics, docs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from bossa.db import EmbeddedPostgres
from bossa.db.migrations import migrate
from tests.support import free_port, own_postgres


@pytest.fixture
def server_pg() -> Iterator[EmbeddedPostgres]:
    with own_postgres() as server:
        migrate(server.url())
        yield server


def wait_for(check: object, timeout: float) -> float:
    """Seconds until check() is true; fails after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"condition not met within {timeout}s")


def status(url: str) -> int:
    try:
        return httpx.get(url, timeout=10).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.fault
def test_readyz_follows_postgres(server_pg: EmbeddedPostgres) -> None:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "BOSSA_DATABASE_URL": server_pg.url(),
        "BOSSA_API_PORT": str(port),
        # Prometheus scrapes without a token on a bind of its own; the API's needs one.
        "BOSSA_API_METRICS_PORT": str(metrics_port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bossa.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: status(f"{base}/healthz") == 200, 30)
        assert status(f"{base}/readyz") == 200
        assert status(f"{base}/metrics") == 401
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert "bossa_access_denied_total" in metrics
        # The table gauges are read for it in the background, not only at scrape time.
        assert "bossa_journal_entries" in metrics or "bossa_journal_finished" in metrics
        assert status(f"{base}/docs") == 200
        assert status(f"{base}/openapi.json") == 200

        server_pg.stop()
        took = wait_for(lambda: status(f"{base}/readyz") == 503, 10)
        assert took < 5.0
        assert status(f"{base}/healthz") == 200  # the process itself is fine

        server_pg.start()
        wait_for(lambda: status(f"{base}/readyz") == 200, 15)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    assert "Traceback" not in stderr
