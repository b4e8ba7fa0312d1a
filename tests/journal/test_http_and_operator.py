"""The operator's actions through HTTP: list, show, edit, retry, park, discard, audit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bossa.access import Role
from bossa.journal import Failure, Journal, NewEntry
from bossa.runtime import Runtime
from tests.support import api_client


@pytest.fixture
async def client(journal: Journal, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime.around(db_url, journal, embedded=False)
    async with api_client(runtime, role=Role.PROVISIONING_OPERATOR) as http:
        yield http
    await runtime.deliverer.close()


async def park_one(journal: Journal) -> int:
    entry = await journal.enqueue_one(NewEntry("aaa", "cmd", {"v": 1}, key="SA-1"))
    await journal.enqueue_one(NewEntry("aaa", "cmd", {"v": 2}, key="SA-1"))
    await journal.declare_lane("aaa", owner="journal")
    await journal.set_policy("aaa", {"max_attempts": 1}, actor="test")
    taken = await journal.take("aaa", 1)
    await journal.fail(taken.token, "aaa", [Failure(entry.id, "ORA-00001", "unique constraint")])
    return entry.id


async def test_operator_flow_over_http(client: httpx.AsyncClient, journal: Journal) -> None:
    parked = await park_one(journal)
    listed = (await client.get("/journal/entries", params={"state": "parked"})).json()
    assert [row["id"] for row in listed] == [parked]
    assert listed[0]["last_error"]["code"] == "ORA-00001"
    by_code = await client.get("/journal/entries", params={"error_code": "ORA-00001"})
    assert [row["id"] for row in by_code.json()] == [parked]
    blocked = (await client.get("/journal/blocked-keys")).json()
    assert [(b["key"], b["head_id"], b["unfinished"]) for b in blocked] == [("SA-1", parked, 2)]

    edited = await client.put(
        f"/journal/entries/{parked}/payload",
        json={"reason": "fix", "payload": {"v": 10}},
    )
    assert edited.status_code == 200
    retried = await client.post(f"/journal/entries/{parked}/retry", json={})
    assert retried.json()["state"] == "ready"
    taken = await journal.take("aaa", 10)
    assert [e.payload for e in taken.entries] == [{"v": 10}]
    await journal.ack(taken.token, taken.ids)

    nxt = (await client.get("/journal/entries", params={"key": "SA-1", "state": "ready"})).json()
    assert len(nxt) == 1
    parked_again = await client.post(f"/journal/entries/{nxt[0]['id']}/park", json={})
    assert parked_again.status_code == 200
    no_reason = await client.post(f"/journal/entries/{nxt[0]['id']}/discard", json={})
    assert no_reason.status_code == 422
    assert no_reason.json()["field"] == "reason"
    gone = await client.post(
        f"/journal/entries/{nxt[0]['id']}/discard", json={"reason": "duplicate"}
    )
    assert gone.status_code == 200

    shown = (await client.get(f"/journal/entries/{parked}")).json()
    assert [a["action"] for a in shown["audit"]] == ["edit", "retry"]
    # The actor is the credential's name, never one the body gives.
    assert {a["actor"] for a in shown["audit"]} == {"token:" + (await whoami(client))}
    assert shown["audit"][0]["before"]["payload"] == {"v": 1}
    assert shown["state"] == "done"
    assert (await client.get("/journal/blocked-keys")).json() == []


async def test_http_errors_name_the_field(client: httpx.AsyncClient, journal: Journal) -> None:
    missing = await client.get("/journal/entries/999999")
    assert missing.status_code == 404
    assert missing.json()["field"] == "id"
    bad_state = await client.get("/journal/entries", params={"state": "lost"})
    assert bad_state.status_code == 422
    assert "unknown state" in bad_state.json()["error"]
    empty_lane = await client.post(
        "/journal/entries", json={"lane": "", "kind": "k", "payload": {}}
    )
    assert empty_lane.status_code == 422
    assert empty_lane.json()["field"] == "entry.lane"
    await journal.declare_lane("aaa", owner="journal")
    bad_setting = await client.patch("/journal/lanes/aaa", json={"settings": {"max_tries": 2}})
    assert bad_setting.status_code == 422
    assert "max_tries" in bad_setting.json()["error"]
    taken_entry = await journal.enqueue_one(NewEntry("x", "k", {}))
    await journal.take("x", 1)
    in_flight = await client.post(
        f"/journal/entries/{taken_entry.id}/discard", json={"reason": "r"}
    )
    assert in_flight.status_code == 409
    assert "in flight" in in_flight.json()["error"]


async def whoami(client: httpx.AsyncClient) -> str:
    name: str = (await client.get("/access/whoami")).json()["name"]
    return name
