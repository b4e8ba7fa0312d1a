"""The numbered orders the fault and race tests send: a contract's order number `seq`
is a new (4201) for 0 and a change (4202) after, carrying `seq` as bind data, so the
target shows the order in which a contract's commands arrived."""

from __future__ import annotations

from typing import Any

from bossa.journal import Journal
from bossa.provisioning import Deliverer, OrderRequest, ProvisioningSettings, submit


async def numbered_order(
    journal: Journal,
    deliverer: Deliverer,
    sa_id: str,
    seq: int,
    *,
    channel: str,
    settings: ProvisioningSettings,
) -> dict[str, Any]:
    return await submit(
        journal,
        deliverer,
        OrderRequest(
            product="ADSL",
            sa_id=sa_id,
            intf_code="4201" if seq == 0 else "4202",
            bind_data={"seq": seq},
        ),
        channel=channel,
        settings=settings,
    )
