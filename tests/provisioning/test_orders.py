"""Orders end to end against real division servers: a second PostgreSQL database (AAA)
and a Redis of the test's own (HDS). A division that is down costs the order nothing:
its command waits in the buffer and the backup daemon delivers it when it is back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import redis

from bossa.customers import load_sample
from bossa.errors import Conflict, InvalidInput, NotFound
from bossa.journal import Journal
from bossa.provisioning import BackupDaemon, Deliverer, OrderRequest, ProvisioningSettings, submit
from bossa.provisioning.sample import AAA_TABLE, load_sample_plans
from tests.provisioning import servers

SETTINGS = ProvisioningSettings(down_hold_s=30)


@pytest.fixture
def aaa_url(pg_target: servers.PostgresTarget) -> str:
    """The AAA division's database (psycopg DSN); the division gets its SQLAlchemy URL."""
    with psycopg.connect(pg_target.dsn, autocommit=True) as conn:
        conn.execute("drop table if exists aaa_subscribers, bossa_applied_commands")
        conn.execute(AAA_TABLE)
    return pg_target.dsn


@pytest.fixture
async def deliverer(
    journal: Journal,
    db_url: str,
    aaa_url: str,
    pg_target: servers.PostgresTarget,
    redis_server: servers.ServerProcess,
) -> AsyncIterator[Deliverer]:
    if not redis_server.running:
        redis_server.start()
    redis.Redis.from_url(redis_server.url).flushall()
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    await load_sample_plans(journal.pool, aaa_url=pg_target.url, hds_url=redis_server.url)
    d = Deliverer(journal.pool, SETTINGS)
    yield d
    await d.close()


def order(sa_id: str, intf_code: str = "4201", **binds: Any) -> OrderRequest:
    return OrderRequest(
        product="ADSL",
        sa_id=sa_id,
        intf_code=intf_code,
        cust_id="C-1",
        bind_data={"speed": "100M", **binds},
    )


def aaa_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select sa_id, speed, status from aaa_subscribers order by sa_id"
        ).fetchall()


async def test_order_provisions_every_division_directly(
    journal: Journal, deliverer: Deliverer, aaa_url: str, redis_server: servers.ServerProcess
) -> None:
    result = await submit(journal, deliverer, order("SA-1"), channel="test", settings=SETTINGS)
    assert result["status"] == "completed"
    assert result["divisions"] == {"AAA": "direct", "HDS": "direct"}
    assert aaa_rows(aaa_url) == [("SA-1", "100M", "active")]
    store = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert store.hgetall("sub:SA-1") == {"speed": "100M", "status": "active"}
    async with journal.pool.connection() as conn:
        log = await (
            await conn.execute("select division, mode from provisioning.log order by division")
        ).fetchall()
    assert log == [{"division": "AAA", "mode": "direct"}, {"division": "HDS", "mode": "direct"}]


@pytest.mark.fault
async def test_order_completes_while_redis_is_down(
    journal: Journal, deliverer: Deliverer, aaa_url: str, redis_server: servers.ServerProcess
) -> None:
    redis_server.stop()
    try:
        first = await submit(journal, deliverer, order("SA-2"), channel="test", settings=SETTINGS)
        assert first["status"] == "completed"
        assert first["divisions"] == {"AAA": "direct", "HDS": "buffered"}
        # HDS is now known down: the next order does not even try it (P4a) ...
        second = await submit(journal, deliverer, order("SA-3"), channel="test", settings=SETTINGS)
        assert second["divisions"] == {"AAA": "direct", "HDS": "buffered"}
        # ... and a change for SA-2 queues behind SA-2's first command (P5).
        change = await submit(
            journal, deliverer, order("SA-2", "4202", speed="1G"), channel="test", settings=SETTINGS
        )
        assert change["divisions"]["HDS"] == "buffered"
        assert aaa_rows(aaa_url) == [("SA-2", "1G", "active"), ("SA-3", "100M", "active")]
    finally:
        redis_server.start()
    await BackupDaemon(journal, deliverer, "HDS", concurrency=2).run(once=True)
    store = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert store.hgetall("sub:SA-2") == {"speed": "1G", "status": "active"}
    assert [x.split()[1] for x in store.lrange("log:SA-2", 0, -1)] == ["new", "change"]
    assert store.hgetall("sub:SA-3") == {"speed": "100M", "status": "active"}
    async with journal.pool.connection() as conn:
        modes = await (
            await conn.execute(
                "select mode, count(*) as n from provisioning.log where division = 'HDS'"
                " group by mode"
            )
        ).fetchall()
        buffered = await (
            await conn.execute(
                "select count(*) as n from provisioning.mmdb_plan_buffer where state <> 'done'"
            )
        ).fetchone()
    assert modes == [{"mode": "backup", "n": 3}]
    assert buffered == {"n": 0}


async def test_idempotent_replay(journal: Journal, deliverer: Deliverer) -> None:
    first = await submit(
        journal, deliverer, order("SA-4"), channel="test", idempotency_key="k-1", settings=SETTINGS
    )
    again = await submit(
        journal, deliverer, order("SA-4"), channel="test", idempotency_key="k-1", settings=SETTINGS
    )
    assert again == first
    with pytest.raises(Conflict) as caught:
        await submit(
            journal,
            deliverer,
            order("SA-4", speed="1G"),
            channel="test",
            idempotency_key="k-1",
            settings=SETTINGS,
        )
    assert caught.value.field == "idempotency_key"


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        ({"product": "FIBER", "sa_id": "S", "intf_code": "4201"}, NotFound, "product"),
        ({"product": "ADSL", "intf_code": "4201"}, InvalidInput, "sa_id"),
        (
            {"product": "ADSL", "sa_id": "S", "intf_code": "4299", "bind_data": {"speed": "1"}},
            InvalidInput,
            "intf_code",
        ),
        ({"product": "ADSL", "sa_id": "S", "intf_code": "4201"}, InvalidInput, "bind_data.speed"),
        (
            {
                "product": "ADSL",
                "sa_id": "S",
                "intf_code": "4201",
                "bind_data": {"speed": "1", "colour": "red"},
            },
            InvalidInput,
            "bind_data.colour",
        ),
        ({"product": "ADSL", "sa_id": "S", "intf_code": "42x1"}, InvalidInput, "intf_code"),
    ],
)
async def test_bad_orders_name_the_field_and_apply_nothing(
    journal: Journal,
    deliverer: Deliverer,
    body: dict[str, Any],
    error: type[Exception],
    field: str,
) -> None:
    with pytest.raises(error) as caught:
        await submit(
            journal, deliverer, OrderRequest.parse(body), channel="test", settings=SETTINGS
        )
    assert caught.value.field == field  # type: ignore[attr-defined]
    async with journal.pool.connection() as conn:
        counts = await (
            await conn.execute(
                "select (select count(*) from provisioning.orders) as orders,"
                " (select count(*) from journal.entries) as entries,"
                " (select count(*) from provisioning.service_records) as records"
            )
        ).fetchone()
    assert counts == {"orders": 0, "entries": 0, "records": 0}


async def test_an_order_with_several_problems_names_them_all(
    journal: Journal, deliverer: Deliverer
) -> None:
    # The body's own problems, all at once: a missing SA_ID, an unknown order type, a
    # bind value that is not a scalar.
    with pytest.raises(InvalidInput) as caught:
        OrderRequest.parse({"product": "ADSL", "intf_code": "42x1", "bind_data": {"speed": ["1G"]}})
    fields = [field for field, _ in caught.value.problems]
    assert fields == ["sa_id", "intf_code", "bind_data"]
    assert caught.value.field == "sa_id"
    assert str(caught.value).count(";") == 2
    # Against the plan: a bind missing, two the plan does not use, one taken from the
    # order itself; every one named, none written.
    with pytest.raises(InvalidInput) as caught:
        await submit(
            journal,
            deliverer,
            OrderRequest(
                product="ADSL",
                sa_id="SA-P",
                intf_code="4201",
                bind_data={"colour": "red", "size": 3, "sa_id": "x"},
            ),
            channel="test",
            settings=SETTINGS,
        )
    assert [field for field, _ in caught.value.problems] == [
        "bind_data.sa_id",
        "bind_data.speed",
        "bind_data.colour",
        "bind_data.size",
    ]
    assert caught.value.problems[1][1].startswith("is required by the command for")
    async with journal.pool.connection() as conn:
        row = await (await conn.execute("select count(*) as n from provisioning.orders")).fetchone()
    assert row == {"n": 0}
