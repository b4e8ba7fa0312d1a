"""The alerts tests' peers: the SMS centre (node-smpp, tests/alerts/smsc) and the core
network (SIPp with the scenario files in tests/alerts/sipp), each in its own process on
free ports, and the alerts daemon in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bossa.alerts import AlertsDaemon, AlertsSettings
from bossa.db import Pool, open_pool
from bossa.journal import Journal, JournalSettings
from tests.support import free_port

HERE = Path(__file__).parent
SMSC_PASSWORD = "smsc-pw"

if shutil.which("node") is None or not (HERE / "smsc" / "node_modules" / "smpp").exists():
    pytest.skip("the test SMSC needs node and `scripts/system-deps`", allow_module_level=True)


@dataclass
class Smsc:
    """The SMS centre in its own process; `kill` and `start` for fault tests."""

    port: int
    control: int
    log: Path
    options: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = {
            "port": self.port,
            "controlPort": self.control,
            "systemId": "bossa",
            "password": SMSC_PASSWORD,
            "log": str(self.log),
            **self.options,
        }
        self.process = subprocess.Popen(
            ["node", str(HERE / "smsc" / "smsc.js"), json.dumps(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.get("/health")
                return
            time.sleep(0.05)
        raise RuntimeError("the test SMSC did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.control}{path}", timeout=5) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.control}{path}",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            return json.loads(r.read())

    def messages(self) -> list[dict[str, Any]]:
        return list(self.get("/messages"))

    async def wait_messages(self, count: int, timeout_s: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = await asyncio.to_thread(self.messages)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.05)


@pytest.fixture
def smsc(tmp_path: Path) -> Iterator[Smsc]:
    server = Smsc(free_port(), free_port(), tmp_path / "smsc.jsonl", {})
    server.start()
    try:
        yield server
    finally:
        server.kill()


def alerts_settings(smsc: Smsc, spool: Path, **overrides: Any) -> AlertsSettings:
    values: dict[str, Any] = {
        "sip_host": "127.0.0.1",
        "sip_port": free_port(),
        "smpp_host": "127.0.0.1",
        "smpp_port": smsc.port,
        "smpp_system_id": "bossa",
        "smpp_password": SecretStr(SMSC_PASSWORD),
        "smpp_binds": 2,
        "smpp_reconnect_max_s": 0.5,
        "window_s": 0,
        "spool_dir": spool,
        "monitor_interval_s": 0.1,
        "registry_refresh_s": 1,
        "status_port": free_port(),
        **overrides,
    }
    return AlertsSettings(**values)


@contextlib.asynccontextmanager
async def daemon_on(url: str, settings: AlertsSettings) -> AsyncIterator[AlertsDaemon]:
    journal_settings = JournalSettings(poll_interval_s=0.2, database_outage_s=3600)
    async with open_pool(url, min_size=1, max_size=6) as pool:
        daemon = AlertsDaemon(url, pool, Journal(pool, journal_settings), settings)
        await daemon.start()
        assert await daemon.esme.wait_bound(10)
        try:
            yield daemon
        finally:
            await daemon.close()


def sipp(
    port: int,
    calls: list[tuple[str, str, str]],
    *,
    scenario: str = "diverted.xml",
    transport: str = "u1",
    rate: int = 50,
    timeout_s: int = 30,
    folder: Path,
) -> subprocess.CompletedProcess[str]:
    """Run SIPp (its own process) for `calls` (caller, callee, diversion reason)."""
    inject = folder / f"calls-{time.monotonic_ns()}.csv"
    inject.write_text("SEQUENTIAL\n" + "".join(f"{a};{b};{r};\n" for a, b, r in calls))
    return subprocess.run(
        [
            "sipp",
            f"127.0.0.1:{port}",
            "-sf",
            str(HERE / "sipp" / scenario),
            "-inf",
            str(inject),
            "-m",
            str(len(calls)),
            "-r",
            str(rate),
            "-t",
            transport,
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-timeout",
            f"{timeout_s}s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(folder / "sipp-errors.log"),
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s + 10,
        cwd=folder,
        check=False,
    )


async def run_sipp(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(sipp, *args, **kwargs)


async def fetch(pool: Pool, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (await conn.execute(sql, params)).fetchall()  # type: ignore[arg-type]


os.environ.setdefault("BOSSA_TEST_ALERTS", "1")
