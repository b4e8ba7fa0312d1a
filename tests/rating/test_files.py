"""Rating CDR files end to end on PostgreSQL: charges as the reference computes them,
bad lines to the error file with line and reason, the same file rated once, the same
record never charged twice, unknown numbers to suspense and out of it when recycled."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from bossa.db import Pool
from bossa.rating.models import SuspenseReason
from bossa.rating.service import Pipeline, put_subscription, rate_file, suspended, suspense_counts
from tests.rating.conftest import voice_tariff
from tests.rating.reference import Cdr, Rated, Subscription, rate

pytestmark = pytest.mark.anyio

HEADER = "record_key,msisdn,destination,start,duration\n"


def write(path: Path, *lines: str) -> Path:
    path.write_text(HEADER + "".join(line + "\n" for line in lines), encoding="utf-8")
    return path


async def test_a_file_is_rated_as_the_reference_rates_it(
    pool: Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    await put_subscription(
        pool,
        msisdn="821012340005",
        account_id="A-1001",
        product_code="SOIP",
        at=datetime(2026, 1, 1),
    )
    lines = [
        "k1,821012340005,8221234567,2026-03-02 07:59:30,90",  # off-peak into peak, allowance
        "k2,821012340005,8210999,2026-03-02 12:00:00,61",  # mobile, not included
        "k3,821012340005,8221234567,2026-03-07 10:00:00,100",  # weekend, allowance runs out
        "k4,821012340005,15551234,2026-03-02 21:00:00,0",  # zero seconds: nothing at all
    ]
    report = await rate_file(pool, pipeline, write(tmp_path / "a.csv", *lines), actor="test")
    assert (report.rated, report.suspended, report.malformed) == (4, 0, 0)
    cdrs = [
        Cdr(k, n, d, datetime.fromisoformat(s), int(t))
        for k, n, d, s, t in (line.split(",") for line in lines)
    ]
    expected = rate(
        cdrs,
        [Subscription("821012340005", "A-1001", "SOIP", datetime(2026, 1, 1), None)],
        [voice_tariff()],
    )
    assert all(isinstance(r, Rated) for r in expected)
    assert report.charge == sum(r.charge for r in expected if isinstance(r, Rated))
    assert report.charge > 0
    # The ledger books it for the bill run, traceable to the batch.
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "select sum(charge) as charge, min(reference) as reference "
                "from ledger.usage_lines where account_id = 'A-1001'"
            )
        ).fetchone()
    assert row == {"charge": report.charge, "reference": f"rating-batch:{report.batch}"}
    # docs/sync-and-rating.md's worked example: k1 all free, k3 gets the last 30 s free.
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "select record_key, free, charge from rating.rated_usage "
                "where record_key in ('k1', 'k3') order by record_key"
            )
        ).fetchall()
    assert rows == [
        {"record_key": "k1", "free": 90, "charge": 0},
        {"record_key": "k3", "free": 30, "charge": 23},
    ]


async def test_bad_lines_go_to_the_error_file_and_the_rest_is_rated(
    pool: Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    await put_subscription(
        pool,
        msisdn="821012340005",
        account_id="A-1001",
        product_code="SOIP",
        at=datetime(2026, 1, 1),
    )
    path = write(
        tmp_path / "b.csv",
        "g1,821012340005,8221234567,2026-03-02 10:00:00,30",
        "b1,821012340005,8221234567,2026-13-02 10:00:00,30",  # no such month
        "b2,821012340005,8221234567,2026-03-02 10:00:00,-5",  # negative duration
        "b3,821012340005,8221234567,2026-03-02 10:00:00",  # a column missing
        "g1,821012340005,8221234567,2026-03-02 10:00:00,30",  # a duplicate record key
        "u1,999,8221234567,2026-03-02 10:00:00,30",  # nobody's number
        "g2,821012340005,8221234567,2026-03-02 11:00:00,30",
    )
    errors = tmp_path / "b.errors.csv"
    report = await rate_file(pool, pipeline, path, actor="test", errors_to=errors)
    assert (report.rated, report.suspended, report.malformed) == (2, 1, 4)
    text = errors.read_text()
    lines = {int(line.split(",")[0]): line for line in text.splitlines()[1:]}
    assert set(lines) == {3, 4, 5, 6}
    assert "start" in lines[3]
    assert "duration" in lines[4]
    assert "duplicate" in lines[6]
    assert await suspense_counts(pool) == {SuspenseReason.UNKNOWN_ACCOUNT.value: 1}


async def test_the_same_file_twice_is_rated_once_and_a_record_never_twice(
    pool: Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    await put_subscription(
        pool,
        msisdn="821012340005",
        account_id="A-1001",
        product_code="SOIP",
        at=datetime(2026, 1, 1),
    )
    line = "r1,821012340005,1555,2026-03-02 10:00:00,60"
    first = await rate_file(pool, pipeline, write(tmp_path / "c.csv", line), actor="test")
    again = await rate_file(pool, pipeline, write(tmp_path / "d.csv", line), actor="test")
    assert first.charge == 600
    assert not first.repeated
    assert again.repeated
    assert again.batch == first.batch
    # The same record in another file: not charged again, reported with its line.
    other = write(tmp_path / "e.csv", "r2,821012340005,1555,2026-03-02 11:00:00,60", line)
    errors = tmp_path / "e.errors.csv"
    third = await rate_file(pool, pipeline, other, actor="test", errors_to=errors)
    assert (third.rated, third.malformed, third.charge) == (1, 1, 600)
    assert "3,r1,record_key: rated already" in errors.read_text()


async def test_unknown_numbers_wait_in_suspense(
    pool: Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    path = write(tmp_path / "f.csv", "s1,821099990000,8221234567,2026-03-02 10:00:00,30")
    report = await rate_file(pool, pipeline, path, actor="test")
    assert report.suspended == 1
    [record] = await suspended(pool)
    assert record.record_key == "s1"
    assert record.reason is SuspenseReason.UNKNOWN_ACCOUNT
