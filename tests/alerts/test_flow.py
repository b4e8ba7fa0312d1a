"""The three message kinds and the uplink, end to end: SIPp sends diverted INVITEs to the
alerts daemon, which records them in PostgreSQL and submits SMS over SMPP to the test
SMSC (node-smpp), which answers with ids and receipts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bossa.alerts import service
from tests.alerts.conftest import Smsc, alerts_settings, daemon_on, fetch, run_sipp

pytestmark = pytest.mark.slow

CALLER = "8613900000001"
REGISTERED = "8613800000001"
TRIAL = "8613700000001"
STRANGER = "8613600000001"


async def _wait(predicate, timeout_s: float = 10) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout_s / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_three_kinds_and_the_uplink(db_url: str, smsc: Smsc, tmp_path: Path) -> None:
    settings = alerts_settings(smsc, tmp_path / "spool", window_s=1.0)
    async with daemon_on(db_url, settings) as daemon:
        await service.register(daemon.pool, REGISTERED, "zh", actor="test")
        await service.add_trial_range(daemon.pool, "86137", actor="test")
        await service.set_trial_quota(daemon.pool, 10, actor="test")

        calls = [
            (CALLER, REGISTERED, "user-busy"),
            (CALLER, REGISTERED, "no-answer"),
            (CALLER, TRIAL, "unavailable"),
            (CALLER, STRANGER, "user-busy"),
        ]
        result = await run_sipp(settings.sip_port, calls, folder=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

        sent = await smsc.wait_messages(2)
        await asyncio.sleep(1.5)  # a third would come now if windows were not honoured
        sent = smsc.messages()
        by_to = {m["destination"]: m for m in sent}
        assert sorted(by_to) == [TRIAL, REGISTERED]  # the stranger gets nothing
        assert len(sent) == 2  # two calls from one caller in the window: one SMS

        registered = by_to[REGISTERED]
        assert registered["data_coding"] == 8  # Chinese: UCS-2
        assert f"+{CALLER}" in registered["text"]
        assert "2次" in registered["text"]

        trial = by_to[TRIAL]
        assert CALLER not in trial["text"]  # message 3 withholds the caller
        code = next(w for w in trial["text"].split() if w.isdigit() and len(w) == 6)

        rows = await fetch(daemon.pool, "select callee, notice_id from alerts.missed_calls")
        assert len(rows) == 4
        assert all(r["notice_id"] for r in rows if r["callee"] != STRANGER)
        notices = await fetch(daemon.pool, "select kind, callee, calls from alerts.notices")
        assert {(n["kind"], n["callee"], n["calls"]) for n in notices} == {
            (2, REGISTERED, 2),
            (3, TRIAL, 1),
        }

        async def delivered() -> bool:
            rows = await fetch(
                daemon.pool,
                "select count(*) as n from alerts.notices where delivered_at is not null",
            )
            return rows[0]["n"] == 2

        await _wait(delivered)

        # M4: a wrong code, an uplink from a number that got no message 3, then the code.
        await asyncio.to_thread(smsc.post, "/mo", {"from": TRIAL, "to": "10086", "text": "000000"})
        await asyncio.to_thread(smsc.post, "/mo", {"from": STRANGER, "to": "10086", "text": code})
        await asyncio.to_thread(
            smsc.post, "/mo", {"from": TRIAL, "to": "10086", "text": f"WHO {code}"}
        )
        sent = await smsc.wait_messages(3)
        assert len(sent) == 3
        assert sent[2]["destination"] == TRIAL
        assert f"+{CALLER}" in sent[2]["text"]
        await asyncio.sleep(0.3)
        assert len(smsc.messages()) == 3  # the stranger's uplink sent nothing
        used = await fetch(daemon.pool, "select used_at, attempts from alerts.offers")
        assert used[0]["used_at"] is not None
        assert used[0]["attempts"] == 1
