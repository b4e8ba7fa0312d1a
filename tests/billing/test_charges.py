"""The charge rules (bossa.billing.models.charges), pure: proration by days, product
periods, price versions, one-off fees. Property tests drive random contracts, price
histories and consecutive bill periods: no day is billed twice, none outside the
contract, none before it began, every day of it up to the last bill is billed."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bossa.billing.models import (
    Charge,
    ChargeKind,
    PriceVersion,
    ProductPeriod,
    bill_total,
    charges,
    product_period,
    prorate,
)

MONTHLY = ProductPeriod.MONTHLY
QUARTERLY = ProductPeriod.QUARTERLY
YEARLY = ProductPeriod.YEARLY


def recurring(amount: int, period: ProductPeriod = MONTHLY, **dates: date) -> PriceVersion:
    return PriceVersion(
        ChargeKind.RECURRING,
        amount,
        dates.get("valid_from", date(2000, 1, 1)),
        dates.get("valid_to"),
        period,
    )


def one_off(amount: int, valid_from: date = date(2000, 1, 1)) -> PriceVersion:
    return PriceVersion(ChargeKind.ONE_OFF, amount, valid_from)


# -- worked examples (the same as docs/billing.md) ------------------------------------


def test_mid_month_start_is_billed_for_its_days() -> None:
    # 30,000 KRW a month; the contract starts on 2026-11-29: 2 of November's 30 days.
    found = charges(
        start=date(2026, 11, 29),
        end=None,
        prices=[recurring(30_000)],
        bill_start=date(2026, 11, 1),
        bill_end=date(2026, 11, 30),
    )
    assert [(c.start, c.end, c.days, c.period_days, c.amount) for c in found] == [
        (date(2026, 11, 29), date(2026, 12, 1), 2, 30, 2_000)
    ]


def test_no_bill_for_a_period_before_the_contract_began() -> None:
    # The finding: a contract created on 2026-11-29 was billed a full October.
    assert (
        charges(
            start=date(2026, 11, 29),
            end=None,
            prices=[recurring(30_000)],
            bill_start=date(2026, 10, 1),
            bill_end=date(2026, 10, 31),
        )
        == []
    )


def test_end_inside_the_period_is_billed_up_to_the_day_before() -> None:
    # Ends on 2026-11-11 (exclusive): 10 days of 30.
    found = charges(
        start=date(2025, 1, 1),
        end=date(2026, 11, 11),
        prices=[recurring(25_000)],
        bill_start=date(2026, 11, 1),
        bill_end=date(2026, 11, 30),
    )
    assert [(c.days, c.amount) for c in found] == [(10, prorate(25_000, 10, 30))]
    assert found[0].amount == 8_333  # 8,333.33...


def test_rounding_is_half_to_even() -> None:
    assert prorate(1, 1, 2) == 0  # 0.5 -> 0
    assert prorate(3, 1, 2) == 2  # 1.5 -> 2
    assert prorate(5, 1, 2) == 2  # 2.5 -> 2
    assert prorate(1_000, 1, 3) == 333
    assert prorate(2_000, 1, 3) == 667
    assert prorate(30_000, 31, 31) == 30_000
    with pytest.raises(ValueError):
        prorate(10, 5, 4)


def test_quarterly_product_charged_its_price_in_the_quarters_first_bill() -> None:
    price = [recurring(90_000, QUARTERLY)]
    october = charges(
        start=date(2020, 1, 1),
        end=None,
        prices=price,
        bill_start=date(2026, 10, 1),
        bill_end=date(2026, 10, 31),
    )
    assert [(c.start, c.end, c.amount) for c in october] == [
        (date(2026, 10, 1), date(2027, 1, 1), 90_000)
    ]
    for month in (11, 12):  # the rest of the quarter: billed already
        first = date(2026, month, 1)
        last = product_period(first, MONTHLY)[1] - timedelta(days=1)
        assert (
            charges(start=date(2020, 1, 1), end=None, prices=price, bill_start=first, bill_end=last)
            == []
        )


def test_quarterly_contract_starting_mid_quarter_prorated_from_its_start() -> None:
    found = charges(
        start=date(2026, 11, 15),
        end=None,
        prices=[recurring(92_000, QUARTERLY)],
        bill_start=date(2026, 11, 1),
        bill_end=date(2026, 11, 30),
    )
    # 15 November to 31 December: 47 of the quarter's 92 days.
    assert [(c.days, c.period_days, c.amount) for c in found] == [(47, 92, 47_000)]


def test_monthly_product_in_a_quarterly_run_is_three_months() -> None:
    found = charges(
        start=date(2020, 1, 1),
        end=None,
        prices=[recurring(30_000)],
        bill_start=date(2026, 10, 1),
        bill_end=date(2026, 12, 31),
    )
    assert [c.amount for c in found] == [30_000, 30_000, 30_000]


def test_yearly_product() -> None:
    found = charges(
        start=date(2026, 7, 1),
        end=None,
        prices=[recurring(365_000, YEARLY)],
        bill_start=date(2026, 7, 1),
        bill_end=date(2026, 7, 31),
    )
    assert [(c.days, c.period_days, c.amount) for c in found] == [(184, 365, 184_000)]


def test_price_change_from_a_date_bills_old_before_and_new_after() -> None:
    prices = [
        recurring(30_000, valid_to=date(2026, 11, 16)),
        recurring(45_000, valid_from=date(2026, 11, 16)),
    ]
    found = charges(
        start=date(2020, 1, 1),
        end=None,
        prices=prices,
        bill_start=date(2026, 11, 1),
        bill_end=date(2026, 11, 30),
    )
    assert [(c.start, c.end, c.price, c.amount) for c in found] == [
        (date(2026, 11, 1), date(2026, 11, 16), 30_000, 15_000),
        (date(2026, 11, 16), date(2026, 12, 1), 45_000, 22_500),
    ]
    assert bill_total(found) == 37_500
    december = charges(
        start=date(2020, 1, 1),
        end=None,
        prices=prices,
        bill_start=date(2026, 12, 1),
        bill_end=date(2026, 12, 31),
    )
    assert [c.amount for c in december] == [45_000]


def test_one_off_fee_once_on_the_first_bill() -> None:
    prices = [recurring(30_000), one_off(50_000)]
    first = charges(
        start=date(2026, 11, 29),
        end=None,
        prices=prices,
        bill_start=date(2026, 11, 1),
        bill_end=date(2026, 11, 30),
    )
    assert sorted((c.kind, c.amount) for c in first) == [
        (ChargeKind.ONE_OFF, 50_000),
        (ChargeKind.RECURRING, 2_000),
    ]
    later = charges(
        start=date(2026, 11, 29),
        end=None,
        prices=prices,
        bill_start=date(2026, 12, 1),
        bill_end=date(2026, 12, 31),
    )
    assert [(c.kind, c.amount) for c in later] == [(ChargeKind.RECURRING, 30_000)]


def test_a_contract_that_never_ran_is_not_billed() -> None:
    prices = [recurring(30_000), one_off(50_000)]
    day = date(2026, 11, 10)
    assert (
        charges(
            start=day,
            end=day,
            prices=prices,
            bill_start=day.replace(day=1),
            bill_end=date(2026, 11, 30),
        )
        == []
    )


# -- properties -------------------------------------------------------------------------

DAY0 = date(2023, 1, 1)
days = st.integers(0, 3 * 366)


@st.composite
def price_history(draw: st.DrawFn) -> list[PriceVersion]:
    """Consecutive recurring versions (a price change closes one and opens the next),
    possibly with a gap, each with its own period; maybe a one-off fee."""
    cuts = sorted(set(draw(st.lists(days, min_size=0, max_size=4))))
    bounds = [DAY0 - timedelta(days=draw(st.integers(0, 400)))]
    bounds += [DAY0 + timedelta(days=c) for c in cuts if DAY0 + timedelta(days=c) > bounds[0]]
    open_ended = draw(st.booleans())
    versions = []
    for i, low in enumerate(bounds):
        high = bounds[i + 1] if i + 1 < len(bounds) else None
        if high is None and not open_ended:
            high = low + timedelta(days=draw(st.integers(1, 800)))
        if draw(st.integers(0, 9)) == 0:
            continue  # a gap: no price for these days
        versions.append(
            PriceVersion(
                ChargeKind.RECURRING,
                draw(st.integers(0, 10**9)),
                low,
                high,
                draw(st.sampled_from(list(ProductPeriod))),
            )
        )
    if draw(st.booleans()):
        versions.append(PriceVersion(ChargeKind.ONE_OFF, draw(st.integers(0, 10**6)), bounds[0]))
    return versions


@st.composite
def bill_periods(draw: st.DrawFn, first: date) -> list[tuple[date, date]]:
    """Consecutive bill periods (each 1 to 366 days) from `first`."""
    periods = []
    day = first
    for length in draw(st.lists(st.integers(1, 366), min_size=1, max_size=12)):
        periods.append((day, day + timedelta(days=length - 1)))
        day += timedelta(days=length)
    return periods


def covered(version: PriceVersion, day: date) -> bool:
    return version.valid_from <= day and (version.valid_to is None or day < version.valid_to)


@settings(max_examples=400, deadline=None)
@given(
    start=days,
    length=st.none() | st.integers(0, 2 * 366),
    lead=st.integers(0, 200),
    prices=price_history(),
    data=st.data(),
)
def test_consecutive_bills_charge_each_contract_day_exactly_once(
    start: int, length: int | None, lead: int, prices: list[PriceVersion], data: st.DataObject
) -> None:
    begin = DAY0 + timedelta(days=start)
    end = None if length is None else begin + timedelta(days=length)
    periods = data.draw(bill_periods(begin - timedelta(days=lead)))
    billed: list[Charge] = []
    for bill_start, bill_end in periods:
        found = charges(
            start=begin, end=end, prices=prices, bill_start=bill_start, bill_end=bill_end
        )
        for charge in found:
            # Carried by the bill whose period holds its anchor; never before the contract.
            assert bill_start <= charge.anchor <= bill_end
            assert charge.anchor >= begin
        billed.extend(found)
    last = periods[-1][1]
    recurring_days: dict[date, int] = {}
    for charge in billed:
        if charge.kind is ChargeKind.ONE_OFF:
            continue
        assert charge.days == (charge.end - charge.start).days > 0
        assert charge.amount == prorate(charge.price, charge.days, charge.period_days)
        for n in range(charge.days):
            day = charge.start + timedelta(days=n)
            recurring_days[day] = recurring_days.get(day, 0) + 1
    assert all(times == 1 for times in recurring_days.values()), "a day billed twice"
    # Never a day outside the contract, nor one without a price.
    for day in recurring_days:
        assert begin <= day
        assert end is None or day < end
        assert any(covered(v, day) for v in prices if v.kind is ChargeKind.RECURRING)
    # Every priced day of the contract up to the last bill's end is billed.
    stop = last + timedelta(days=1) if end is None else min(end, last + timedelta(days=1))
    day = begin
    while day < stop:
        priced = any(covered(v, day) for v in prices if v.kind is ChargeKind.RECURRING)
        assert (day in recurring_days) == priced, day
        day += timedelta(days=1)
    # A one-off fee at most once, exactly once if the contract ran and a bill holds its start.
    one_offs = [c for c in billed if c.kind is ChargeKind.ONE_OFF]
    expected = (
        (end is None or end > begin)
        and begin <= last
        and any(v.kind is ChargeKind.ONE_OFF and covered(v, begin) for v in prices)
    )
    assert len(one_offs) == (1 if expected else 0)


@given(
    price=st.integers(0, 10**12),
    period=st.sampled_from(list(ProductPeriod)),
    day=st.integers(0, 3000),
)
def test_a_whole_period_is_exactly_the_price(price: int, period: ProductPeriod, day: int) -> None:
    first, after = product_period(DAY0 + timedelta(days=day), period)
    found = charges(
        start=first,
        end=after,
        prices=[recurring(price, period)],
        bill_start=first,
        bill_end=after - timedelta(days=1),
    )
    assert [c.amount for c in found] == [price]


@given(price=st.integers(0, 10**15), period_days=st.integers(1, 366), data=st.data())
def test_prorate_is_the_nearest_unit(price: int, period_days: int, data: st.DataObject) -> None:
    days_ = data.draw(st.integers(0, period_days))
    got = prorate(price, days_, period_days)
    exact = price * days_
    # |got - exact/period| <= 1/2, and a tie goes to the even neighbour.
    assert abs(2 * (got * period_days - exact)) <= period_days
    if 2 * (got * period_days - exact) in (period_days, -period_days):
        assert got % 2 == 0
