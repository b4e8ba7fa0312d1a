"""The alerts routes: the HTTP intake (idempotent by reference, bad numbers 422 naming
the field), the trial set changed at run time (M5), subscribers and a callee's history."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bossa.alerts import service
from bossa.alerts.settings import AlertsSettings
from bossa.journal import Journal
from bossa.runtime import Runtime
from tests.support import api_client


@pytest.fixture
async def client(journal: Journal, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime.around(db_url, journal, embedded=False)
    runtime.sections["alerts"] = AlertsSettings(window_s=0)
    try:
        async with api_client(runtime) as http:
            yield http
    finally:
        await runtime.deliverer.close()


async def test_http_intake_trial_set_and_history(
    client: httpx.AsyncClient, journal: Journal
) -> None:
    call = {
        "caller": "+86 139-0000-0004",
        "callee": "8613700000004",
        "reason": "busy",
        "reference": "r-1",
    }
    first = await client.post("/alerts/missed-calls", json=call)
    assert first.status_code == 202, first.text
    assert first.json()["recorded"] is True
    again = await client.post("/alerts/missed-calls", json=call)
    assert again.json()["recorded"] is False

    bad = await client.post(
        "/alerts/missed-calls", json={**call, "callee": "0138", "reference": "r-2"}
    )
    assert bad.status_code == 422
    assert bad.json()["field"] == "callee"
    assert (await client.post("/alerts/missed-calls", json={"caller": "1"})).status_code == 422

    # Not in the trial set yet: nobody is told.
    assert await service.flush_due(journal.pool, journal, AlertsSettings(window_s=0)) == []

    assert (await client.post("/alerts/trial/ranges", json={"prefix": "86137"})).status_code == 200
    shown = await client.put("/alerts/trial/quota", json={"quota": 1})
    assert shown.json()["ranges"] == ["86137"]
    assert shown.json()["quota"] == 1
    assert (await client.put("/alerts/trial/quota", json={"quota": -1})).status_code == 422
    assert (await client.post("/alerts/trial/ranges", json={"prefix": "0"})).status_code == 422

    await client.post("/alerts/missed-calls", json={**call, "reference": "r-3"})
    await client.post(
        "/alerts/missed-calls", json={**call, "callee": "8613700000005", "reference": "r-4"}
    )
    decided = await service.flush_due(journal.pool, journal, AlertsSettings(window_s=0))
    # The quota holds one member: the second callee in the range gets nothing.
    assert [(d.kind, d.callee) for d in decided] == [(3, "8613700000004")]
    assert (await client.get("/alerts/trial")).json()["members"] == 1

    history = (await client.get("/alerts/calls/8613700000004")).json()
    assert len(history["calls"]) == 2
    assert history["notices"][0]["kind"] == 3
    assert history["notices"][0]["calls"] == 1

    assert (await client.delete("/alerts/trial/ranges/86137")).status_code == 200
    assert (await client.delete("/alerts/trial/ranges/86137")).status_code == 404
    registered = await client.put("/alerts/subscribers/+8613800000004", json={"lang": "ko"})
    assert registered.json()["msisdn"] == "8613800000004"
    assert (await client.delete("/alerts/subscribers/8613800000004")).status_code == 204
    assert (await client.delete("/alerts/subscribers/8613800000004")).status_code == 404
