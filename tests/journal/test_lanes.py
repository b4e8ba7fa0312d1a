"""Lanes are declared and owned: operators cannot make a lane by a typo, the generic
operator doors cannot write another module's entries, and the hot path never asks."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest

from bossa.db import Pool
from bossa.db.migrations import discover
from bossa.errors import Forbidden, NotFound
from bossa.journal import EntryFilter, Journal, NewEntry, service
from bossa.runtime import Runtime
from tests.support import api_client


@pytest.fixture
async def client(journal: Journal, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime.around(db_url, journal, embedded=False)
    async with api_client(runtime) as http:
        yield http
    await runtime.deliverer.close()


@pytest.fixture
async def migrated(journal: Journal) -> set[str]:
    """Lanes the modules' own migrations declared (billing.service, ...): not the test's."""
    return {lane.lane for lane in await journal.lanes()}


async def owners(journal: Journal, migrated: set[str]) -> dict[str, str]:
    """The lanes the test declared, with their owners."""
    return {lane.lane: lane.owner for lane in await journal.lanes() if lane.lane not in migrated}


async def test_declare_is_idempotent_and_refuses_a_second_owner(
    journal: Journal, pool: Pool, migrated: set[str]
) -> None:
    await journal.declare_lane("billing.x", owner="billing")
    await journal.declare_lane("billing.x", owner="billing")
    with pytest.raises(Forbidden, match="belongs to billing") as caught:
        await journal.declare_lane("billing.x", owner="provisioning")
    assert caught.value.field == "lane"
    lane = await journal.lane("billing.x")
    assert (lane.owner, lane.created_by, lane.settings) == ("billing", "test", {})
    # The published SQL function, as other modules' migrations call it.
    async with pool.connection() as conn:
        await conn.execute("select journal.declare_lane('billing.y', 'billing')")
        with pytest.raises(psycopg.Error, match="owned by billing"):
            await conn.execute("select journal.declare_lane('billing.y', 'sync')")
    assert await owners(journal, migrated) == {"billing.x": "billing", "billing.y": "billing"}


async def test_declare_inside_the_callers_transaction(journal: Journal, pool: Pool) -> None:
    async with pool.connection() as conn, conn.transaction(force_rollback=True):
        await journal.declare_lane("mine", owner="journal", conn=conn)
        with pytest.raises(Forbidden):  # refused as a savepoint: the transaction lives on
            await journal.declare_lane("mine", owner="billing", conn=conn)
        assert (await journal.lane("mine", conn=conn)).owner == "journal"
    with pytest.raises(NotFound):
        await journal.lane("mine")


async def test_the_hot_path_needs_no_declaration(journal: Journal, migrated: set[str]) -> None:
    entry = await journal.enqueue_one(NewEntry("ad-hoc", "k", {}))
    taken = await journal.take("ad-hoc", 1)
    assert taken.ids == [entry.id]
    assert await owners(journal, migrated) == {}


async def test_operator_commands_refuse_an_undeclared_lane(
    journal: Journal, migrated: set[str]
) -> None:
    await journal.enqueue_one(NewEntry("provisioning.AAA", "k", {}, key="SA-1"))
    typo = "provisioning.AAAX"
    with pytest.raises(NotFound, match=typo) as caught:
        await service.set_lane_policy(journal, typo, {"paused": True}, actor="kim")
    assert caught.value.field == "lane"
    for attempt in (
        service.lane_policy(journal, typo),
        journal.set_policy(typo, {"paused": True}, actor="kim"),
        service.list_entries(journal, EntryFilter(lane=typo)),
        service.blocked_keys(journal, typo),
        service.purge(journal, typo),
        service.work(journal, typo, {}, listen_url=None, until_idle=True),
    ):
        with pytest.raises(NotFound, match=typo):
            await attempt
    assert await owners(journal, migrated) == {}  # nothing was made by the attempts


async def test_module_lanes_are_tuned_but_not_written_by_the_generic_doors(
    journal: Journal,
) -> None:
    await journal.declare_lane("provisioning.AAA", owner="provisioning")
    command = await journal.enqueue_one(NewEntry("provisioning.AAA", "cmd", {"v": 1}, key="S"))
    policy = await service.set_lane_policy(
        journal, "provisioning.AAA", {"paused": True}, actor="kim"
    )
    assert policy.paused

    with pytest.raises(Forbidden, match="belongs to provisioning"):
        await service.enqueue(journal, NewEntry("provisioning.AAA", "cmd", {"v": 2}), actor="kim")
    with pytest.raises(Forbidden, match="belongs to provisioning"):
        await service.edit(journal, command.id, {"v": 9}, actor="kim")
    assert (await service.show(journal, command.id)).payload == {"v": 1}
    # The owning module rewrites its own entries (after checking their shape).
    await service.edit(journal, command.id, {"v": 9}, actor="kim", owner="provisioning")
    assert (await service.show(journal, command.id)).payload == {"v": 9}
    # Retry, park and discard stay open to operators on every lane.
    await service.park(journal, command.id, actor="kim")
    # No generic worker on it: it has no handler for provisioning's commands.
    with pytest.raises(Forbidden, match="provisioning's own daemon"):
        await service.work(journal, "provisioning.AAA", {}, listen_url=None, until_idle=True)


async def test_the_operators_enqueue_declares_a_new_lane_for_the_journal(
    journal: Journal,
) -> None:
    first = await service.enqueue(journal, NewEntry("mine", "k", {"n": 1}), actor="kim")
    assert first.created
    await service.enqueue(journal, NewEntry("mine", "k", {"n": 2}), actor="lee")
    lane = await journal.lane("mine")
    assert (lane.owner, lane.created_by) == ("journal", "kim")
    made_by = [(await service.show(journal, first.id + n)).created_by for n in (0, 1)]
    assert made_by == ["kim", "lee"]


async def test_lanes_over_http(
    client: httpx.AsyncClient, journal: Journal, migrated: set[str]
) -> None:
    await journal.declare_lane("provisioning.AAA", owner="provisioning")
    command = await journal.enqueue_one(NewEntry("provisioning.AAA", "cmd", {"v": 1}, key="S"))

    missing = await client.patch(
        "/journal/lanes/provisioning.AAAX", json={"settings": {"paused": True}}
    )
    assert missing.status_code == 404
    assert missing.json()["field"] == "lane"
    assert "provisioning.AAAX" in missing.json()["error"]
    assert (await client.get("/journal/lanes/provisioning.AAAX")).status_code == 404
    listed = await client.get("/journal/entries", params={"lane": "provisioning.AAAX"})
    assert listed.status_code == 404
    blocked = await client.get("/journal/blocked-keys", params={"lane": "provisioning.AAAX"})
    assert blocked.status_code == 404

    refused = await client.post(
        "/journal/entries", json={"lane": "provisioning.AAA", "kind": "cmd", "payload": {}}
    )
    assert refused.status_code == 403
    assert refused.json()["field"] == "lane"
    rewrite = await client.put(f"/journal/entries/{command.id}/payload", json={"payload": {"v": 2}})
    assert rewrite.status_code == 403
    tuned = await client.patch(
        "/journal/lanes/provisioning.AAA", json={"settings": {"max_attempts": 2}}
    )
    assert tuned.status_code == 200
    assert tuned.json()["max_attempts"] == 2

    made = await client.post("/journal/entries", json={"lane": "mine", "kind": "k", "payload": 1})
    assert made.status_code == 201
    lanes = [x for x in (await client.get("/journal/lanes")).json() if x["lane"] not in migrated]
    assert [(lane["lane"], lane["owner"]) for lane in lanes] == [
        ("mine", "journal"),
        ("provisioning.AAA", "provisioning"),
    ]
    assert lanes[1]["settings"] == {"max_attempts": 2}


async def test_lane_entries_is_the_published_view(journal: Journal, pool: Pool) -> None:
    entry = await journal.enqueue_one(NewEntry("l", "k", {"a": 1}, key="SA-1"))
    async with pool.connection() as conn:
        cursor = await conn.execute("select * from journal.lane_entries where id = %s", (entry.id,))
        row = await cursor.fetchone()
        assert cursor.description is not None
        columns = [c.name for c in cursor.description]
    assert columns == [
        "id",
        "lane",
        "key",
        "kind",
        "payload",
        "state",
        "attempts",
        "not_before",
        "created_at",
        "created_by",
        "taken_at",
        "finished_at",
        "errors",
        "last_error_code",
        "last_error_message",
        "last_error_at",
        "state_enum",  # the state as the enum, to filter on through the indexes (0007)
    ]
    assert row is not None
    assert (row["state"], row["payload"], row["last_error_code"]) == ("ready", {"a": 1}, None)
    assert row["state_enum"] == "ready"


def test_the_registry_migration_declares_the_lanes_in_use(empty_db_url: str) -> None:
    """0003 declares every lane already in entries or lanes, owned by its prefix's module."""
    steps = [m for m in discover() if m.module == "journal"]
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        for step in steps:
            if step.version == 3:
                conn.execute(
                    "insert into journal.entries (lane, kind, payload, state, created_by)"
                    " select lane, 'k', '{}', 'ready', 't' from unnest(array["
                    "'provisioning.AAA', 'billing.service', 'sms', 'mediation.in', 'misc.x'"
                    "]) as lane"
                )
                conn.execute(
                    "insert into journal.lanes (lane, settings)"
                    " values ('rating.cdr', '{\"max_attempts\": 2}'), ('billing', '{}')"
                )
            conn.execute(step.sql.encode())
        found = conn.execute("select lane, owner, settings from journal.lanes order by lane")
        declared = {lane: (owner, settings) for lane, owner, settings in found.fetchall()}
    assert declared == {
        "billing": ("journal", {}),
        "billing.service": ("billing", {}),
        "mediation.in": ("mediation", {}),
        "misc.x": ("journal", {}),
        "provisioning.AAA": ("provisioning", {}),
        "rating.cdr": ("rating", {"max_attempts": 2}),
        "sms": ("journal", {}),
    }


def bossa(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bossa.cli", "journal", *args],
        env={**os.environ, "BOSSA_DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_cli_says_what_the_api_says(
    client: httpx.AsyncClient, journal: Journal, db_url: str, migrated: set[str]
) -> None:
    await journal.declare_lane("provisioning.AAA", owner="provisioning")
    typo = await asyncio.to_thread(
        bossa, db_url, "lane", "provisioning.AAAX", "--set", "paused=true"
    )
    assert typo.returncode == 2
    over_http = await client.patch(
        "/journal/lanes/provisioning.AAAX", json={"settings": {"paused": True}}
    )
    assert typo.stderr.strip() == f"error: {over_http.json()['error']}"
    assert "no lane 'provisioning.AAAX'" in typo.stderr

    foreign = await asyncio.to_thread(bossa, db_url, "enqueue", "provisioning.AAA", "cmd", "{}")
    assert foreign.returncode == 2
    assert "belongs to provisioning" in foreign.stderr
    listed = await asyncio.to_thread(bossa, db_url, "lanes", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [
        (lane["lane"], lane["owner"])
        for lane in json.loads(listed.stdout)
        if lane["lane"] not in migrated
    ] == [("provisioning.AAA", "provisioning")]


async def test_an_expired_policy_is_looked_up_once_for_every_caller_waiting(
    journal: Journal, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the cached policy expires under load, the callers that miss share one lookup:
    each checking out a connection for the same row made a producer thousands of
    enqueues behind fall further behind, every time the cache expired."""
    from bossa.journal import store

    await journal.declare_lane("l", owner="journal")
    await journal.set_policy("l", {"max_attempts": 4}, actor="test")
    monkeypatch.setattr(store, "_POLICY_TTL_S", 0.0)  # every call misses
    before = pool.get_stats()["requests_num"]
    policies = await asyncio.gather(*(journal.policy("l") for _ in range(200)))
    assert {p.max_attempts for p in policies} == {4}
    assert pool.get_stats()["requests_num"] - before == 1
    # A caller that gives up does not take the lookup down with it for the others.
    first = asyncio.ensure_future(journal.policy("l"))
    second = asyncio.ensure_future(journal.policy("l"))
    await asyncio.sleep(0)
    first.cancel()
    assert (await second).max_attempts == 4
