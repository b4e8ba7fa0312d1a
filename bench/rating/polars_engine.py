"""The rating rules of bossa.rating.models in Polars, for the engine choice only: bench/rating
runs it beside the DuckDB engine on the same file and checks that both charge the same.
It rates well-formed records of known numbers (what the measurement compares); bossa's
engine also sorts out malformed lines and suspense."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from bossa.rating.engine import COLUMNS
from bossa.rating.models import Band, TariffVersion


def frames(
    versions: list[TariffVersion], subs: list[tuple[str, str, str, dt.datetime, dt.datetime | None]]
) -> dict[str, pl.DataFrame]:
    tariffs, zones, rates = [], [], []
    for tid, t in enumerate(versions):
        tariffs.append(
            {
                "tariff_id": tid,
                "product_code": t.product_code,
                "t_from": t.valid_from,
                "t_to": t.valid_to or dt.date(9999, 1, 1),
                "increment": t.increment,
                "min_charge": t.min_charge,
                "discount_percent": t.discount_percent,
                "allowance_seconds": t.allowance_seconds,
            }
        )
        zones += [
            {
                "tariff_id": tid,
                "prefix": p,
                "plen": len(p),
                "zone": z,
                "included": z in t.included_zones,
            }
            for p, z in t.zones.items()
        ]
        rates += [
            {"tariff_id": tid, "zone": z, "band": b.value, "rate": r}
            for (z, b), r in t.rates.items()
        ]
    return {
        "tariffs": pl.DataFrame(tariffs),
        "zones": pl.DataFrame(zones),
        "rates": pl.DataFrame(rates),
        "subs": pl.DataFrame(
            subs,
            schema=["msisdn", "account_id", "product_code", "s_from", "s_to"],
            orient="row",
        ).with_columns(pl.col("s_to").fill_null(dt.datetime(9999, 1, 1))),
    }


def calendar(first: dt.date, last: dt.date) -> pl.DataFrame:
    rows: list[dict[str, Any]] = []
    day = first
    while day <= last:
        midnight = dt.datetime.combine(day, dt.time())
        if day.weekday() >= 5:
            rows.append(
                {
                    "istart": midnight,
                    "iend": midnight + dt.timedelta(days=1),
                    "band": Band.WEEKEND.value,
                }
            )
        else:
            eight, twenty = midnight + dt.timedelta(hours=8), midnight + dt.timedelta(hours=20)
            rows += [
                {"istart": midnight, "iend": eight, "band": Band.OFFPEAK.value},
                {"istart": eight, "iend": twenty, "band": Band.PEAK.value},
                {
                    "istart": twenty,
                    "iend": midnight + dt.timedelta(days=1),
                    "band": Band.OFFPEAK.value,
                },
            ]
        day += dt.timedelta(days=1)
    return pl.DataFrame(rows)


def rate(path: Path, f: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """record_key, account_id, zone, billed, free, charge of each rated record."""
    cdrs = pl.read_csv(
        path,
        schema=dict.fromkeys(COLUMNS, pl.String),
    )
    cdrs = cdrs.with_columns(
        pl.col("start").str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False),
        pl.col("duration").cast(pl.Int64, strict=False),
    ).drop_nulls()
    calls = (
        cdrs.join(f["subs"], on="msisdn")
        .filter((pl.col("start") >= pl.col("s_from")) & (pl.col("start") < pl.col("s_to")))
        .join(f["tariffs"], on="product_code")
        .filter(
            (pl.col("start").dt.date() >= pl.col("t_from"))
            & (pl.col("start").dt.date() < pl.col("t_to"))
        )
    )
    lens = f["zones"].select("tariff_id", "plen").unique()
    zoned = (
        calls.select("record_key", "tariff_id", "destination")
        .join(lens, on="tariff_id")
        .with_columns(prefix=pl.col("destination").str.slice(0, pl.col("plen")))
        .join(f["zones"], on=["tariff_id", "plen", "prefix"])
        .sort("plen", descending=True)
        .group_by("record_key")
        .first()
        .select("record_key", "zone", "included")
    )
    calls = calls.join(zoned, on="record_key").with_columns(
        billed=((pl.col("duration") + pl.col("increment") - 1) // pl.col("increment"))
        * pl.col("increment"),
        month=pl.col("start").dt.strftime("%Y-%m"),
    )
    calls = calls.sort("start", "record_key").with_columns(
        free=pl.when(pl.col("included"))
        .then(
            pl.max_horizontal(
                0,
                pl.min_horizontal(
                    pl.col("billed"),
                    pl.col("allowance_seconds")
                    - (
                        pl.col("billed").cum_sum().over(["account_id", "month", "included"])
                        - pl.col("billed")
                    ),
                ),
            )
        )
        .otherwise(0)
    )
    first, last = calls["start"].min(), calls["start"].max()
    cal = calendar(first.date(), (last + dt.timedelta(days=2)).date())  # type: ignore[union-attr,operator]
    ends = calls.select(
        "record_key",
        "start",
        "free",
        "tariff_id",
        "zone",
        end=pl.col("start") + pl.duration(seconds=pl.col("billed")),
    )
    segments = (
        ends.join_where(cal, pl.col("istart") < pl.col("end"), pl.col("iend") > pl.col("start"))
        .with_columns(
            lo=(pl.max_horizontal("istart", "start") - pl.col("start")).dt.total_seconds(),
            hi=(pl.min_horizontal("iend", "end") - pl.col("start")).dt.total_seconds(),
        )
        .join(f["rates"], on=["tariff_id", "zone", "band"])
        .with_columns(
            part=pl.max_horizontal(0, pl.col("hi") - pl.max_horizontal("free", "lo"))
            * pl.col("rate")
        )
        .group_by("record_key")
        .agg(numerator=pl.col("part").sum())
    )
    charged = calls.join(segments, on="record_key", how="left").with_columns(
        base=(pl.col("numerator").fill_null(0) + 30) // 60
    )
    charged = charged.with_columns(
        gross=pl.when(pl.col("billed") > pl.col("free"))
        .then(pl.max_horizontal("base", "min_charge"))
        .otherwise(pl.col("base"))
    ).with_columns(
        charge=pl.col("gross") - (pl.col("gross") * pl.col("discount_percent") + 50) // 100
    )
    return charged.select("record_key", "account_id", "zone", "billed", "free", "charge")
