"""Properties of the ledger and of money.

Random sequences of deposits, arrears payments, usage and bill runs (start, bill,
settle) with payments between their steps, over a few accounts: after every step the
ledger's invariants hold, the funds available equal a model kept from the payments and
bills, and after every settled run the books reconcile with the snapshot. And
`to_minor` / `format_minor`: round trips, and refusals that name the field."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bossa.billing import PaymentRequest, authorize, bill, pay, reconcile, settle, start_run
from bossa.billing.models import ChargeKind, PriceVersion, ProductPeriod, bill_total, charges
from bossa.db import open_pool
from bossa.errors import InvalidInput
from bossa.journal import Journal, JournalSettings
from bossa.ledger import balances, check, format_minor, to_minor
from tests.billing.conftest import key, plan_window
from tests.billing.test_concurrency import PRODUCTS, seed

T = TypeVar("T")
ACCOUNTS = ("A-1", "A-2", "A-3")
SINCE = date(2000, 1, 1)  # every account has one contract of each product since then


def fees(day: date) -> int:
    """What a one-day run on `day` charges an account, by the charge rules' reference:
    the monthly fees in the run of a month's first day, nothing on other days."""
    prices = [
        [PriceVersion(ChargeKind.RECURRING, fee, date(1900, 1, 1), None, ProductPeriod.MONTHLY)]
        for fee in PRODUCTS.values()
    ]
    return sum(
        bill_total(charges(start=SINCE, end=None, prices=p, bill_start=day, bill_end=day))
        for p in prices
    )


RESET = (
    "truncate ledger.transactions, ledger.postings, ledger.balances, ledger.bills,"
    " ledger.rated_usage, billing.runs, billing.run_accounts, billing.snapshots,"
    " billing.staged_deposits, billing.staged_writeoffs, billing.payments, journal.entries,"
    " journal.keys restart identity cascade"
)


class Books:
    """A pool on a loop of its own, so hypothesis can drive it from a plain test."""

    def __init__(self, db_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool_cm = open_pool(db_url, min_size=1, max_size=4)
        self.pool = self.run(self.pool_cm.__aenter__())
        self.journal = Journal(self.pool, JournalSettings(), actor="model")

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.pool_cm.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture
def books(db_url: str) -> Iterator[Books]:
    seed(db_url, len(ACCOUNTS))
    opened = Books(db_url)
    try:
        yield opened
    finally:
        opened.close()


accounts = st.sampled_from(ACCOUNTS)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), accounts, st.integers(1, 60_000)),
        st.tuples(st.just("arrears"), accounts, st.floats(0.01, 1.0)),
        st.tuples(st.just("overpay"), accounts, st.integers(1, 10)),
        st.tuples(st.just("usage"), accounts, st.integers(0, 5_000)),
        st.tuples(st.just("start"), accounts, st.none()),
        st.tuples(st.just("bill"), accounts, st.none()),
        st.tuples(st.just("settle"), accounts, st.none()),
    ),
    min_size=1,
    max_size=25,
)


class Model:
    def __init__(self) -> None:
        self.cash = dict.fromkeys(ACCOUNTS, 0)  # money in, on the online books
        self.staged = dict.fromkeys(ACCOUNTS, 0)  # money in, staged during the run
        self.billed = dict.fromkeys(ACCOUNTS, 0)
        self.unbilled_usage = dict.fromkeys(ACCOUNTS, 0)
        self.run: int | None = None
        self.run_day: date | None = None
        self.run_status: str | None = None
        self.runs = 0


async def owed(books: Books, account: str) -> int:
    async with books.pool.connection() as conn:
        row = await (
            await conn.execute(
                "select coalesce((select amount from ledger.balances"
                "  where account_id = %(a)s and book = 'receivable'), 0)"
                " - coalesce((select sum(amount) from billing.staged_writeoffs"
                "  where account_id = %(a)s and settled_at is null), 0) as owed",
                {"a": account},
            )
        ).fetchone()
    assert row is not None
    return int(row["owed"])


async def step(books: Books, model: Model, op: tuple[str, str, Any]) -> None:
    kind, account, arg = op
    journal, pool = books.journal, books.pool
    if kind == "deposit":
        answer = await pay(
            journal,
            PaymentRequest(account=account, amount=str(arg), currency="KRW"),
            kind="deposit",
            actor="model",
            idempotency_key=key(),
        )
        assert answer["amount_minor"] == arg
        assert isinstance(answer["amount_minor"], int)
        assert answer["status"] == ("staged" if model.run else "posted")
        (model.staged if model.run else model.cash)[account] += arg
    elif kind in ("arrears", "overpay"):
        due = await owed(books, account)
        amount = max(1, int(due * arg)) if kind == "arrears" else max(due, 0) + arg
        request = PaymentRequest(account=account, amount=str(amount), currency="KRW")
        # Never refused: what pays off arrears is a write-off, the rest a deposit.
        answer = await pay(journal, request, kind="arrears", actor="model", idempotency_key=key())
        assert answer["status"] == ("staged" if model.run else "posted")
        assert answer["writeoff_minor"] + answer["deposit_minor"] == amount
        assert 0 <= answer["writeoff_minor"] <= max(due, 0)
        (model.staged if model.run else model.cash)[account] += amount
    elif kind == "usage":
        async with pool.connection() as conn:
            await conn.execute(
                "insert into ledger.rated_usage (account_id, used_at, charge)"
                " values (%s, '2020-01-01', %s)",
                (account, arg),
            )
        model.unbilled_usage[account] += arg
    elif kind == "start" and model.run is None:
        # One-day periods, each a day further back: begun, within the look-back, and
        # overlapping no earlier run's.
        model.runs += 1
        day = date.today() - timedelta(days=model.runs)
        model.run_day = day
        model.run = await start_run(
            pool, cycle="MONTHLY", period_start=day, period_end=day, actor="model"
        )
        model.run_status = "running"
    elif kind == "bill" and model.run_status == "running":
        assert model.run is not None
        assert await bill(pool, model.run, workers=2, chunk=2) == len(ACCOUNTS)
        for name in ACCOUNTS:
            assert model.run_day is not None
            model.billed[name] += fees(model.run_day) + model.unbilled_usage[name]
            model.unbilled_usage[name] = 0
        model.run_status = "settling"
    elif kind == "settle" and model.run_status == "settling":
        assert model.run is not None
        await settle(pool, model.run)
        report = await reconcile(pool, model.run)
        assert report["reconciled"], report["differences"]
        for name in ACCOUNTS:
            model.cash[name] += model.staged[name]
            model.staged[name] = 0
        model.run = model.run_status = None


async def invariants(books: Books, model: Model) -> None:
    async with books.pool.connection() as conn:
        assert await check(conn) == {"unbalanced_transactions": [], "balances_off": []}
        for name in ACCOUNTS:
            held = await balances(conn, name)
            assert all(isinstance(v, int) for v in held.values())
            assert sum(held.values()) == 0
            assert held["cash"] == model.cash[name]
            assert held["revenue"] == -model.billed[name]
            # Available funds are what came in less what was billed, to the unit.
            assert -held["prepaid"] - held["receivable"] == model.cash[name] - model.billed[name]
    for name in ACCOUNTS:
        auth = await authorize(books.journal, name, "1", "KRW")
        funds = model.cash[name] + model.staged[name] - model.billed[name]
        assert auth["funds"] == str(funds)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_random_payments_and_runs_keep_the_books(books: Books, ops: list[Any]) -> None:
    books.run(books.journal.pool.check())  # the pool is alive between examples

    async def go() -> None:
        await plan_window(books.pool)  # runs open only in a window (a few per example)
        async with books.pool.connection() as conn:
            await conn.execute(RESET)
            await conn.execute("update ledger.accounts set status = 'active'")
        model = Model()
        for op in [*ops, ("start", "A-1", None), ("bill", "A-1", None), ("settle", "A-1", None)]:
            await step(books, model, op)
            await invariants(books, model)

    books.run(go())


# -- money ---------------------------------------------------------------------------

exponents = st.integers(0, 4)


@given(exponent=exponents, minor=st.integers(1, 10**15))
def test_format_then_parse_round_trips(exponent: int, minor: int) -> None:
    text = format_minor(minor, exponent)
    assert to_minor(text, exponent) == minor
    assert Decimal(text) == Decimal(minor).scaleb(-exponent)


@given(exponent=exponents, data=st.data())
def test_decimals_parse_exactly(exponent: int, data: st.DataObject) -> None:
    amount = data.draw(
        st.decimals(
            min_value=Decimal(1).scaleb(-exponent),
            max_value=Decimal(10**9),
            places=exponent,
            allow_nan=False,
            allow_infinity=False,
        )
    )
    minor = to_minor(str(amount), exponent)
    assert isinstance(minor, int)
    assert Decimal(format_minor(minor, exponent)) == amount


@given(exponent=exponents, minor=st.integers(1, 10**9), extra=st.integers(1, 9))
def test_too_many_decimals_refused(exponent: int, minor: int, extra: int) -> None:
    text = format_minor(minor, exponent + 1) if exponent else f"{minor}.{extra}"
    if exponent:
        text = text[:-1] + str(extra)
    with pytest.raises(InvalidInput) as refused:
        to_minor(text, exponent, currency="XXX")
    assert refused.value.field == "amount"


@given(
    exponent=exponents,
    value=st.one_of(
        st.integers(max_value=0),
        st.integers(max_value=0).map(str),
        st.decimals(max_value=0, allow_nan=False).map(str),
        st.floats(allow_nan=True),
        st.booleans(),
        st.sampled_from(["", " ", "abc", "NaN", "Infinity", "-Infinity", "1,000", "0.0"]),
        st.integers(10**15 + 1, 10**30),
    ),
)
def test_bad_amounts_refused_naming_the_field(exponent: int, value: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        to_minor(value, exponent)
    assert refused.value.field == "amount"


@pytest.mark.parametrize("text", ["1e300000", "1E+8000000"])
def test_huge_exponents_refused_at_once(text: str) -> None:
    """An amount is typed by people and sent over HTTP: a few characters of exponent
    must be refused as too large at once, not computed out digit by digit."""
    began = time.monotonic()
    with pytest.raises(InvalidInput) as refused:
        to_minor(text, 2)
    assert refused.value.field == "amount"
    assert time.monotonic() - began < 1.0
