"""Nothing runs that a plan did not define (issue 11, point 4): plans are versioned, a
buffered command names the version it was accepted under and is rendered from it at
delivery, whatever the plan says by then; a payload that names no version (command text
from before plans were versioned that matched none, a version that does not exist,
another division) is refused and never sent; and the migration turned old payloads
into the plan version their text matched."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis

from bossa.customers import load_sample
from bossa.db.migrations import discover
from bossa.errors import Conflict
from bossa.journal import Journal, NewEntry
from bossa.provisioning import (
    BackupDaemon,
    Deliverer,
    OrderRequest,
    ProvisioningSettings,
    service,
    submit,
)
from bossa.provisioning.models import COMMAND_KIND, ProvisioningCommand, ServerType
from tests.provisioning import servers

SETTINGS = ProvisioningSettings(down_hold_s=30)
V1 = [["RPUSH", "applied:{sa_id}", "v1-{seq}"]]
V2 = [["RPUSH", "applied:{sa_id}", "v2-{seq}"]]


@pytest.fixture
async def hds(
    journal: Journal, db_url: str, redis_server: servers.ServerProcess
) -> AsyncIterator[Deliverer]:
    if not redis_server.running:
        redis_server.start()
    redis.Redis.from_url(redis_server.url).flushall()
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    await service.add_division(
        journal.pool, "HDS", {"server_type": "memstore", "server_url": redis_server.url}, actor="t"
    )
    deliverer = Deliverer(journal.pool, SETTINGS)
    yield deliverer
    await deliverer.close()


def applied(redis_server: servers.ServerProcess, sa_id: str) -> list[str]:
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        return list(client.lrange(f"applied:{sa_id}", 0, -1))  # type: ignore[arg-type]


async def order(journal: Journal, deliverer: Deliverer, sa_id: str, seq: int) -> dict[str, Any]:
    return await submit(
        journal,
        deliverer,
        OrderRequest(product="ADSL", sa_id=sa_id, intf_code="4201", bind_data={"seq": seq}),
        channel="test",
        settings=SETTINGS,
        actor="token:kim",
    )


async def mark_down(journal: Journal, division: str, down: bool) -> None:
    async with journal.pool.connection() as conn:
        await conn.execute(
            "update provisioning.divisions set down_until = case when %s"
            " then now() + interval '1 hour' end where division = %s",
            (down, division),
        )


async def test_a_changed_command_is_a_new_version_and_old_ones_are_kept(
    journal: Journal, hds: Deliverer
) -> None:
    first = await service.add_plan_command(journal.pool, "ADSL", "4201", "HDS", V1, actor="a")
    again = await service.add_plan_command(
        journal.pool, "ADSL", "4201", "HDS", V1, position=3, actor="b"
    )
    changed = await service.add_plan_command(journal.pool, "ADSL", "4201", "HDS", V2, actor="c")
    assert (first.version, again.version, again.position, changed.version) == (1, 1, 3, 2)
    assert changed.command == V2
    [listed] = await service.list_plans(journal.pool)
    assert (listed.version, listed.command, listed.position) == (2, V2, 0)  # as PUT gives it
    async with journal.pool.connection() as conn:
        versions = await (
            await conn.execute(
                "select version, command, created_by from provisioning.plan_versions"
                " order by version"
            )
        ).fetchall()
        assert versions == [
            {"version": 1, "command": V1, "created_by": "a"},
            {"version": 2, "command": V2, "created_by": "c"},
        ]
        with pytest.raises(psycopg.DatabaseError, match="kept as written"):
            await conn.execute("update provisioning.plan_versions set command = '[]'")


async def test_a_buffered_command_is_sent_as_the_version_it_was_accepted_under(
    journal: Journal, hds: Deliverer, redis_server: servers.ServerProcess
) -> None:
    await service.add_plan_command(journal.pool, "ADSL", "4201", "HDS", V1, actor="t")
    await mark_down(journal, "HDS", True)
    buffered = await order(journal, hds, "SA-1", 0)
    assert buffered["divisions"] == {"HDS": "buffered"}
    assert buffered["created_by"] == "token:kim"
    # The plan changes while the command waits; a new order goes with the new version.
    await service.add_plan_command(journal.pool, "ADSL", "4201", "HDS", V2, actor="t")
    await mark_down(journal, "HDS", False)
    await BackupDaemon(journal, hds, "HDS").run(once=True)
    assert applied(redis_server, "SA-1") == ["v1-0"]
    direct = await order(journal, hds, "SA-1", 1)
    assert direct["divisions"] == {"HDS": "direct"}
    assert applied(redis_server, "SA-1") == ["v1-0", "v2-1"]
    rows = await service.buffer(journal.pool, "HDS")
    assert [(r.plan_version, r.command, r.state) for r in rows] == [
        (1, V1, "done"),
        (2, V2, "done"),
    ]
    shown = await service.buffered_command(journal, rows[0].entry_id)
    assert shown.template == V1
    assert shown.rendered == [["RPUSH", "applied:SA-1", "v1-0"]]
    assert shown.refused is None


def payload(**changes: Any) -> dict[str, Any]:
    base = ProvisioningCommand(
        sa_id="SA-9",
        division="HDS",
        server_type=ServerType.MEMSTORE,
        product="ADSL",
        intf_code="4201",
        plan_version=1,
        wo_no="WO-9",
        bind_data={"seq": 9},
        ins_date=datetime.now(UTC),
    ).to_payload()
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "code", "reason"),
    [
        # The shape from before plans were versioned, whose text matched no plan.
        (
            {"command": [["FLUSHALL"]], "plan_version": None, "bind_method": True},
            "PLAN",
            "never sent",
        ),
        ({"plan_version": 99}, "PLAN", "does not exist: never sent"),
        ({"division": "AAA"}, "PAYLOAD", "on the lane of HDS: never sent"),
    ],
)
async def test_a_payload_that_names_no_plan_version_is_refused_and_never_sent(
    journal: Journal,
    hds: Deliverer,
    redis_server: servers.ServerProcess,
    changes: dict[str, Any],
    code: str,
    reason: str,
) -> None:
    await service.add_plan_command(journal.pool, "ADSL", "4201", "HDS", V1, actor="t")
    with redis.Redis.from_url(redis_server.url) as client:
        client.set("keep", "me")
    # Retries cannot make a plan exist: the refusal parks at once, not after 5 attempts.
    await journal.set_policy("provisioning.HDS", {"max_attempts": 5}, actor="t")
    [entry] = await journal.enqueue(
        [NewEntry("provisioning.HDS", COMMAND_KIND, payload(**changes), key="SA-9")]
    )
    await BackupDaemon(journal, hds, "HDS").run(once=True)
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        assert client.get("keep") == "me"  # no FLUSHALL ran
        assert client.lrange("applied:SA-9", 0, -1) == []
    [row] = await service.buffer(journal.pool, "HDS")
    assert (row.state, row.errcode, row.attempts) == ("parked", code, 1)
    assert row.errmsg is not None
    assert reason in row.errmsg
    shown = await service.buffered_command(journal, entry.id)
    assert shown.refused is not None
    assert shown.rendered is None
    if "command" in changes:
        assert shown.command is None
        with pytest.raises(Conflict):
            await service.edit_binds(journal, entry.id, {"seq": 1}, actor="t")


async def test_an_entry_of_another_kind_is_refused_and_only_commands_are_logged(
    journal: Journal, hds: Deliverer, redis_server: servers.ServerProcess
) -> None:
    # The daemon's log is written from the acked entries as commands: an entry that is
    # not one is never sent (so never delivered unlogged), whatever its payload holds.
    await service.add_plan_command(journal.pool, "ADSL", "4201", "HDS", V1, actor="t")
    other, command = await journal.enqueue(
        [
            NewEntry("provisioning.HDS", "note", payload(), key="SA-8"),
            NewEntry("provisioning.HDS", COMMAND_KIND, payload(), key="SA-9"),
        ]
    )
    await BackupDaemon(journal, hds, "HDS").run(once=True)
    assert applied(redis_server, "SA-8") == []
    assert applied(redis_server, "SA-9") == ["v1-9"]
    async with journal.pool.connection() as conn:
        state = await (
            await conn.execute(
                "select state::text as state, last_error_code from journal.lane_entries"
                " where id = %s",
                (other.id,),
            )
        ).fetchone()
    assert state == {"state": "parked", "last_error_code": "PAYLOAD"}
    logged = await service.delivery_log(journal.pool, sa_id="SA-9")
    assert [(row.entry_id, row.wo_no, row.intf_code, row.mode) for row in logged] == [
        (command.id, "WO-9", "4201", "backup")
    ]
    assert await service.delivery_log(journal.pool, sa_id="SA-8") == []


# -- the migration --------------------------------------------------------------------


def old_payload(division: str, command: Any, product: str | None = "ADSL") -> dict[str, Any]:
    """A payload as provisioning enqueued it before issue 11: with its command text."""
    shaped = {
        "division": division,
        "server_type": "sql",
        "wo_no": "WO-1",
        "intf_code": "4201",
        "cust_id": None,
        "command": command,
        "bind_data": {"speed": "1G"},
        "bind_method": True,
        "logname": "bossa",
        "ins_date": "2026-01-02T03:04:05+00:00",
    }
    if product is not None:
        shaped["product"] = product
    return shaped


def test_the_migration_names_the_plan_version_an_old_payload_matches(empty_db_url: str) -> None:
    plan = "insert into subs (sa_id, speed) values (:sa_id, :speed)"
    versioned = next(m for m in discover() if (m.module, m.version) == ("provisioning", 4))
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        for migration in discover():
            if migration.module == "provisioning" and migration.version >= 4:
                continue
            conn.execute(migration.sql.encode())
        conn.execute(
            "insert into provisioning.divisions (division, server_type, server_url)"
            " values ('AAA', 'sql', 'postgresql://aaa@h/aaa')"
        )
        conn.execute("select journal.declare_lane('provisioning.AAA', 'provisioning')")
        conn.execute(
            "insert into provisioning.plan_commands (product_code, intf_code, division, command)"
            " values ('ADSL', '4201', 'AAA', %s), ('SOIP', '4201', 'AAA', %s)",
            (json.dumps(plan), json.dumps(plan)),
        )
        for key, shaped in (
            ("SA-1", old_payload("AAA", plan)),  # matches ADSL's plan
            ("SA-2", old_payload("AAA", plan, product=None)),  # matches, names no product
            ("SA-3", old_payload("AAA", "drop table subs")),  # matches nothing
        ):
            conn.execute(
                "insert into journal.entries (lane, key, kind, payload, state, created_by)"
                " values ('provisioning.AAA', %s, 'provisioning.command', %s, 'ready', 't')",
                (key, json.dumps(shaped)),
            )
        conn.execute(versioned.sql.encode())
        rows = conn.execute("select key, payload from journal.entries order by key").fetchall()
        shown = conn.execute(
            "select sa_id, plan_version, command #>> '{}' from provisioning.commands order by sa_id"
        ).fetchall()
    payloads = dict(rows)
    for key in ("SA-1", "SA-2"):
        assert "command" not in payloads[key]
        assert "bind_method" not in payloads[key]
        assert (payloads[key]["product"], payloads[key]["plan_version"]) == ("ADSL", 1)
        command = ProvisioningCommand.from_entry({"key": key, "payload": payloads[key]})
        assert command.bind_data == {"speed": "1G"}
    assert payloads["SA-3"]["command"] == "drop table subs"  # left to be refused
    assert shown == [("SA-1", 1, plan), ("SA-2", 1, plan), ("SA-3", None, None)]
