"""Issue 11 for the journal: who may call what, whose name the audit records, bounded lane
settings, and hostile input refused with a 422 naming its field, nothing written."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bossa import config
from bossa.access import Role
from bossa.db import Pool
from bossa.errors import ConfigError, Forbidden, InvalidInput
from bossa.journal import Failure, Journal, JournalSettings, NewEntry, service
from bossa.journal.models import MAX_ID, MAX_PAGE, MAX_PAYLOAD_DEPTH
from bossa.journal.settings import MAX_LEASE_MS
from bossa.runtime import Runtime
from tests.support import api_client

LANE = "mine"
BIG = 2**63


@pytest.fixture
async def runtime(journal: Journal, db_url: str) -> AsyncIterator[Runtime]:
    built = Runtime.around(db_url, journal, embedded=False)
    yield built
    await built.deliverer.close()


async def rows(pool: Pool, query: str, params: Any = None) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (await conn.execute(query, params)).fetchall()


async def snapshot(pool: Pool) -> list[list[dict[str, Any]]]:
    """Everything an operator door could write: entries, audit, lanes."""
    return [
        await rows(pool, "select id, lane, state::text, payload, attempts from journal.entries"),
        await rows(pool, "select actor, action, entry_id, lane from journal.audit"),
        await rows(pool, "select lane, owner, settings, updated_by from journal.lanes"),
    ]


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def an_entry(journal: Journal) -> int:
    await journal.declare_lane(LANE, owner="journal")
    return (await journal.enqueue_one(NewEntry(LANE, "k", {"v": 1}, key="SA-1"))).id


def changes(entry_id: int) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("post", "/journal/entries", {"lane": LANE, "kind": "k", "payload": {}}),
        ("post", f"/journal/entries/{entry_id}/park", {"reason": "r"}),
        ("put", f"/journal/entries/{entry_id}/payload", {"payload": {"v": 2}}),
        ("post", f"/journal/entries/{entry_id}/retry", {}),
        ("post", f"/journal/entries/{entry_id}/discard", {"reason": "r"}),
        ("patch", f"/journal/lanes/{LANE}", {"settings": {"max_attempts": 5}}),
    ]


def reads(entry_id: int) -> list[str]:
    return [
        "/journal/entries",
        f"/journal/entries/{entry_id}",
        "/journal/blocked-keys",
        "/journal/stats",
        "/journal/lanes",
        f"/journal/lanes/{LANE}",
    ]


# -- who may call what -------------------------------------------------------------------


async def test_reads_need_journal_read_and_changes_journal_operate(
    runtime: Runtime, journal: Journal, pool: Pool
) -> None:
    entry_id = await an_entry(journal)
    before = await snapshot(pool)
    async with api_client(runtime, role=None) as anonymous:
        for path in reads(entry_id):
            assert (await anonymous.get(path)).status_code == 401, path
        for method, path, body in changes(entry_id):
            answer = await anonymous.request(method, path, json=body)
            assert answer.status_code == 401, path
    async with api_client(runtime, role=Role.FRONT_OFFICE) as front_office:
        for path in reads(entry_id):
            assert (await front_office.get(path)).status_code == 403, path
    for role in (Role.READ_ONLY, Role.BILLING_OPERATOR):
        async with api_client(runtime, role=role) as reader:
            for path in reads(entry_id):
                assert (await reader.get(path)).status_code == 200, (role, path)
            for method, path, body in changes(entry_id):
                answer = await reader.request(method, path, json=body)
                assert answer.status_code == 403, (role, path)
                assert answer.json()["reason"]
    assert await snapshot(pool) == before  # nothing refused wrote anything
    async with api_client(runtime, role=Role.PROVISIONING_OPERATOR) as operator:
        for method, path, body in changes(entry_id):
            answer = await operator.request(method, path, json=body)
            assert answer.status_code in (200, 201), (path, answer.json())


async def test_the_actor_is_the_credential(runtime: Runtime, journal: Journal, pool: Pool) -> None:
    entry_id = await an_entry(journal)
    async with api_client(runtime) as http:
        actor = "token:" + (await http.get("/access/whoami")).json()["name"]
        made = await http.post("/journal/entries", json={"lane": "new", "kind": "k", "payload": 1})
        assert made.status_code == 201
        await http.post(f"/journal/entries/{entry_id}/park", json={"reason": "look"})
        await http.patch(f"/journal/lanes/{LANE}", json={"settings": {"max_attempts": 4}})
        before = await snapshot(pool)
        for method, path, body in changes(entry_id):
            claimed = await http.request(method, path, json={**body, "actor": "mallory"})
            assert claimed.status_code == 422, path
            assert claimed.json()["field"] == "actor"
        assert await snapshot(pool) == before
    created = await rows(
        pool,
        "select e.created_by, l.created_by as lane_by from journal.entries e"
        " join journal.lanes l using (lane) where e.id = %s",
        (made.json()["id"],),
    )
    assert created == [{"created_by": actor, "lane_by": actor}]
    audit = await rows(pool, "select actor, action from journal.audit order by id")
    assert audit == [
        {"actor": actor, "action": "park"},
        {"actor": actor, "action": "set-lane"},
    ]


def bossa(db_url: str, *args: str, actor: str = "ops-kim") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOSSA_")}
    env.update(BOSSA_DATABASE_URL=db_url, BOSSA_ACCESS_CLI_ACTOR=actor)
    return subprocess.run(
        [sys.executable, "-m", "bossa.cli", "journal", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_cli_records_its_principal_and_takes_no_actor(
    journal: Journal, db_url: str, pool: Pool
) -> None:
    entry_id = await an_entry(journal)
    named = await asyncio.to_thread(bossa, db_url, "park", str(entry_id), "--actor", "mallory")
    assert named.returncode == 2
    assert "--actor" in named.stderr
    parked = await asyncio.to_thread(bossa, db_url, "park", str(entry_id), "--reason", "look")
    assert parked.returncode == 0, parked.stderr
    made = await asyncio.to_thread(bossa, db_url, "enqueue", LANE, "k", "{}")
    assert made.returncode == 0, made.stderr
    tuned = await asyncio.to_thread(bossa, db_url, "lane", LANE, "--set", "max_attempts=3")
    assert tuned.returncode == 0, tuned.stderr
    audit = await rows(pool, "select actor, action from journal.audit order by id")
    assert audit == [
        {"actor": "cli:ops-kim", "action": "park"},
        {"actor": "cli:ops-kim", "action": "set-lane"},
    ]
    newest = await rows(pool, "select created_by from journal.entries order by id desc limit 1")
    assert newest == [{"created_by": "cli:ops-kim"}]


# -- lane settings have ranges -----------------------------------------------------------

OUT_OF_RANGE = [
    ("max_attempts", 0),
    ("max_attempts", 1_001),
    ("backoff_base_ms", -1),
    ("backoff_base_ms", 3_600_001),
    ("backoff_base_ms", 10**10),  # passed to journal.fail as a bigint: failed every fail
    ("backoff_max_ms", 7 * 86_400_000 + 1),
    ("lease_ms", 99),
    ("lease_ms", MAX_LEASE_MS + 1),
    ("lease_ms", 10**16),  # past timestamptz: failed every take, and the daemon hung
    ("retention_s", -1),
    ("retention_s", 3650 * 86_400 + 1),
    ("max_payload_bytes", 1),
    ("max_payload_bytes", 16 * 1024 * 1024 + 1),
]


@pytest.mark.parametrize(("setting", "value"), OUT_OF_RANGE)
async def test_a_lane_setting_out_of_range_is_refused_naming_it(
    runtime: Runtime, journal: Journal, pool: Pool, setting: str, value: int
) -> None:
    await journal.declare_lane(LANE, owner="journal")
    before = await snapshot(pool)
    async with api_client(runtime) as http:
        answer = await http.patch(f"/journal/lanes/{LANE}", json={"settings": {setting: value}})
    assert answer.status_code == 422
    assert answer.json()["field"] == f"lane {LANE!r} {setting}"
    assert "must be between" in answer.json()["reason"]
    assert await snapshot(pool) == before


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        *OUT_OF_RANGE,
        ("take_batch", 10_001),
        ("concurrency", 257),
        ("batch_concurrency", 1_001),
        ("poll_interval_s", 0),
        ("poll_interval_s", 3_601),
        ("poll_interval_s", float("inf")),
        ("reap_interval_s", 0.001),
        ("reap_interval_s", 601),
        ("purge_batch", 100_001),
        ("database_outage_s", 0.5),
        ("database_outage_s", 86_401),
    ],
)
def test_a_journal_default_out_of_range_stops_start_up_naming_it(
    setting: str, value: float
) -> None:
    with pytest.raises(ConfigError) as refused:
        config.load(JournalSettings, **{setting: value})
    assert refused.value.field == f"BOSSA_JOURNAL_{setting.upper()}"


def test_backoff_max_below_base_is_refused() -> None:
    with pytest.raises(ConfigError, match="backoff_max_ms must be at least backoff_base_ms"):
        config.load(JournalSettings, backoff_base_ms=5_000, backoff_max_ms=1_000)


async def test_every_setting_at_its_bounds_works(journal: Journal, pool: Pool) -> None:
    """The largest values still compute: a lease, a backoff, a retention cut-off."""
    await journal.declare_lane(LANE, owner="journal")
    await journal.set_policy(
        LANE,
        {
            "max_attempts": 1_000,
            "backoff_base_ms": 3_600_000,
            "backoff_max_ms": 7 * 86_400_000,
            "lease_ms": MAX_LEASE_MS,
            "retention_s": 3650 * 86_400,
            "max_payload_bytes": 16 * 1024 * 1024,
        },
        actor="test",
    )
    first = await journal.enqueue_one(NewEntry(LANE, "k", {}, key="A"))
    claim = await journal.enqueue_or_claim(NewEntry(LANE, "k", {}, key="B"))
    assert claim.go_ahead
    taken = await journal.take(LANE, 10)
    assert taken.ids == [first.id]
    assert await journal.heartbeat(taken.token, LANE, taken.ids) == {first.id}
    # The last retry a lane allows, with the largest backoff: 2^998 times the base,
    # capped at the longest backoff, with no overflow on the way.
    async with pool.connection() as conn:
        await conn.execute("update journal.entries set attempts = 999 where id = %s", (first.id,))
    [result] = await journal.fail(taken.token, LANE, [Failure(first.id, "E", "m")])
    assert result.state == "ready"
    assert result.not_before > datetime.now(UTC) + timedelta(days=5)
    assert await journal.reap_expired(LANE) == []
    assert await service.purge(journal, LANE) == 0
    with pytest.raises(InvalidInput) as huge:
        await journal.take(LANE, 1, lease_ms=MAX_LEASE_MS + 1)
    assert huge.value.field == "lease_ms"


# -- request limits ----------------------------------------------------------------------


async def test_pages_ids_and_ages_are_bounded(runtime: Runtime, journal: Journal) -> None:
    entry_id = await an_entry(journal)
    async with api_client(runtime) as http:
        for path in ("/journal/entries", "/journal/blocked-keys", "/journal/lanes"):
            assert (await http.get(path, params={"limit": MAX_PAGE})).status_code == 200
            too_many = await http.get(path, params={"limit": MAX_PAGE + 1})
            assert (too_many.status_code, too_many.json()["field"]) == (422, "limit"), path
        for after in (MAX_ID, 0):
            ok = await http.get("/journal/entries", params={"after_id": after})
            assert ok.status_code == 200
        for after in (BIG, -1, 10**40):
            page = await http.get("/journal/entries", params={"after_id": after})
            assert (page.status_code, page.json()["field"]) == (422, "after_id")
        for age in ("inf", "nan", "1e300", "-1"):
            old = await http.get("/journal/entries", params={"older_than_s": age})
            assert (old.status_code, old.json()["field"]) == (422, "older_than_s"), age
        for bad_id in (BIG, 10**40, 0, -1):
            shown = await http.get(f"/journal/entries/{bad_id}")
            assert (shown.status_code, shown.json()["field"]) == (422, "entry_id")
            for method, path, body in changes(bad_id)[1:5]:
                answer = await http.request(method, path, json=body)
                assert (answer.status_code, answer.json()["field"]) == (422, "entry_id"), path
        assert (await http.get(f"/journal/entries/{MAX_ID}")).status_code == 404
    assert (await service.show(journal, entry_id)).id == entry_id
    for call in (service.show(journal, BIG), service.park(journal, BIG, actor="kim")):
        with pytest.raises(InvalidInput) as refused:
            await call
        assert refused.value.field == "id"
    with pytest.raises(InvalidInput) as paged:
        await service.lanes(journal, limit=MAX_PAGE + 1)
    assert paged.value.field == "limit"


async def test_nul_bytes_are_refused_naming_the_field(
    runtime: Runtime, journal: Journal, pool: Pool
) -> None:
    entry_id = await an_entry(journal)
    before = await snapshot(pool)
    body = {"lane": LANE, "kind": "k", "payload": {}, "key": "K", "dedup_key": "D"}
    async with api_client(runtime) as http:
        for field in ("lane", "kind", "key", "dedup_key"):
            answer = await http.post("/journal/entries", json={**body, field: "a\x00b"})
            assert answer.status_code == 422, field
            assert answer.json()["field"] == f"entry.{field}"
            assert "NUL" in answer.json()["reason"]
        nul_payload = await http.post("/journal/entries", json={**body, "payload": "a\x00"})
        assert (nul_payload.status_code, nul_payload.json()["field"]) == (422, "entry.payload")
        for method, path, action in changes(entry_id)[1:5]:
            answer = await http.request(method, path, json={**action, "reason": "why\x00"})
            assert (answer.status_code, answer.json()["field"]) == (422, "reason"), path
        for name in ("lane", "state", "key", "error_code"):
            listed = await http.get("/journal/entries", params={name: "a\x00"})
            assert (listed.status_code, listed.json()["field"]) == (422, name)
        blocked = await http.get("/journal/blocked-keys", params={"lane": "a\x00"})
        assert (blocked.status_code, blocked.json()["field"]) == (422, "lane")
        lanes = await http.get("/journal/lanes", params={"after": "a\x00"})
        assert (lanes.status_code, lanes.json()["field"]) == (422, "after")
        for answer in (
            await http.get("/journal/lanes/a%00b"),
            await http.patch("/journal/lanes/a%00b", json={"settings": {"paused": True}}),
        ):
            assert (answer.status_code, answer.json()["field"]) == (422, "lane")
        setting = await http.patch(f"/journal/lanes/{LANE}", json={"settings": {"a\x00": 1}})
        assert setting.status_code == 422
    assert await snapshot(pool) == before
    with pytest.raises(InvalidInput) as refused:
        await service.retry(journal, entry_id, actor="kim", reason="x\x00")
    assert refused.value.field == "reason"


async def test_payload_depth_is_bounded_to_what_reads_back(
    runtime: Runtime, journal: Journal, pool: Pool, db_url: str
) -> None:
    entry_id = await an_entry(journal)
    deepest = await service.enqueue(
        journal, NewEntry(LANE, "k", nested(MAX_PAYLOAD_DEPTH)), actor="kim"
    )
    before = await snapshot(pool)
    for depth in (MAX_PAYLOAD_DEPTH + 1, 300, 100_000):
        with pytest.raises(InvalidInput, match="levels are accepted") as refused:
            await service.enqueue(journal, NewEntry(LANE, "k", nested(depth)), actor="kim")
        assert refused.value.field == "entry.payload"
        with pytest.raises(InvalidInput, match="levels are accepted") as refused:
            await service.edit(journal, entry_id, nested(depth), actor="kim")
        assert refused.value.field == "payload"
        with pytest.raises(InvalidInput, match="levels are accepted"):
            await journal.enqueue([NewEntry(LANE, "k", nested(depth))])
    cli = await asyncio.to_thread(
        bossa, db_url, "enqueue", LANE, "k", json.dumps(nested(MAX_PAYLOAD_DEPTH + 1))
    )
    assert cli.returncode == 2
    assert "payload" in cli.stderr
    assert "levels are accepted" in cli.stderr
    assert await snapshot(pool) == before
    # What was accepted reads back on every page that shows it.
    async with api_client(runtime) as http:
        listed = await http.get("/journal/entries", params={"lane": LANE})
        assert listed.status_code == 200
        assert listed.json()[-1]["payload"] == nested(MAX_PAYLOAD_DEPTH)
        assert (await http.get(f"/journal/entries/{deepest.id}")).status_code == 200
        # Through the API the body around the payload counts too (the app's JSON limit).
        body = {"lane": LANE, "kind": "k", "payload": nested(MAX_PAYLOAD_DEPTH - 1)}
        assert (await http.post("/journal/entries", json=body)).status_code == 201
        body["payload"] = nested(MAX_PAYLOAD_DEPTH)
        too_deep = await http.post("/journal/entries", json=body)
        assert too_deep.status_code == 422


async def test_a_time_outside_what_reads_back_is_refused(journal: Journal) -> None:
    east, west = timezone(timedelta(hours=14)), timezone(timedelta(hours=-5))
    for moment in (datetime(1, 1, 1, tzinfo=east), datetime(9999, 12, 31, 23, tzinfo=west)):
        with pytest.raises(InvalidInput) as refused:
            await journal.enqueue_one(NewEntry(LANE, "k", {}, not_before=moment))
        assert refused.value.field == "entry.not_before"


# -- the generic doors write no module's lane --------------------------------------------


@pytest.mark.parametrize("lane", ["provisioning.AAA", "billing.service"])
async def test_generic_doors_write_nothing_on_a_module_lane(
    runtime: Runtime, journal: Journal, pool: Pool, lane: str
) -> None:
    owner = lane.split(".")[0]
    await journal.declare_lane(lane, owner=owner)  # billing's migration declared its own
    command = await journal.enqueue_one(NewEntry(lane, "cmd", {"sql": "select 1"}, key="SA-1"))
    before = await snapshot(pool)
    async with api_client(runtime) as http:
        made = await http.post(
            "/journal/entries", json={"lane": lane, "kind": "cmd", "payload": {"sql": "drop"}}
        )
        assert (made.status_code, made.json()["field"]) == (403, "lane")
        assert f"belongs to {owner}" in made.json()["reason"]
        rewritten = await http.put(
            f"/journal/entries/{command.id}/payload", json={"payload": {"sql": "FLUSHALL"}}
        )
        assert (rewritten.status_code, rewritten.json()["field"]) == (403, "lane")
    with pytest.raises(Forbidden):
        await service.enqueue(journal, NewEntry(lane, "cmd", {}), actor="kim")
    with pytest.raises(Forbidden):
        await service.edit(journal, command.id, {"sql": "drop"}, actor="kim")
    assert await snapshot(pool) == before
    assert (await service.show(journal, command.id)).payload == {"sql": "select 1"}
