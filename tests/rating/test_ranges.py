"""A batch rated in ranges of accounts (the first range's rows COPYed while the next
are rated) books exactly what one statement would: every record once, the allowance per
account across the whole batch, the ledger equal to rated usage; a record key rated
before is refused in every range; a range that fails commits nothing."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bossa.db import Pool
from bossa.rating import service
from bossa.rating.engine import RatingEngine
from bossa.rating.service import Pipeline, put_subscription, rate_file
from tests.rating.conftest import voice_tariff
from tests.rating.reference import Cdr, Rated, Subscription, Suspended, rate

pytestmark = pytest.mark.anyio

HEADER = "record_key,msisdn,destination,start,duration\n"
ACCOUNTS = ["A-1001", "A-1002", "A-1003", "A-1004"]
NUMBERS = {f"8210123400{i}": account for i, account in enumerate(ACCOUNTS)}
UNKNOWN = "821099999999"


def write(path: Path, lines: list[str]) -> Path:
    path.write_text(HEADER + "".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def calls(prefix: str, count: int) -> list[str]:
    """Calls of every number (and an unknown one) in turn: national ones that use the
    allowance, mobile ones that do not, some across the 08:00 band change."""
    numbers = [*NUMBERS, UNKNOWN]
    out = []
    for i in range(count):
        number = numbers[i % len(numbers)]
        destination = "8221234567" if i % 3 else "8210999"
        start = datetime(2026, 3, 2, 7, 58) if i % 4 == 0 else datetime(2026, 3, 2, 10 + i % 9)
        out.append(f"{prefix}{i},{number},{destination},{start:%Y-%m-%d %H:%M:%S},{30 + i % 70}")
    return out


async def rows(pool: Pool, sql: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (await conn.execute(sql)).fetchall()


@pytest.fixture
async def numbers(pool: Pool) -> None:
    for number, account in NUMBERS.items():
        await put_subscription(
            pool, msisdn=number, account_id=account, product_code="SOIP", at=datetime(2026, 1, 1)
        )


@pytest.fixture
def ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    # A range per few records: every batch here is rated in several.
    monkeypatch.setattr(service, "_PART_RECORDS", 5)


@pytest.mark.usefixtures("numbers", "ranges")
async def test_ranges_charge_as_one_statement_and_never_twice(
    pool: Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    lines = calls("k", 40)
    report = await rate_file(pool, pipeline, write(tmp_path / "a.csv", lines), actor="test")
    assert pipeline.engine.parts > 2
    cdrs = [
        Cdr(k, n, d, datetime.fromisoformat(s), int(t))
        for k, n, d, s, t in (line.split(",") for line in lines)
    ]
    subs = [Subscription(n, a, "SOIP", datetime(2026, 1, 1), None) for n, a in NUMBERS.items()]
    expected = {r.record_key: r for r in rate(cdrs, subs, [voice_tariff()])}
    rated = {r["record_key"]: r for r in await rows(pool, "select * from rating.rated_usage")}
    assert set(rated) == {k for k, r in expected.items() if isinstance(r, Rated)}
    for key, row in rated.items():
        want = expected[key]
        assert isinstance(want, Rated)
        assert (row["account_id"], row["free"], row["charge"]) == (
            want.account_id,
            want.free,
            want.charge,
        ), key
    suspended = {r["record_key"] for r in await rows(pool, "select * from rating.suspense")}
    assert suspended == {k for k, r in expected.items() if isinstance(r, Suspended)}
    assert (report.rated, report.suspended) == (len(rated), len(suspended))
    # Every account's allowance used across its calls in all ranges, once.
    used = await rows(pool, "select account_id, seconds from rating.allowance_usage")
    assert {r["account_id"]: r["seconds"] for r in used} == {
        a: sum(
            r.billed
            for r in expected.values()
            if isinstance(r, Rated) and r.account_id == a and r.zone == "national"
        )
        for a in ACCOUNTS
    }
    # A second file with records of the first among new ones: charged once.
    again = calls("k", 6) + calls("m", 20)
    errors = tmp_path / "b.errors.csv"
    second = await rate_file(
        pool, pipeline, write(tmp_path / "b.csv", again), actor="test", errors_to=errors
    )
    already = [k for k in (line.split(",")[0] for line in calls("k", 6)) if k in rated]
    assert second.malformed == len(already) > 0
    assert errors.read_text().count("rated already") == len(already)
    totals = await rows(
        pool,
        "select (select sum(charge) from rating.rated_usage) as rated, "
        "(select sum(charge) from ledger.rated_usage) as ledger, "
        "(select count(*) from rating.rated_usage) as records",
    )
    assert totals[0]["rated"] == totals[0]["ledger"] == report.charge + second.charge
    assert totals[0]["records"] == report.rated + second.rated


@pytest.mark.usefixtures("numbers", "ranges")
async def test_a_range_that_fails_commits_nothing(
    pool: Pool, pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "a.csv", calls("k", 40))
    rate_part = RatingEngine.rate_part

    def failing(engine: RatingEngine, part: int) -> None:
        if part == 2:
            raise RuntimeError("range 2 fails")
        rate_part(engine, part)

    monkeypatch.setattr(RatingEngine, "rate_part", failing)
    with pytest.raises(RuntimeError):
        await rate_file(pool, pipeline, path, actor="test")
    for table in (
        "rating.batches",
        "rating.rated_usage",
        "rating.suspense",
        "rating.allowance_usage",
        "ledger.rated_usage",
    ):
        assert await rows(pool, f"select 1 from {table}") == [], table  # noqa: S608
    # The same pipeline rates the file whole once the fault is gone.
    monkeypatch.setattr(RatingEngine, "rate_part", rate_part)
    report = await rate_file(pool, pipeline, path, actor="test")
    assert report.rated + report.suspended == 40
    assert report.rated == len(await rows(pool, "select 1 from rating.rated_usage"))
