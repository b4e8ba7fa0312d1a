"""The database-up intake path in batches: with a window of 0 a burst is decided in its
intake transaction; a decision that fails on anything but the database leaves the calls
recorded (once) with their windows open for the flusher."""

from __future__ import annotations

from typing import Any

import pytest

from bossa.alerts import service
from bossa.alerts.models import Reason
from bossa.alerts.settings import AlertsSettings
from bossa.db import open_pool
from bossa.journal import Journal
from tests.alerts.conftest import fetch


def _calls(n: int) -> list[Any]:
    return [
        service.missed_call(
            caller=f"+86139000{k % 2:05d}",
            callee="+8613800000009",
            reason=Reason.BUSY,
            via="sip",
            call_ref=f"ref-{k}",
        )
        for k in range(n)
    ]


async def test_a_burst_is_decided_in_its_intake_transaction(db_url: str) -> None:
    settings = AlertsSettings(window_s=0)
    async with open_pool(db_url, max_size=2) as pool:
        await service.register(pool, "8613800000009", "en", actor="test")
        calls = _calls(5)
        ids = await service.record_calls(pool, calls, window_s=0, decide=(Journal(pool), settings))
        assert ids == {c.id for c in calls}
        again = await service.record_calls(
            pool, calls, window_s=0, decide=(Journal(pool), settings)
        )
        assert again == set()  # recorded once
        notices = await fetch(pool, "select calls, kind from alerts.notices order by calls")
        assert [(n["calls"], n["kind"]) for n in notices] == [(2, 2), (3, 2)]
        assert await fetch(pool, "select * from alerts.pending") == []
        linked = await fetch(
            pool, "select count(*) as n from alerts.missed_calls where notice_id is not null"
        )
        assert linked[0]["n"] == 5


async def test_a_failed_decision_leaves_the_calls_recorded(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in deciding")

    monkeypatch.setattr(service, "_decide", broken)
    settings = AlertsSettings(window_s=0)
    async with open_pool(db_url, max_size=2) as pool:
        calls = _calls(3)
        ids = await service.record_calls(pool, calls, window_s=0, decide=(Journal(pool), settings))
        assert ids == {c.id for c in calls}
        rows = await fetch(pool, "select count(*) as n from alerts.missed_calls")
        assert rows[0]["n"] == 3
        pending = await fetch(pool, "select calls from alerts.pending order by calls")
        assert [p["calls"] for p in pending] == [1, 2]  # the flusher decides them
