"""The seed's sample plans: ADSL, WiBro and SoIP provisioning the network-access server
(AAA, a SQL database) and the IPTV/home-device server (HDS, an in-memory store)."""

from __future__ import annotations

from typing import Any

from bossa.db import Pool
from bossa.errors import InvalidInput
from bossa.provisioning.models import OrderType
from bossa.provisioning.service import add_division, add_plan_command, update_division

__all__ = ["AAA_TABLE", "load_sample_plans"]

AAA_TABLE = """
create table if not exists aaa_subscribers (
    sa_id   varchar(64) primary key,
    cust_id varchar(64),
    speed   varchar(16) not null,
    status  varchar(16) not null
)
"""

AAA: dict[str, str] = {
    OrderType.NEW: "insert into aaa_subscribers (sa_id, cust_id, speed, status)"
    " values (:sa_id, :cust_id, :speed, 'active')",
    OrderType.CHANGE: "update aaa_subscribers set speed = :speed where sa_id = :sa_id",
    OrderType.TERMINATE: "delete from aaa_subscribers where sa_id = :sa_id",
    OrderType.SUSPEND: "update aaa_subscribers set status = 'suspended' where sa_id = :sa_id",
    OrderType.RESUME: "update aaa_subscribers set status = 'active' where sa_id = :sa_id",
}
HDS: dict[str, list[list[str]]] = {
    OrderType.NEW: [
        ["HSET", "sub:{sa_id}", "speed", "{speed}", "status", "active"],
        ["RPUSH", "log:{sa_id}", "{wo_no} new"],
    ],
    OrderType.CHANGE: [
        ["HSET", "sub:{sa_id}", "speed", "{speed}"],
        ["RPUSH", "log:{sa_id}", "{wo_no} change"],
    ],
    OrderType.TERMINATE: [["DEL", "sub:{sa_id}"], ["RPUSH", "log:{sa_id}", "{wo_no} terminate"]],
    OrderType.SUSPEND: [
        ["HSET", "sub:{sa_id}", "status", "suspended"],
        ["RPUSH", "log:{sa_id}", "{wo_no} suspend"],
    ],
    OrderType.RESUME: [
        ["HSET", "sub:{sa_id}", "status", "active"],
        ["RPUSH", "log:{sa_id}", "{wo_no} resume"],
    ],
}


async def load_sample_plans(pool: Pool, *, aaa_url: str, hds_url: str) -> None:
    """Divisions AAA and HDS at the given URLs, and plans for the seed's three products."""
    for name, values in (
        ("AAA", {"server_type": "sql", "server_url": aaa_url, "server_name": "network access"}),
        ("HDS", {"server_type": "memstore", "server_url": hds_url, "server_name": "IPTV auth"}),
    ):
        try:
            await add_division(pool, name, values, actor="sample")
        except InvalidInput:
            await update_division(pool, name, values, actor="sample")
    for product in ("ADSL", "WIBRO", "SOIP"):
        for intf_code in AAA:
            await add_plan_command(
                pool, product, intf_code, "AAA", AAA[intf_code], position=0, actor="sample"
            )
            command: Any = HDS[intf_code]
            await add_plan_command(
                pool, product, intf_code, "HDS", command, position=1, actor="sample"
            )
