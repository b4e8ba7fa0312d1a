"""Rating's values and pure rules: tariffs (zones, time bands, increments, minimum charge,
allowances, discounts), usage records and their reasons for suspense. No I/O.

The rules, in the order a call is rated (docs/sync-and-rating.md states them with
examples; the vectorised engine in `engine.py` and the row-at-a-time reference in the
tests implement exactly these):

1. The tariff is the version of the subscriber's product tariff valid on the call's start
   date; the zone is the one whose destination prefix is the longest match.
2. Billed seconds: the duration rounded up to the tariff's increment (1 s or 60 s). A call
   of 0 s is billed nothing, not even the minimum charge.
3. The billed seconds are split where the time band changes (peak 08:00-20:00 on
   weekdays, off-peak the rest of a weekday, weekend all Saturday and Sunday, in the
   operator's local time, which is the time a CDR carries).
4. Included allowance: the first seconds of a call in an included zone are free while the
   account's allowance for the calendar month of the call's start lasts; calls consume it
   in order of start time (then record key) within what is rated together, and after
   what was rated before.
5. Charge = sum over segments of chargeable seconds x the band's rate per minute, divided
   by 60, rounded half up to the minor unit, once per call. If any second was chargeable,
   at least the minimum charge.
6. Discount: a whole percentage of the charge, rounded half up, taken off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bossa.errors import InvalidInput

__all__ = [
    "MAX_API_RECORDS",
    "MAX_DURATION_S",
    "MAX_RATE",
    "MAX_RECYCLE",
    "MAX_RERATE_DAYS",
    "PEAK_END",
    "PEAK_START",
    "Band",
    "BatchReport",
    "RatedRecord",
    "RecycleReport",
    "RerateReport",
    "SuspendedRecord",
    "SuspenseReason",
    "TariffRequest",
    "TariffVersion",
    "ZoneSpec",
    "band_at",
    "band_segments",
    "billed_seconds",
    "charge_of",
    "discount_of",
]

#: The longest call rated (48 hours); a longer duration is malformed, not a call.
MAX_DURATION_S = 172_800
#: A rate per minute above this (in minor units) is a typo, not a tariff.
MAX_RATE = 10_000_000
PEAK_START = time(8)
PEAK_END = time(20)
#: Suspended records one recycle run takes (the automatic one loops until none is left).
MAX_RECYCLE = 100_000
#: The longest period one rerate takes: a month and a day of margin.
MAX_RERATE_DAYS = 32
#: Usage records in one API request (a bigger batch is a file for the inbox).
MAX_API_RECORDS = 5_000


class Band(StrEnum):
    PEAK = "peak"
    OFFPEAK = "offpeak"
    WEEKEND = "weekend"


class SuspenseReason(StrEnum):
    """Why a usage record was not rated. It is kept, with the reason, and recycled."""

    UNKNOWN_ACCOUNT = "unknown_account"
    NO_TARIFF = "no_tariff"
    NO_ZONE = "no_zone"
    MALFORMED = "malformed"
    BILLING_IN_PROGRESS = "billing_in_progress"


def band_at(moment: datetime) -> Band:
    if moment.weekday() >= 5:
        return Band.WEEKEND
    return Band.PEAK if PEAK_START <= moment.time() < PEAK_END else Band.OFFPEAK


def _next_boundary(moment: datetime) -> datetime:
    """The next instant after `moment` where the band may change."""
    day = datetime.combine(moment.date(), time())
    for at in (day + timedelta(hours=8), day + timedelta(hours=20)):
        if at > moment:
            return at
    return day + timedelta(days=1)


def band_segments(start: datetime, seconds: int) -> list[tuple[int, int, Band]]:
    """[start offset, end offset) of each band the call's billed seconds fall in."""
    segments: list[tuple[int, int, Band]] = []
    offset = 0
    moment = start
    while offset < seconds:
        boundary = _next_boundary(moment)
        length = min(seconds - offset, int((boundary - moment).total_seconds()))
        band = band_at(moment)
        if segments and segments[-1][2] == band:
            first, _, _ = segments.pop()
            segments.append((first, offset + length, band))
        else:
            segments.append((offset, offset + length, band))
        offset += length
        moment = start + timedelta(seconds=offset)
    return segments


def billed_seconds(duration: int, increment: int) -> int:
    return -(-duration // increment) * increment


def charge_of(numerator: int) -> int:
    """Sum of seconds x rate per minute, to minor units, half up."""
    return (numerator + 30) // 60


def discount_of(charge: int, percent: int) -> int:
    return (charge * percent + 50) // 100


@dataclass(frozen=True)
class TariffVersion:
    """One version of a product's usage tariff, valid from `valid_from` to `valid_to`
    (exclusive; None is open)."""

    product_code: str
    valid_from: date
    valid_to: date | None
    #: Billing increment in seconds: 1 (per second) or 60 (per minute).
    increment: int = 1
    min_charge: int = 0
    discount_percent: int = 0
    #: Free seconds per account per calendar month in the included zones.
    allowance_seconds: int = 0
    #: Destination prefix -> zone name.
    zones: dict[str, str] = field(default_factory=dict)
    #: (zone, band) -> minor units per minute.
    rates: dict[tuple[str, Band], int] = field(default_factory=dict)
    included_zones: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.increment not in (1, 60):
            raise ValueError(f"increment must be 1 or 60 seconds, not {self.increment}")
        if not 0 <= self.discount_percent <= 100:
            raise ValueError("discount_percent must be between 0 and 100")
        if self.min_charge < 0 or self.allowance_seconds < 0:
            raise ValueError("min_charge and allowance_seconds must not be negative")
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be after valid_from")
        for (zone, band), rate in self.rates.items():
            if not 0 <= rate <= MAX_RATE:
                raise ValueError(f"rate of {zone}/{band} out of bounds")
        for prefix in self.zones:
            if not prefix.isdigit() or len(prefix) > 16:
                raise ValueError(f"zone prefix {prefix!r} must be 1-16 digits")
        for zone in set(self.zones.values()):
            missing = [band.value for band in Band if (zone, band) not in self.rates]
            if missing:
                raise ValueError(f"zone {zone} has no rate for {', '.join(missing)}")
        if not self.included_zones <= set(self.zones.values()):
            raise ValueError("an included zone is not a zone of the tariff")

    def valid_on(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day < self.valid_to)

    def zone_of(self, destination: str) -> str | None:
        for length in range(min(len(destination), 16), 0, -1):
            zone = self.zones.get(destination[:length])
            if zone is not None:
                return zone
        return None


class BatchReport(BaseModel):
    """What rating one batch did."""

    batch: int
    source: str
    records: int = Field(description="lines that were not the header")
    rated: int
    suspended: int
    malformed: int = Field(description="lines not rated: unreadable, invalid or duplicate")
    charge: int | None = Field(description="total charge in minor units (None if repeated)")
    repeated: bool = Field(description="the same content was rated before: nothing done")
    errors: list[tuple[int, str, str]] = Field(
        default_factory=list, description="(line, record key, reason) of malformed lines"
    )
    phases: dict[str, float] = Field(
        default_factory=dict, description="seconds spent in each phase of the batch"
    )

    @classmethod
    def of_row(cls, row: dict[str, Any], *, repeated: bool) -> BatchReport:
        return cls(
            batch=row["id"],
            source=row["source"],
            records=row["records"],
            rated=row["rated"],
            suspended=row["suspended"],
            malformed=row["malformed"],
            charge=None,
            repeated=repeated,
        )


class RatedRecord(BaseModel):
    """One rated usage record, as `rating.rated_usage` keeps it."""

    record_key: str
    batch_id: int
    account_id: str
    msisdn: str
    product_code: str
    zone: str
    started_at: datetime
    duration: int
    billed: int
    free: int
    charge: int


class SuspendedRecord(BaseModel):
    record_key: str
    msisdn: str
    destination: str
    started_at: datetime
    duration: int
    reason: SuspenseReason
    attempts: int


class ZoneSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(pattern=r"^[0-9]{1,16}$")
    zone: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    included: bool = False


class TariffRequest(BaseModel):
    """A tariff version as an operator writes it (JSON or YAML; docs/sync-and-rating.md)."""

    model_config = ConfigDict(extra="forbid")

    product: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,31}$")
    valid_from: date
    increment: Literal[1, 60] = 1
    min_charge: int = Field(default=0, ge=0, le=1_000_000_000_000)
    discount_percent: int = Field(default=0, ge=0, le=100)
    allowance_seconds: int = Field(default=0, ge=0, le=1_000_000_000)
    zones: list[ZoneSpec] = Field(min_length=1, max_length=10_000)
    rates: dict[str, dict[Band, int]] = Field(
        description="zone -> band -> minor units per minute", max_length=1_000
    )

    def version(self) -> TariffVersion:
        """The version this request describes, or InvalidInput naming what is wrong."""
        for zone, bands in self.rates.items():
            for band, rate in bands.items():
                if not 0 <= rate <= MAX_RATE:
                    raise InvalidInput(
                        f"{rate} is not between 0 and {MAX_RATE}", field=f"rates.{zone}.{band}"
                    )
        try:
            return TariffVersion(
                product_code=self.product,
                valid_from=self.valid_from,
                valid_to=None,
                increment=self.increment,
                min_charge=self.min_charge,
                discount_percent=self.discount_percent,
                allowance_seconds=self.allowance_seconds,
                zones={z.prefix: z.zone for z in self.zones},
                rates={
                    (zone, band): rate
                    for zone, bands in self.rates.items()
                    for band, rate in bands.items()
                },
                included_zones=frozenset(z.zone for z in self.zones if z.included),
            )
        except ValueError as exc:
            raise InvalidInput(str(exc), field="rates") from None

    @classmethod
    def parse(cls, data: Any) -> TariffRequest:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "tariff"
            raise InvalidInput(first["msg"], field=where) from None


class RecycleReport(BaseModel):
    """What one recycle run did."""

    taken: int = Field(description="suspended records taken")
    rated: int = Field(description="rated now, out of suspense")
    suspended: int = Field(description="still not ratable: in suspense, with their reason")
    charge: int = Field(description="total charge of the records rated, in minor units")
    batch: int | None = Field(description="the recycle's batch (None when nothing was taken)")
    already_rated: int = Field(
        default=0, description="rated in another batch meanwhile: not charged again"
    )


class RerateReport(BaseModel):
    """What one rerate did."""

    start: date
    end: date = Field(description="first day not rerated")
    account: str | None
    records: int = Field(description="rated records of the period taken")
    rated: int
    suspended: int = Field(description="no longer ratable: now in suspense")
    old_charge: int
    new_charge: int
    ledger_rows_replaced: int = Field(description="the ledger's usage rows removed and rebooked")
    batch: int
