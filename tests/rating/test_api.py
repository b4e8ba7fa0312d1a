"""CDRs through the API: rated as a file of the same lines (the same dedupe: the same
records again are a repeat, a key rated before is not charged again), bad input a 422
naming `records.N.field`, a role without `rating.intake` refused, and the suspense gauge
by reason read at scrape time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from bossa.access import Role
from bossa.db import Pool
from bossa.journal import Journal
from bossa.rating import service
from bossa.rating.models import MAX_API_RECORDS
from bossa.runtime import Runtime
from tests.support import api_client

pytestmark = pytest.mark.anyio


@pytest.fixture
async def runtime(journal: Journal, db_url: str, pool: Pool) -> AsyncIterator[Runtime]:
    # `pool` loaded the sample operator and the SOIP tariff (tests/rating/conftest.py).
    runtime = Runtime.around(db_url, journal, embedded=False)
    try:
        yield runtime
    finally:
        await runtime.deliverer.close()


def record(key: str, **overrides: Any) -> dict[str, Any]:
    return {
        "record_key": key,
        "msisdn": "821012340005",
        "destination": "1555",
        "start": "2026-03-02 10:00:00",
        "duration": 60,
        **overrides,
    }


async def test_usage_through_the_api(runtime: Runtime) -> None:
    await service.put_subscription(
        runtime.pool,
        msisdn="821012340005",
        account_id="A-1001",
        product_code="SOIP",
        at=datetime(2026, 1, 1),
    )
    async with api_client(runtime) as http:
        body = {"records": [record("h1"), record("h2", msisdn="821099999999")]}
        first = await http.post("/rating/usage", json=body)
        assert first.status_code == 200, first.text
        got = first.json()
        assert (got["rated"], got["suspended"], got["charge"], got["repeated"]) == (
            1,
            1,
            600,
            False,
        )
        again = await http.post("/rating/usage", json=body)
        assert again.json()["repeated"] is True
        # A key rated before, in another batch: listed, not charged again.
        other = await http.post("/rating/usage", json={"records": [record("h1"), record("h3")]})
        assert (other.json()["rated"], other.json()["charge"]) == (1, 600)
        assert other.json()["errors"] == [
            [2, "h1", "record_key: rated already in an earlier batch"]
        ]
        # Bad input: 422 naming the field.
        for bad, field in [
            ({"records": [record("x", msisdn="12ab")]}, "records.0.msisdn"),
            ({"records": [record("x"), record("y", duration=-1)]}, "records.1.duration"),
            ({"records": [record("x", start="2026-13-02 10:00:00")]}, "records.0.start"),
            ({"records": [record("x", start="2026-03-02T10:00:00+09:00")]}, "records.0.start"),
            ({"records": [record("x"), record("x")]}, "records.1.record_key"),
            ({"records": [record("x", extra=1)]}, "records.0.extra"),
            ({"records": []}, "records"),
            ({"records": [record(f"k{i}") for i in range(MAX_API_RECORDS + 1)]}, "records"),
        ]:
            answer = await http.post("/rating/usage", json=bad)
            assert answer.status_code in (413, 422), (field, answer.text)
            if answer.status_code == 422:
                fields = [p["field"] for p in answer.json().get("problems", [])] + [
                    answer.json().get("field")
                ]
                assert field in fields, (field, answer.json())
        scraped = (await http.get("/metrics")).text
    assert 'bossa_rating_suspended_by_reason{reason="unknown_account"} 1.0' in scraped
    assert 'bossa_rating_suspended_by_reason{reason="no_tariff"} 0.0' in scraped
    async with api_client(runtime, role=Role.READ_ONLY) as http:
        refused = await http.post("/rating/usage", json={"records": [record("z")]})
        assert refused.status_code == 403
