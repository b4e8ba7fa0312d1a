"""The vectorised engine against the row-at-a-time reference (tests/rating/reference.py):
for random tariffs, subscriptions that change product, and calls that cross band changes,
day and week ends and allowance limits, both give every record the same account, zone,
billed and free seconds and charge, to the minor unit (or the same reason for suspense)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bossa.rating.engine import RatingEngine
from bossa.rating.models import Band, TariffVersion
from tests.rating.reference import Cdr, Rated, Subscription, Suspended, rate

PREFIXES = ["1", "12", "123", "44", "4420", "82", "8210"]
T0 = datetime(2026, 3, 6, 18)  # a Friday evening: weekday, weekend and month ends near


@st.composite
def tariffs(draw: st.DrawFn, product: str, start: date, end: date | None) -> TariffVersion:
    prefixes = draw(st.lists(st.sampled_from(PREFIXES), min_size=1, max_size=6, unique=True))
    zones = {p: draw(st.sampled_from(["a", "b", "c"])) for p in prefixes}
    names = sorted(set(zones.values()))
    rates = {(z, b): draw(st.integers(0, 1000)) for z in names for b in Band}
    return TariffVersion(
        product_code=product,
        valid_from=start,
        valid_to=end,
        increment=draw(st.sampled_from([1, 60])),
        min_charge=draw(st.integers(0, 50)),
        discount_percent=draw(st.integers(0, 100)),
        allowance_seconds=draw(st.integers(0, 600)),
        zones=zones,
        rates=rates,
        included_zones=frozenset(draw(st.lists(st.sampled_from(names), unique=True))),
    )


World = tuple[list[TariffVersion], list[Subscription], list[Cdr]]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    change = date(2026, 3, 7)  # the second product's tariff changes on Saturday
    versions = [
        draw(tariffs("P1", date(2026, 1, 1), None)),
        draw(tariffs("P2", date(2026, 1, 1), change)),
        draw(tariffs("P2", change, None)),
    ]
    switch = T0 + timedelta(seconds=draw(st.integers(0, 3 * 86_400)))
    subs = [
        Subscription("100", "A1", "P1", datetime(2026, 1, 1), switch),
        Subscription("100", "A1", "P2", switch, None),
        Subscription("200", "A2", draw(st.sampled_from(["P1", "P2"])), datetime(2026, 1, 1), None),
    ]
    cdrs = [
        Cdr(
            f"k{i}",
            draw(st.sampled_from(["100", "200", "300"])),
            draw(st.sampled_from([*PREFIXES, "9"])) + draw(st.sampled_from(["", "0", "55"])),
            T0 + timedelta(seconds=draw(st.integers(0, 4 * 86_400))),
            draw(st.one_of(st.integers(0, 130), st.integers(0, 100_000))),
        )
        for i in range(draw(st.integers(1, 40)))
    ]
    return versions, subs, cdrs


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds(), used=st.integers(0, 700), parts=st.sampled_from([1, 2, 3]))
def test_engine_charges_as_the_reference(
    world: World, used: int, parts: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    versions, subs, cdrs = world
    before = {("A1", "2026-03"): used}
    expected = {r.record_key: r for r in rate(cdrs, subs, versions, before)}
    engine = RatingEngine(threads=1)
    try:
        engine.load_tariffs(versions)
        engine.put_subscriptions(
            (s.msisdn, s.account_id, s.product_code, s.valid_from, s.valid_to) for s in subs
        )
        engine.put_usage([("A1", "2026-03", used)])
        workdir = tmp_path_factory.mktemp("engine")
        bad = engine.stage_records(
            [
                (
                    c.record_key,
                    c.msisdn,
                    c.destination,
                    f"{c.start:%Y-%m-%d %H:%M:%S}",
                    str(c.duration),
                )
                for c in cdrs
            ],
            workdir,
        )
        assert bad == []
        # In ranges of accounts (A1, A2, unknown numbers) as in one statement.
        engine.rate(parts)
        got = {
            key: rest
            for key, *rest in engine.rows(
                "select record_key, account_id, zone, billed, free, charge, reason from result"
            )
        }
    finally:
        engine.close()
    assert set(got) == set(expected)
    for key, want in expected.items():
        if isinstance(want, Rated):
            assert got[key] == [
                want.account_id,
                want.zone,
                want.billed,
                want.free,
                want.charge,
                None,
            ], key
        else:
            assert isinstance(want, Suspended)
            assert got[key][-1] == want.reason.value, key
