"""The row-at-a-time reference rater: the rules of `bossa.rating.models` applied one
usage record at a time, in plain Python, as a reader would check them by hand. The
vectorised engine must agree with it to the minor unit (tests/rating/test_engine.py) and
is measured against it (bench/rating)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from bossa.rating.models import (
    MAX_DURATION_S,
    SuspenseReason,
    TariffVersion,
    band_segments,
    billed_seconds,
    charge_of,
    discount_of,
)


@dataclass(frozen=True)
class Cdr:
    record_key: str
    msisdn: str
    destination: str
    start: datetime
    duration: int


@dataclass(frozen=True)
class Subscription:
    """Which account and product a number had from `valid_from` (inclusive) to
    `valid_to` (exclusive, None open)."""

    msisdn: str
    account_id: str
    product_code: str
    valid_from: datetime
    valid_to: datetime | None


@dataclass(frozen=True)
class Rated:
    record_key: str
    account_id: str
    product_code: str
    zone: str
    billed: int
    free: int
    charge: int


@dataclass(frozen=True)
class Suspended:
    record_key: str
    reason: SuspenseReason


def rate(
    cdrs: Iterable[Cdr],
    subscriptions: Sequence[Subscription],
    tariffs: Sequence[TariffVersion],
    allowance_used: Mapping[tuple[str, str], int] | None = None,
) -> list[Rated | Suspended]:
    """Rate `cdrs` in order of start time, then record key. `allowance_used` maps
    (account, 'YYYY-MM') to seconds of allowance used by what was rated before."""
    used = dict(allowance_used or {})
    by_number: dict[str, list[Subscription]] = {}
    for s in subscriptions:
        by_number.setdefault(s.msisdn, []).append(s)
    by_product: dict[str, list[TariffVersion]] = {}
    for t in tariffs:
        by_product.setdefault(t.product_code, []).append(t)
    out: list[Rated | Suspended] = []
    for cdr in sorted(cdrs, key=lambda c: (c.start, c.record_key)):
        if not 0 <= cdr.duration <= MAX_DURATION_S or not cdr.destination.isdigit():
            out.append(Suspended(cdr.record_key, SuspenseReason.MALFORMED))
            continue
        sub = next(
            (
                s
                for s in by_number.get(cdr.msisdn, ())
                if s.valid_from <= cdr.start and (s.valid_to is None or cdr.start < s.valid_to)
            ),
            None,
        )
        if sub is None:
            out.append(Suspended(cdr.record_key, SuspenseReason.UNKNOWN_ACCOUNT))
            continue
        tariff = next(
            (t for t in by_product.get(sub.product_code, ()) if t.valid_on(cdr.start.date())),
            None,
        )
        if tariff is None:
            out.append(Suspended(cdr.record_key, SuspenseReason.NO_TARIFF))
            continue
        zone = tariff.zone_of(cdr.destination)
        if zone is None:
            out.append(Suspended(cdr.record_key, SuspenseReason.NO_ZONE))
            continue
        billed = billed_seconds(cdr.duration, tariff.increment)
        free = 0
        if zone in tariff.included_zones:
            month = (sub.account_id, cdr.start.strftime("%Y-%m"))
            free = max(0, min(billed, tariff.allowance_seconds - used.get(month, 0)))
            used[month] = used.get(month, 0) + billed
        numerator = 0
        for first, last, band in band_segments(cdr.start, billed):
            chargeable = max(0, last - max(free, first))
            numerator += chargeable * tariff.rates.get((zone, band), 0)
        charge = charge_of(numerator)
        if billed > free:
            charge = max(charge, tariff.min_charge)
        charge -= discount_of(charge, tariff.discount_percent)
        out.append(
            Rated(cdr.record_key, sub.account_id, sub.product_code, zone, billed, free, charge)
        )
    return out
