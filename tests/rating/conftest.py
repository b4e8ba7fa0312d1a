"""Rating fixtures: a migrated database with the sample operator's products, and a tariff
for SOIP (voice) with zones, bands and an allowance."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

import pytest

from bossa.customers import load_sample_operator
from bossa.db import Pool, open_pool
from bossa.rating.models import Band, TariffVersion
from bossa.rating.service import Pipeline, add_tariff


def voice_tariff(**overrides: object) -> TariffVersion:
    fields: dict[str, object] = {
        "product_code": "SOIP",
        "valid_from": date(2026, 1, 1),
        "valid_to": None,
        "increment": 1,
        "min_charge": 5,
        "discount_percent": 0,
        "allowance_seconds": 120,
        "zones": {"82": "national", "8210": "mobile", "1": "intl"},
        "rates": {
            **{("national", b): r for b, r in zip(Band, (60, 30, 20), strict=True)},
            **{("mobile", b): r for b, r in zip(Band, (120, 90, 60), strict=True)},
            **{("intl", b): 600 for b in Band},
        },
        "included_zones": frozenset({"national"}),
    }
    fields.update(overrides)
    return TariffVersion(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[Pool]:
    async with open_pool(db_url, max_size=4) as pool:
        await load_sample_operator(pool, actor="test")
        await add_tariff(pool, voice_tariff(), actor="test")
        yield pool


@pytest.fixture
def pipeline() -> object:
    p = Pipeline.open(threads=2)
    yield p
    p.close()
