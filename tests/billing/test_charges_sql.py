"""The bill run's charges in SQL (billing.period_charges, billing.bill_chunk) agree with
the rules' reference in Python (bossa.billing.models.charges), and a run bills them: a
contract started mid-month is billed for its days, a price change from a date bills the
old price before it and the new one after, a quarterly product its quarter, a one-off
fee once, a contract that ended its days."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from datetime import date, timedelta

import psycopg
import pytest

from bossa.billing import bill, settle
from bossa.billing.models import ChargeKind, PriceVersion, ProductPeriod, charges, prorate
from bossa.journal import Journal
from tests.billing.conftest import month, open_run

LAST = month(1)
_SA = itertools.count(1)  # a period a run may bill: begun, ended within the look-back


def seed_products(conn: psycopg.Connection[dict[str, object]], versions: list[tuple]) -> None:
    """versions: (product, kind, period, amount, valid_from, valid_to)."""
    conn.execute(
        "insert into customers.products (code, name)"
        " select distinct p, p from unnest(%s::text[]) p",
        ([v[0] for v in versions],),
    )
    for product, kind, period, amount, valid_from, valid_to in versions:
        conn.execute(
            "insert into customers.product_prices"
            " (product_code, kind, period, amount, currency, valid_from, valid_to)"
            " values (%s, %s, %s, %s, 'KRW', %s, %s)",
            (product, kind, period, amount, valid_from, valid_to),
        )


def seed_contract(
    conn: psycopg.Connection[dict[str, object]],
    n: int,
    product: str,
    start: date,
    end: date | None = None,
) -> None:
    conn.execute(
        "insert into customers.customers (id, name) values (%s, %s) on conflict do nothing",
        (f"C-{n}", f"Customer {n}"),
    )
    conn.execute(
        "insert into ledger.accounts (id, customer_id, currency, created_by)"
        " values (%s, %s, 'KRW', 't') on conflict do nothing",
        (f"A-{n}", f"C-{n}"),
    )
    conn.execute(
        "insert into customers.contracts"
        " (sa_id, customer_id, account_id, product_code, start_date, end_date)"
        " values (%s, %s, %s, %s, %s, %s)",
        (f"SA-{n}-{next(_SA)}", f"C-{n}", f"A-{n}", product, start, end),
    )


async def recurring_of(journal: Journal, run: int) -> dict[str, int]:
    async with journal.pool.connection() as conn:
        rows = await (
            await conn.execute(
                "select account_id, recurring from ledger.issued_bills where bill_run_id = %s",
                (run,),
            )
        ).fetchall()
    return {r["account_id"]: int(r["recurring"]) for r in rows}


async def test_a_run_bills_prorated_days_price_changes_periods_and_one_off_fees(
    journal: Journal, db_url: str
) -> None:
    first, last = LAST
    days = (last - first).days + 1
    change = first + timedelta(days=10)
    quarter_start = date(first.year, (first.month - 1) // 3 * 3 + 1, 1)
    with psycopg.connect(db_url) as conn:
        seed_products(
            conn,
            [
                ("MONTHLY", "recurring", "monthly", 30_000, date(1900, 1, 1), None),
                ("CHANGED", "recurring", "monthly", 30_000, date(1900, 1, 1), change),
                ("CHANGED", "recurring", "monthly", 45_000, change, None),
                ("QUARTER", "recurring", "quarterly", 90_000, date(1900, 1, 1), None),
                ("FEE", "recurring", "monthly", 10_000, date(1900, 1, 1), None),
                ("FEE", "one_off", None, 50_000, date(1900, 1, 1), None),
            ],
        )
        seed_contract(conn, 1, "MONTHLY", first + timedelta(days=14))  # mid-month start
        seed_contract(conn, 2, "CHANGED", date(2020, 1, 1))  # a price change in the period
        seed_contract(conn, 3, "MONTHLY", date(2020, 1, 1), first + timedelta(days=5))  # ended
        seed_contract(conn, 4, "MONTHLY", last + timedelta(days=1))  # starts after the period
        seed_contract(conn, 5, "QUARTER", date(2020, 1, 1))
        seed_contract(conn, 6, "FEE", first + timedelta(days=3))  # new: the one-off fee
        seed_contract(conn, 7, "FEE", date(2020, 1, 1))  # old: no fee
        conn.execute(
            "insert into ledger.rated_usage (account_id, used_at, charge)"
            " values ('A-1', %s, 700), ('A-1', %s, 300)",
            (first, last + timedelta(days=5)),  # the second: after the period, billed later
        )
    run = await open_run(journal.pool, LAST)
    assert await bill(journal.pool, run, chunk=3, workers=2) == 7
    await settle(journal.pool, run)
    got = await recurring_of(journal, run)
    assert got == {
        "A-1": prorate(30_000, days - 14, days),  # its days only
        "A-2": prorate(30_000, 10, days) + prorate(45_000, days - 10, days),  # old, then new
        "A-3": prorate(30_000, 5, days),  # up to its end (excluded)
        "A-4": 0,  # never for a period before it began
        "A-5": 90_000 if quarter_start == first else 0,  # the quarter, in its first month
        "A-6": prorate(10_000, days - 3, days) + 50_000,  # the one-off fee once
        "A-7": 10_000,
    }
    async with journal.pool.connection() as conn:
        usage = await (
            await conn.execute(
                "select usage from ledger.issued_bills"
                " where bill_run_id = %s and account_id = 'A-1'",
                (run,),
            )
        ).fetchone()
    assert usage == {"usage": 700}
    # The next period does not bill the one-off fee again, nor the days billed already.
    following = (
        last + timedelta(days=1),
        (last + timedelta(days=40)).replace(day=1) - timedelta(days=1),
    )
    if following[0] <= date.today():
        run2 = await open_run(journal.pool, following)
        await bill(journal.pool, run2)
        nxt = await recurring_of(journal, run2)
        assert nxt["A-6"] == 10_000
        assert nxt["A-3"] == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_sql_charges_equal_the_python_reference(
    journal: Journal, db_url: str, seed: int
) -> None:
    """Random products (monthly, quarterly, yearly; price changes; one-off fees) and
    contracts (random start and end dates, terminated ones): for several bill periods,
    billing.period_charges equals the sum of the reference's charges per account."""
    rng = random.Random(seed)
    versions: dict[str, list[PriceVersion]] = {}
    rows = []
    for p in range(12):
        code = f"P{p}"
        period = rng.choice(list(ProductPeriod))
        cuts = sorted(
            {
                date(2023, 1, 1) + timedelta(days=rng.randint(0, 1000))
                for _ in range(rng.randint(0, 3))
            }
        )
        bounds = [date(1900, 1, 1), *cuts]
        versions[code] = []
        for i, low in enumerate(bounds):
            high = bounds[i + 1] if i + 1 < len(bounds) else None
            amount = rng.randint(0, 10**7)
            versions[code].append(PriceVersion(ChargeKind.RECURRING, amount, low, high, period))
            rows.append((code, "recurring", period.value, amount, low, high))
        if rng.random() < 0.5:
            fee = rng.randint(0, 10**5)
            versions[code].append(PriceVersion(ChargeKind.ONE_OFF, fee, date(1900, 1, 1)))
            rows.append((code, "one_off", None, fee, date(1900, 1, 1), None))
    contracts = []
    with psycopg.connect(db_url) as conn:
        seed_products(conn, rows)
        for n in range(60):
            for _ in range(rng.randint(0, 3)):
                code = rng.choice(list(versions))
                start = date(2023, 1, 1) + timedelta(days=rng.randint(0, 1000))
                end = start + timedelta(days=rng.randint(0, 500)) if rng.random() < 0.4 else None
                seed_contract(conn, n, code, start, end)
                contracts.append((f"A-{n}", code, start, end))
        accounts = [f"A-{n}" for n in range(60)]
        charged = 0
        for _ in range(8):
            start = date(2023, 1, 1) + timedelta(days=rng.randint(0, 1100))
            end = start + timedelta(days=rng.randint(0, 365))
            expected: dict[str, int] = defaultdict(int)
            for account, code, c_start, c_end in contracts:
                found = charges(
                    start=c_start, end=c_end, prices=versions[code], bill_start=start, bill_end=end
                )
                expected[account] += sum(c.amount for c in found)
            got = {
                r[0]: int(r[1])
                for r in conn.execute(
                    "select account_id, charges from billing.period_charges(%s, %s, %s)",
                    (accounts, start, end),
                ).fetchall()
            }
            assert got == {a: expected.get(a, 0) for a in accounts}, (start, end)
            charged += sum(1 for v in got.values() if v)
    assert charged > 20  # the comparison is not between empty bills
