"""Receive tables, the seed's buffer views, the operator's hand and the HTTP face of
provisioning, against a real SQL division (a PostgreSQL of the test's own)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from bossa.access import Role
from bossa.customers import load_sample
from bossa.db import open_pool
from bossa.journal import DatabaseLost, Journal
from bossa.journal import service as journal_service
from bossa.provisioning import (
    BackupDaemon,
    Deliverer,
    OrderDaemon,
    OrderRequest,
    ProvisioningSettings,
    add_division,
    add_plan_command,
    submit,
)
from bossa.provisioning import service as provisioning
from bossa.provisioning.sample import AAA, AAA_TABLE
from bossa.runtime import Runtime
from tests.provisioning import servers
from tests.provisioning.conftest import PASSWORD
from tests.support import api_client

SETTINGS = ProvisioningSettings(down_hold_s=30, receipt_batch=7)


@pytest.fixture
async def aaa(
    journal: Journal, db_url: str, pg_target: servers.PostgresTarget
) -> AsyncIterator[Deliverer]:
    """Products ADSL..., division AAA (SQL) with the sample plan, and a Deliverer."""
    if not pg_target_running(pg_target):
        pg_target.start()
    with psycopg.connect(pg_target.dsn, autocommit=True) as conn:
        conn.execute("drop table if exists aaa_subscribers, bossa_applied_commands")
        conn.execute(AAA_TABLE)
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    await add_division(
        journal.pool,
        "AAA",
        {"server_type": "sql", "server_url": pg_target.url, "credentials": {"password": PASSWORD}},
        actor="test",
    )
    for code, command in AAA.items():
        await add_plan_command(journal.pool, "ADSL", code, "AAA", command, actor="test")
    deliverer = Deliverer(journal.pool, SETTINGS)
    yield deliverer
    await deliverer.close()


def pg_target_running(target: servers.PostgresTarget) -> bool:
    try:
        psycopg.connect(target.dsn, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def subscribers(target: servers.PostgresTarget) -> list[tuple[Any, ...]]:
    with psycopg.connect(target.dsn) as conn:
        return conn.execute(
            "select sa_id, speed, status from aaa_subscribers order by sa_id"
        ).fetchall()


async def test_order_daemon_reads_its_receive_table(
    journal: Journal, aaa: Deliverer, db_url: str, pg_target: servers.PostgresTarget
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = [(f"SA-{n % 5}", "4201" if n < 5 else "4202", {"speed": f"{n}M"}) for n in range(20)]
        for sa_id, code, binds in rows:
            conn.execute(
                "insert into provisioning.receipts_adsl (product_code, sa_id, intf_code, bind_data)"
                " values ('ADSL', %s, %s, %s)",
                (sa_id, code, psycopg.types.json.Jsonb(binds)),
            )
        conn.execute(
            "insert into provisioning.receipts_adsl (product_code, intf_code)"
            " values ('ADSL', '4201')"
        )  # no SA_ID: rejected, the rest goes on
    daemon = OrderDaemon(journal, aaa, "ADSL", SETTINGS)
    assert await daemon.run_once() == 21
    assert (daemon.processed, daemon.rejected) == (20, 1)
    # Each contract's last change wins: receipts were applied in order per contract.
    assert subscribers(pg_target) == [(f"SA-{n}", f"{15 + n}M", "active") for n in range(5)]
    with psycopg.connect(db_url) as conn:
        rejected = conn.execute(
            "select error from provisioning.receipts where status = 'rejected'"
        ).fetchone()
        statuses = conn.execute(
            "select status, count(*) from provisioning.receipts group by 1 order by 1"
        ).fetchall()
    assert rejected is not None
    assert "sa_id" in rejected[0]
    assert statuses == [("done", 20), ("rejected", 1)]
    assert await daemon.run_once() == 0  # nothing is processed twice


@pytest.mark.fault
async def test_buffer_views_and_the_operators_hand(
    journal: Journal, aaa: Deliverer, db_url: str, pg_target: servers.PostgresTarget
) -> None:
    pg_target.stop()
    try:
        result = await submit(
            journal,
            aaa,
            OrderRequest(
                product="ADSL",
                sa_id="SA-9",
                intf_code="4201",
                cust_id="C-1",
                bind_data={"speed": "x" * 40},
            ),
            channel="test",
            settings=SETTINGS,
        )
        await submit(
            journal,
            aaa,
            OrderRequest(product="ADSL", sa_id="SA-9", intf_code="4204"),
            channel="test",
            settings=SETTINGS,
        )
    finally:
        pg_target.start()
    assert result["divisions"] == {"AAA": "buffered"}
    with psycopg.connect(db_url) as conn:
        view = conn.execute(
            "select division, sa_id, wo_no, intf_code, cust_id, command, bind_data, bind_method,"
            " errcode, errmsg, errdate is not null, logname, startdate is not null, enddate, state"
            " from provisioning.sql_plan_buffer order by entry_id"
        ).fetchall()
    assert [v[:5] for v in view] == [
        ("AAA", "SA-9", result["wo_no"], "4201", "C-1"),
        ("AAA", "SA-9", view[1][2], "4204", None),
    ]
    first = view[0]
    assert first[5].startswith("insert into aaa_subscribers")
    assert first[6] == {"speed": "x" * 40}
    assert first[7] is True
    assert first[8] == "CONNECT"  # ERRCODE of the failed direct call, with ERRMSG and ERRDATE
    assert first[10] is True
    assert first[11] == "bossa"
    assert (first[13], first[14]) == (None, "ready")

    # The speed column is varchar(16): the server refuses it; the entry parks after its
    # attempts and the suspend behind it waits (per-contract order even in failure).
    await journal.set_policy(
        "provisioning.AAA", {"max_attempts": 2, "backoff_base_ms": 0}, actor="t"
    )
    await BackupDaemon(journal, aaa, "AAA").run(once=True)
    blocked = [
        b.model_dump() for b in await journal_service.blocked_keys(journal, "provisioning.AAA")
    ]
    assert [(b["key"], b["state"]) for b in blocked] == [("SA-9", "parked")]
    assert blocked[0]["last_error"]["code"] == "22001"  # value too long for varchar(16)
    head = blocked[0]["head_id"]
    edited = await provisioning.edit_binds(
        journal, head, {"speed": "2G"}, actor="kim", reason="speed too long"
    )
    assert edited.state == "parked"  # an edit alone leaves it parked (the CLI says so)
    edited = await provisioning.edit_binds(
        journal, head, {"speed": "1G"}, actor="kim", reason="speed too long", retry=True
    )
    assert (edited.state, edited.attempts) == ("ready", 0)
    await BackupDaemon(journal, aaa, "AAA").run(once=True)
    assert subscribers(pg_target) == [("SA-9", "1G", "suspended")]
    with psycopg.connect(db_url) as conn:
        log = conn.execute(
            "select intf_code, mode from provisioning.log order by entry_id"
        ).fetchall()
        audit = conn.execute(
            "select action, actor from journal.audit where entry_id = %s order by id", (head,)
        ).fetchall()
    assert log == [("4201", "backup"), ("4204", "backup")]
    assert audit == [("edit", "kim"), ("edit", "kim"), ("retry", "kim")]


@pytest.fixture
async def client(journal: Journal, db_url: str, aaa: Deliverer) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime.around(db_url, journal, embedded=False, provisioning=SETTINGS)
    try:
        async with api_client(runtime, role=Role.PROVISIONING_OPERATOR) as http:
            yield http
    finally:
        await runtime.deliverer.close()


async def test_orders_over_http(
    client: httpx.AsyncClient, pg_target: servers.PostgresTarget
) -> None:
    body = {"product": "ADSL", "sa_id": "SA-7", "intf_code": "4201", "bind_data": {"speed": "5M"}}
    first = await client.post("/provisioning/orders", json=body, headers={"Idempotency-Key": "o-1"})
    assert first.status_code == 201, first.text
    assert first.json()["divisions"] == {"AAA": "direct"}
    again = await client.post("/provisioning/orders", json=body, headers={"Idempotency-Key": "o-1"})
    assert again.json() == first.json()
    other = await client.post(
        "/provisioning/orders",
        json={**body, "bind_data": {"speed": "6M"}},
        headers={"Idempotency-Key": "o-1"},
    )
    assert other.status_code == 409
    assert other.json()["field"] == "idempotency_key"
    assert subscribers(pg_target) == [("SA-7", "5M", "active")]
    wo_no = first.json()["wo_no"]
    assert (await client.get(f"/provisioning/orders/{wo_no}")).json()["status"] == "completed"
    log = (await client.get("/provisioning/log", params={"sa_id": "SA-7"})).json()
    assert [(row["division"], row["mode"]) for row in log] == [("AAA", "direct")]
    divisions = (await client.get("/provisioning/divisions")).json()
    assert divisions[0]["credentials"] == {"password": "***"}
    for bad, field in [
        ({**body, "product": "NOPE"}, "product"),
        ({**body, "sa_id": ""}, "sa_id"),
        ({**body, "intf_code": "4299"}, "intf_code"),
        ({**body, "bind_data": {}}, "bind_data.speed"),
    ]:
        response = await client.post("/provisioning/orders", json=bad)
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["field"] == field
    # The actor is the credential's, never a name in the body.
    assert first.json()["created_by"].startswith("token:test-provisioning-operator")
    posing = await client.post("/provisioning/commands/1/retry", json={"actor": "mallory"})
    assert (posing.status_code, posing.json()["field"]) == (422, "actor")
    paused = await client.post("/provisioning/divisions/AAA/pause")
    assert paused.json()["paused"] is True
    queued = await client.post("/provisioning/orders", json={**body, "sa_id": "SA-8"})
    assert queued.json()["divisions"] == {"AAA": "buffered"}  # paused: straight to the buffer
    buffer = (await client.get("/provisioning/buffers/AAA", params={"state": "ready"})).json()
    assert [row["sa_id"] for row in buffer] == ["SA-8"]


def test_cli_division_and_plan(db_url: str) -> None:
    env = {**os.environ, "BOSSA_DATABASE_URL": db_url}

    def bossa(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bossa.cli", "provisioning", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    added = bossa(
        "division",
        "add",
        "NRS",
        "--type",
        "soap",
        "--url",
        "http://x/?wsdl",
        "--password",
        PASSWORD,
    )
    assert added.returncode == 0, added.stderr
    listed = bossa("division", "list", "--json")
    assert "NRS" in listed.stdout
    assert PASSWORD not in listed.stdout + listed.stderr
    bad_type = bossa("division", "add", "SMS", "--type", "fax")
    assert bad_type.returncode == 2
    assert "server_type" in bad_type.stderr
    bad_template = bossa("plan", "add", "ADSL", "4201", "NRS", '"not an operation"')
    assert bad_template.returncode == 2
    assert "command" in bad_template.stderr
    assert "Traceback" not in bad_template.stderr + bad_type.stderr


async def test_an_order_daemon_that_loses_its_pool_exits(db_url: str) -> None:
    # Its supervisor restarts it: it neither hangs nor loops on "pool is closed".
    async with open_pool(db_url, min_size=1, max_size=2) as pool:
        journal = Journal(pool, actor="test")
        deliverer = Deliverer(pool, SETTINGS)
    daemon = OrderDaemon(journal, deliverer, "ADSL", SETTINGS)
    with pytest.raises(DatabaseLost, match="pool is closed"):
        await asyncio.wait_for(daemon.run(), 10)
