"""RecycleRequest (S1, S6, S7) on real PostgreSQL: the listener carries a recycle request
out on its recycle thread, in the transaction that marks the request PROCESSED: the
suspended records whose cause is gone are rated once, the others wait untouched, and a
request whose transaction rolls back recycles nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bossa import rating, sync
from bossa.db import Conn
from bossa.journal import service as journal_ops
from bossa.rating.service import Pipeline
from bossa.runtime import Runtime
from bossa.sync import BusinessEvent, EventState, SyncSettings
from bossa.sync.service import MODULES, ModuleContext, forget_configs, module
from tests.sync.test_events import event_file, lane_events, rows, rt  # noqa: F401
from tests.sync.test_sync import HEADER, runtime  # noqa: F401

pytestmark = pytest.mark.anyio

SETTINGS = SyncSettings()
FIXED = "821077770001"  # gets a subscription before the request: its record rates
UNKNOWN = "821077770002"  # never known: its record stays suspended


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    p = Pipeline.open(threads=1)
    yield p
    p.close()


async def suspend_two(app: Runtime, pipeline: Pipeline, tmp_path: Path) -> None:
    """Two records suspended as unknown_account; then FIXED's cause is gone."""
    path = tmp_path / "cdrs.csv"
    path.write_text(
        HEADER
        + f"r-fixed,{FIXED},8210999999,2026-03-02 10:00:00,60\n"
        + f"r-unknown,{UNKNOWN},8210999999,2026-03-02 10:05:00,60\n"
    )
    report = await rating.rate_file(app.pool, pipeline, path, actor="t")
    assert report.suspended == 2
    await rating.put_subscription(
        app.pool, msisdn=FIXED, account_id="A-1001", product_code="SOIP", at=datetime(2026, 1, 1)
    )


async def suspense(app: Runtime) -> dict[str, int]:
    found = await rows(app.pool, "select record_key, attempts from rating.suspense")
    return {r["record_key"]: int(r["attempts"]) for r in found}


async def rated(app: Runtime) -> list[dict[str, Any]]:
    return await rows(app.pool, "select record_key, batch_id from rating.rated_usage")


async def test_a_recycle_request_recycles_the_fixed_records_once(
    rt: Runtime,  # noqa: F811
    pipeline: Pipeline,
    tmp_path: Path,
) -> None:
    await suspend_two(rt, pipeline, tmp_path)
    await sync.request_recycle(rt.pool, rt.journal, actor="op", reason="account fixed")
    assert await rated(rt) == []  # published, not yet processed: nothing recycled

    stats = await sync.listen(rt.journal, SETTINGS, listen_url=None, once=True)
    assert (stats.acked, stats.parked) == (1, 0)
    done = await rated(rt)
    assert [r["record_key"] for r in done] == ["r-fixed"]
    # The other record's cause is not gone: untouched (its attempts do not grow).
    assert await suspense(rt) == {"r-unknown": 1}
    audit = await rows(rt.pool, "select actor, action, detail from rating.audit")
    assert [(a["actor"], a["action"]) for a in audit] == [("sync:op", "recycle")]
    assert audit[0]["detail"]["rated"] == 1
    ledger_rows = await rows(
        rt.pool, "select sum(charge) as total from ledger.rated_usage where account_id = 'A-1001'"
    )
    charged = await rows(
        rt.pool, "select sum(charge) as total from rating.rated_usage where record_key = 'r-fixed'"
    )
    # Booked in the ledger once: a mobile minute at peak, 120.
    assert ledger_rows == charged == [{"total": 120}]

    # A second request finds nothing more to rate: nothing is charged twice.
    await sync.request_recycle(rt.pool, rt.journal, actor="op")
    await sync.listen(rt.journal, SETTINGS, listen_url=None, once=True)
    assert await rated(rt) == done
    assert await suspense(rt) == {"r-unknown": 1}
    requests = await rows(rt.pool, "select requested_by from sync.recycle_requests")
    assert len(requests) == 2


#: Set by the test: the module after `recycle` refuses the request.
REFUSE: list[bool] = [False]


@module("test_refuse_after_recycle")
async def refuse_after_recycle(conn: Conn, ctx: ModuleContext, event: BusinessEvent) -> None:
    if REFUSE[0]:
        raise RuntimeError("refused after the recycle")


@pytest.fixture
def refusing_file(tmp_path: Path) -> Iterator[SyncSettings]:
    data = sync.service.default_config().model_dump(mode="json")
    data["business_events"]["RecycleRequest"]["modules"] = [
        "recycle",
        "test_refuse_after_recycle",
    ]
    forget_configs()
    yield SyncSettings(events=event_file(tmp_path, data))
    REFUSE[0] = False
    forget_configs()


async def test_a_request_rolled_back_recycles_nothing_until_delivered_again(
    rt: Runtime,  # noqa: F811
    pipeline: Pipeline,
    tmp_path: Path,
    refusing_file: SyncSettings,
) -> None:
    assert "test_refuse_after_recycle" in MODULES
    await suspend_two(rt, pipeline, tmp_path)
    await sync.request_recycle(rt.pool, rt.journal, actor="op", settings=refusing_file)
    REFUSE[0] = True
    stats = await sync.listen(rt.journal, refusing_file, listen_url=None, once=True)
    assert stats.parked == 1
    # The recycle ran in the request's transaction, which rolled back: nothing rated.
    assert await rated(rt) == []
    assert await suspense(rt) == {"r-fixed": 1, "r-unknown": 1}
    report = await sync.report(rt.pool, refusing_file)
    assert report.by_state[EventState.HELD] == 1

    # The operator fixes the cause and delivers it again: recycled once.
    REFUSE[0] = False
    (held,) = [e for e in await lane_events(rt.pool) if e["state"] == "parked"]
    await journal_ops.retry(rt.journal, held["id"], actor="op")
    await sync.listen(rt.journal, refusing_file, listen_url=None, once=True)
    assert [r["record_key"] for r in await rated(rt)] == ["r-fixed"]
    assert await suspense(rt) == {"r-unknown": 1}
