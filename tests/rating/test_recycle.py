"""Suspense recycling, rerating, the pipeline's memory across batches, and billing holds
(S10, S14), end to end on PostgreSQL: a record is charged once whatever path it takes,
and the ledger always holds exactly what rating.rated_usage charges."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg.errors
import pytest

from bossa.db import Pool
from bossa.errors import Conflict
from bossa.rating import service, store
from bossa.rating.models import SuspenseReason
from bossa.rating.service import (
    Pipeline,
    add_tariff,
    billing_completed,
    billing_started,
    put_subscription,
    rate_file,
    recycle,
    recycle_fixed,
    rerate,
    suspense_counts,
)
from tests.rating.conftest import voice_tariff

pytestmark = pytest.mark.anyio

HEADER = "record_key,msisdn,destination,start,duration\n"
NUMBER = "821012340005"


def write(path: Path, *lines: str) -> Path:
    path.write_text(HEADER + "".join(line + "\n" for line in lines), encoding="utf-8")
    return path


async def one(pool: Pool, sql: str, params: dict[str, Any] | None = None) -> Any:
    async with pool.connection() as conn:
        row = await (await conn.execute(sql, params or {})).fetchone()
    assert row is not None
    return next(iter(row.values()))


async def ledger_total(pool: Pool) -> int:
    return int(await one(pool, "select coalesce(sum(charge), 0) from ledger.rated_usage"))


async def rated_total(pool: Pool) -> int:
    return int(await one(pool, "select coalesce(sum(charge), 0) from rating.rated_usage"))


async def subscribe(pool: Pool, product: str = "SOIP", account: str = "A-1001") -> None:
    await put_subscription(
        pool, msisdn=NUMBER, account_id=account, product_code=product, at=datetime(2026, 1, 1)
    )


async def test_unknown_number_is_recycled_once_its_account_is_known(
    pool: Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    path = write(tmp_path / "a.csv", f"u1,{NUMBER},1555,2026-03-02 10:00:00,60")
    report = await rate_file(pool, pipeline, path, actor="test")
    assert report.suspended == 1
    # Nothing fixed yet: the automatic recycling takes nothing, attempts do not grow.
    assert await recycle_fixed(pool, pipeline) == 0
    assert await one(pool, "select attempts from rating.suspense") == 1
    await subscribe(pool)
    assert await recycle_fixed(pool, pipeline) == 1
    assert await suspense_counts(pool) == {}
    assert await rated_total(pool) == await ledger_total(pool) == 600
    # Again: nothing left, nothing charged twice; the same file again is a repeat.
    assert await recycle_fixed(pool, pipeline) == 0
    again = await recycle(pool, pipeline, actor="ops")
    assert (again.taken, again.rated) == (0, 0)
    assert (await rate_file(pool, pipeline, path, actor="test")).repeated
    assert await ledger_total(pool) == 600
    audit = await one(pool, "select count(*) from rating.audit where action = 'recycle'")
    assert audit >= 1


async def test_recycle_by_reason_account_and_batch(
    pool: Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    await put_subscription(
        pool,
        msisdn="821000000001",
        account_id="A-1002",
        product_code="WIBRO",
        at=datetime(2026, 1, 1),
    )
    first = await rate_file(
        pool,
        pipeline,
        write(
            tmp_path / "a.csv",
            "n1,821000000001,1555,2026-03-02 10:00:00,60",  # WIBRO has no tariff
            f"u1,{NUMBER},1555,2026-03-02 10:00:00,60",  # nobody's number
        ),
        actor="test",
    )
    second = await rate_file(
        pool,
        pipeline,
        write(tmp_path / "b.csv", f"u2,{NUMBER},1555,2026-03-02 11:00:00,60"),
        actor="test",
    )
    assert (first.suspended, second.suspended) == (2, 1)
    await subscribe(pool)
    # By file, by batch: only u2; by reason: only u1 of what remains.
    assert (await recycle(pool, pipeline, actor="ops", source="nope.csv")).taken == 0
    by_file = await recycle(pool, pipeline, actor="ops", source="b.csv", limit=1)
    assert (by_file.taken, by_file.rated) == (1, 1)
    by_batch = await recycle(pool, pipeline, actor="ops", batch=second.batch)
    assert by_batch.taken == 0  # u2 was the file's, rated already
    by_account = await recycle(pool, pipeline, actor="ops", account="A-1002")
    # n1 still has no tariff: it stays, one more attempt, same reason.
    assert (by_account.taken, by_account.rated, by_account.suspended) == (1, 0, 1)
    assert await one(pool, "select attempts from rating.suspense where record_key = 'n1'") == 2
    by_reason = await recycle(pool, pipeline, actor="ops", reason=SuspenseReason.UNKNOWN_ACCOUNT)
    assert (by_reason.taken, by_reason.rated) == (1, 1)
    assert await suspense_counts(pool) == {"no_tariff": 1}
    # A tariff for WIBRO fixes the last one: recycled by the automatic run.
    await add_tariff(pool, voice_tariff(product_code="WIBRO"), actor="test")
    assert await recycle_fixed(pool, pipeline) == 1
    assert await suspense_counts(pool) == {}
    assert await rated_total(pool) == await ledger_total(pool) == 1800


async def test_a_suspended_key_rated_by_a_later_file_is_not_charged_again(
    pool: Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    line = f"k1,{NUMBER},1555,2026-03-02 10:00:00,60"
    await rate_file(pool, pipeline, write(tmp_path / "a.csv", line), actor="test")
    await subscribe(pool)
    # The mediation sends the record again in another file: rated, and out of suspense.
    other = write(tmp_path / "b.csv", line, f"k2,{NUMBER},1555,2026-03-02 11:00:00,60")
    report = await rate_file(pool, pipeline, other, actor="test")
    assert report.rated == 2
    assert await suspense_counts(pool) == {}
    assert await recycle_fixed(pool, pipeline) == 0
    assert await rated_total(pool) == await ledger_total(pool) == 1200


async def test_pipeline_memory_is_kept_and_follows_changes(
    pool: Pool, pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[list[str]] = []
    real = store.copy_subscriptions

    async def counting(conn: Any, numbers: Path, out: Path) -> None:
        loads.append(sorted((await asyncio.to_thread(numbers.read_text)).split()))
        await real(conn, numbers, out)

    monkeypatch.setattr(store, "copy_subscriptions", counting)
    await subscribe(pool)
    await rate_file(
        pool,
        pipeline,
        write(tmp_path / "a.csv", f"a1,{NUMBER},1555,2026-03-02 10:00:00,60"),
        actor="test",
    )
    await rate_file(
        pool,
        pipeline,
        write(tmp_path / "b.csv", f"a2,{NUMBER},1555,2026-03-02 11:00:00,60"),
        actor="test",
    )
    # Loaded on first usage only (S10), not again for the second file.
    assert loads == [[NUMBER]]
    # A change through the sync listener's function: the next file loads the number again
    # and rates with the new product (no tariff for WIBRO: suspended as such).
    async with pool.connection() as conn, conn.transaction():
        await service.subscribe(
            conn,
            msisdn=NUMBER,
            account_id="A-1001",
            product_code="WIBRO",
            at=datetime(2026, 3, 2, 12),
        )
    report = await rate_file(
        pool,
        pipeline,
        write(tmp_path / "c.csv", f"a3,{NUMBER},1555,2026-03-02 13:00:00,60"),
        actor="test",
    )
    assert loads == [[NUMBER], [NUMBER]]
    assert report.suspended == 1
    assert await suspense_counts(pool) == {"no_tariff": 1}


async def test_allowance_in_memory_matches_a_fresh_pipeline(pool: Pool, tmp_path: Path) -> None:
    await subscribe(pool)
    kept = Pipeline.open(threads=1)
    other = Pipeline.open(threads=1)
    try:
        # docs' worked example split over two files: k1 uses 90 s of the 120 s allowance.
        first = write(tmp_path / "a.csv", f"k1,{NUMBER},8221234567,2026-03-02 07:59:30,90")
        await rate_file(pool, kept, first, actor="test")
        # Another pipeline rates in between: the kept one sees the counters moved.
        await rate_file(
            pool,
            other,
            write(tmp_path / "b.csv", f"k2,{NUMBER},8221234567,2026-03-03 10:00:00,10"),
            actor="test",
        )
        third = write(tmp_path / "c.csv", f"k3,{NUMBER},8221234567,2026-03-07 10:00:00,100")
        await rate_file(pool, kept, third, actor="test")
    finally:
        kept.close()
        other.close()
    # 90 + 10 used: k3 gets 20 s free, pays 80 s at 20/min = 26.67 -> 27.
    assert await one(pool, "select free from rating.rated_usage where record_key = 'k3'") == 20
    assert await one(pool, "select charge from rating.rated_usage where record_key = 'k3'") == 27
    assert await one(pool, "select seconds from rating.allowance_usage") == 200


async def test_rerate_replaces_a_period_without_charging_twice(
    pool: Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    await subscribe(pool)
    await add_tariff(
        pool, voice_tariff(product_code="WIBRO", allowance_seconds=0, min_charge=0), actor="test"
    )
    lines = [
        f"r1,{NUMBER},8221234567,2026-03-02 10:00:00,60",  # national: 60/min, free
        f"r2,{NUMBER},1555,2026-03-02 11:00:00,60",  # intl 600
        f"r3,{NUMBER},1555,2026-03-03 11:00:00,60",  # the next day: outside the period
    ]
    await rate_file(pool, pipeline, write(tmp_path / "a.csv", *lines), actor="test")
    assert await ledger_total(pool) == 1200
    # The number was on WIBRO since the start of March (a backdated change).
    await put_subscription(
        pool,
        msisdn=NUMBER,
        account_id="A-1001",
        product_code="WIBRO",
        at=datetime(2026, 3, 1),
    )
    report = await rerate(pool, pipeline, start=date(2026, 3, 2), end=date(2026, 3, 3), actor="ops")
    assert (report.records, report.rated, report.suspended) == (2, 2, 0)
    assert (report.old_charge, report.new_charge) == (600, 660)  # r1 now charged 60
    assert await rated_total(pool) == await ledger_total(pool) == 1260
    # Twice: the same charges, the ledger replaced again, not added to.
    again = await rerate(pool, pipeline, start=date(2026, 3, 2), end=date(2026, 3, 3), actor="ops")
    assert (again.old_charge, again.new_charge) == (660, 660)
    assert await rated_total(pool) == await ledger_total(pool) == 1260
    # Another account's usage only: this one's is not touched; a period with no usage
    # rerates nothing and changes nothing.
    other = await rerate(
        pool, pipeline, start=date(2026, 3, 2), end=date(2026, 3, 4), actor="ops", account="A-1002"
    )
    assert (other.records, other.old_charge, other.new_charge) == (0, 0, 0)
    assert await rated_total(pool) == await ledger_total(pool) == 1260
    # r1's 60 s counted once against the month, not once per rating (given back first).
    assert await one(pool, "select seconds from rating.allowance_usage") == 60
    assert await one(pool, "select count(*) from rating.audit where action = 'rerate'") == 3
    # Once billed, the period is not rerated: the bill is issued.
    async with pool.connection() as conn:
        await conn.execute("update ledger.rated_usage set bill_id = 1")
    with pytest.raises(Conflict, match="billed"):
        await rerate(pool, pipeline, start=date(2026, 3, 2), end=date(2026, 3, 3), actor="ops")
    assert await rated_total(pool) == await ledger_total(pool) == 1260


async def test_usage_of_an_account_being_billed_waits_and_is_recycled(
    pool: Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    await subscribe(pool)
    await rate_file(
        pool,
        pipeline,
        write(tmp_path / "a.csv", f"b0,{NUMBER},1555,2026-03-02 09:00:00,60"),
        actor="test",
    )
    async with pool.connection() as conn, conn.transaction():
        await billing_started(conn, ["A-1001"], run="run-1")
    report = await rate_file(
        pool,
        pipeline,
        write(tmp_path / "b.csv", f"b1,{NUMBER},1555,2026-03-02 10:00:00,60"),
        actor="test",
    )
    assert report.suspended == 1
    assert await suspense_counts(pool) == {"billing_in_progress": 1}
    assert await recycle_fixed(pool, pipeline) == 0  # still being billed
    async with pool.connection() as conn, conn.transaction():
        assert await billing_completed(conn, ["A-1001"]) == 1
    assert await recycle_fixed(pool, pipeline) == 1
    assert await suspense_counts(pool) == {}
    assert await rated_total(pool) == await ledger_total(pool) == 1200


async def test_automatic_recycling_looks_only_after_a_change(
    pool: Pool, pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks: list[bool] = []
    real = store.stage_recycle

    async def counting(*args: Any, **kwargs: Any) -> None:
        looks.append(kwargs["fixed"])
        await real(*args, **kwargs)

    monkeypatch.setattr(store, "stage_recycle", counting)
    path = write(tmp_path / "a.csv", f"u1,{NUMBER},1555,2026-03-02 10:00:00,60")
    await rate_file(pool, pipeline, path, actor="test")
    assert await recycle_fixed(pool, pipeline) == 0
    assert await recycle_fixed(pool, pipeline) == 0  # nothing changed: no look
    assert looks == [True]
    assert await recycle_fixed(pool, pipeline, force=True) == 0  # a recycle request
    assert len(looks) == 2
    await subscribe(pool)  # a change: the next call looks, and rates it
    assert await recycle_fixed(pool, pipeline) == 1
    assert len(looks) == 3


async def test_a_rated_record_suspended_again_leaves_suspense_in_its_batch(
    pool: Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    await subscribe(pool)
    first = await rate_file(
        pool,
        pipeline,
        write(tmp_path / "a.csv", f"k1,{NUMBER},1555,2026-03-02 10:00:00,60"),
        actor="test",
    )
    assert first.rated == 1
    # The same record again while its account is billed: suspended, but charged already.
    await service.hold_for_billing(pool, ["A-1001"], started=True)
    again = await rate_file(
        pool,
        pipeline,
        write(
            tmp_path / "b.csv",
            f"k1,{NUMBER},1555,2026-03-02 10:00:00,60",
            f"k2,{NUMBER},1555,2026-03-02 11:00:00,60",
        ),
        actor="test",
    )
    assert again.suspended == 2
    # k1 left suspense in the batch that suspended it; k2 waits for billing to complete.
    assert await suspense_counts(pool) == {"billing_in_progress": 1}
    assert await one(pool, "select record_key from rating.suspense") == "k2"
    assert await ledger_total(pool) == await rated_total(pool) > 0


async def test_an_unknown_account_is_refused_by_the_ledger(pool: Pool) -> None:
    # The foreign key became a check per statement (ledger/0009): still refused, by name.
    async with pool.connection() as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="A-NOPE"):
            await conn.execute(
                "select ledger.add_usage(array['A-1001', 'A-NOPE'], "
                "array[now(), now()], array[1, 2]::bigint[], 'test')"
            )
        await conn.rollback()
        row = await (
            await conn.execute(
                "select ledger.add_usage(array['A-1001'], array[now()], array[3]::bigint[], 't')"
                " as added"
            )
        ).fetchone()
        assert row is not None
        assert row["added"] == 1
        # Moving a row to a missing account is refused too (no bossa code moves one).
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            await conn.execute(
                "update ledger.rated_usage set account_id = 'A-NOPE' where description = 't'"
            )
