"""M1 and M2 with real faults: the test's own PostgreSQL is stopped while SIPp sends
diverted calls, bossa's alerts process (`bossa alerts serve`, its own process) is killed
with SIGKILL during the outage and started again, then PostgreSQL comes back. Every
registered callee got message 1 during the outage, once; afterwards every missed call is
in the database exactly once, linked to the message that told it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bossa.alerts import service
from bossa.db import open_pool
from bossa.db.migrations import migrate
from tests.alerts.conftest import SMSC_PASSWORD, Smsc, fetch, run_sipp
from tests.support import free_port, own_postgres

pytestmark = [pytest.mark.slow, pytest.mark.fault]

REGISTERED = "8613800000002"
UNREGISTERED = "8613700000002"


def _readyz(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return dict(json.loads(r.read()))
    except OSError:
        return None


async def _until(predicate: Any, timeout_s: float = 15) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await asyncio.to_thread(predicate):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def _serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = Path(env["BOSSA_ALERTS_SPOOL_DIR"]).parent / "alerts.log"
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from bossa.cli import main; main()", "alerts", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_outage_kill_and_replay(smsc: Smsc, tmp_path: Path) -> None:
    with own_postgres(durable=True) as server:
        url = server.url()
        migrate(url)
        status, sip = free_port(), free_port()
        env = {
            **os.environ,
            "BOSSA_DATABASE_URL": url,
            "BOSSA_ALERTS_SIP_PORT": str(sip),
            "BOSSA_ALERTS_SMPP_PORT": str(smsc.port),
            "BOSSA_ALERTS_SMPP_PASSWORD": SMSC_PASSWORD,
            "BOSSA_ALERTS_SMPP_RECONNECT_MAX_S": "0.5",
            "BOSSA_ALERTS_WINDOW_S": "0",
            "BOSSA_ALERTS_SPOOL_DIR": str(tmp_path / "spool"),
            "BOSSA_ALERTS_STATUS_PORT": str(status),
            "BOSSA_ALERTS_REGISTRY_REFRESH_S": "1",
            "BOSSA_ALERTS_MONITOR_INTERVAL_S": "0.1",
        }
        async with open_pool(url, min_size=1, max_size=2) as pool:
            await service.register(pool, REGISTERED, "ko", actor="test")
        alerts = _serve(env)
        try:
            # Start-up is mostly imports: generous, for a loaded machine.
            await _until(lambda: (_readyz(status) or {}).get("database") == "up", 90)
            await _until(lambda: (tmp_path / "spool" / "registry.json").exists())

            server.stop()
            switched = await _until(lambda: (_readyz(status) or {}).get("database") == "down")
            assert switched < 1.5  # M1: within a second (plus this test's polling)

            first = [(f"861390000{n:04d}", REGISTERED, "user-busy") for n in range(5)]
            first.append(("8613900009999", UNREGISTERED, "no-answer"))
            result = await run_sipp(sip, first, folder=tmp_path)
            assert result.returncode == 0, result.stdout[-2000:]
            sent = await smsc.wait_messages(5)

            alerts.send_signal(signal.SIGKILL)
            alerts.wait(5)
            alerts = _serve(env)
            await _until(lambda: (_readyz(status) or {}).get("status") == "ready", 90)
            assert _readyz(status)["database"] == "down"  # type: ignore[index]

            later = [(f"861390001{n:04d}", REGISTERED, "no-answer") for n in range(3)]
            result = await run_sipp(sip, later, folder=tmp_path)
            assert result.returncode == 0, result.stdout[-2000:]
            sent = await smsc.wait_messages(8)
            await asyncio.sleep(0.5)
            sent = smsc.messages()
            assert len(sent) == 8  # message 1 per call to the registered callee, none twice
            assert {m["destination"] for m in sent} == {REGISTERED}
            assert all("부재중" in m["text"] for m in sent)  # Korean, from the local copy

            server.start()
            await _until(lambda: (_readyz(status) or {}).get("database") == "up", 5)

            async with open_pool(url, min_size=1, max_size=2) as pool:

                async def replayed() -> bool:
                    rows = await fetch(pool, "select count(*) as n from alerts.missed_calls")
                    return bool(rows[0]["n"] == 9)

                for _ in range(200):
                    if await replayed():
                        break
                    await asyncio.sleep(0.05)
                calls = await fetch(
                    pool, "select callee, spooled, notice_id from alerts.missed_calls"
                )
                assert len(calls) == 9  # 8 + 1, each once
                assert all(c["spooled"] for c in calls)
                told = [c for c in calls if c["callee"] == REGISTERED]
                assert all(c["notice_id"] for c in told)
                notices = await fetch(pool, "select kind, callee from alerts.notices")
                assert [n["kind"] for n in notices] == [1] * 8
            assert not list((tmp_path / "spool").glob("*.sealed"))
            assert (tmp_path / "spool" / "spool.jsonl").stat().st_size == 0
            assert len(smsc.messages()) == 8  # the replay sent nothing again
        finally:
            alerts.send_signal(signal.SIGTERM)
            try:
                alerts.wait(10)
            except subprocess.TimeoutExpired:
                alerts.kill()
                alerts.wait()  # reaped: a child left running fails the test as unraisable
