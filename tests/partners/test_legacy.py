"""The legacy cooperation processor (O3): REST and SOAP systems in processes of their own,
a SQL system on PostgreSQL; each call under its timeout; a breaker that stops calling a
failing system and tries again after its reset time."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import pytest
from psycopg.conninfo import conninfo_to_dict

from bossa.access import Role
from bossa.partners import PartnersSettings, SystemRequest, platform, set_system
from bossa.partners.adapters import LegacyError
from bossa.partners.models import SystemKind
from bossa.runtime import Runtime
from tests.partners.conftest import seed_legacy
from tests.partners.servers import LegacyServer
from tests.support import TEST_PASSWORDS, api_client


async def test_rest_and_soap_calls_are_applied_once_per_key(
    runtime: Runtime, legacy: LegacyServer
) -> None:
    await seed_legacy(runtime, legacy)
    plat = platform(runtime.pool, runtime.journal)
    sms = await plat.call("sms", "send_sms", {"to": "+4911", "text": "hello"}, key="t1:a")
    assert sms["message_id"].startswith("m-")
    await plat.call("sms", "send_sms", {"to": "+4911", "text": "hello"}, key="t1:a")
    where = await plat.call("location", "locate", {"msisdn": "+49123"}, key="t1:b")
    assert where == {"cell": "CELL-123", "found": "true"}
    calls = [c for c in legacy.calls() if c["key"] in ("t1:a", "t1:b")]
    assert [(c["kind"], c["key"]) for c in calls] == [("sms", "t1:a"), ("locate", "t1:b")]


async def test_timeouts_and_refusals(runtime: Runtime, legacy: LegacyServer) -> None:
    await seed_legacy(runtime, legacy, timeout_ms=300)
    plat = platform(runtime.pool, runtime.journal)
    with pytest.raises(LegacyError) as slow:
        await plat.call("sms", "send_sms", {"to": "+4911", "text": "SLOW"}, key="t2:a")
    assert (slow.value.code, slow.value.unreachable) == ("TIMEOUT", True)
    with pytest.raises(LegacyError) as soap_slow:
        await plat.call("location", "locate", {"msisdn": "SLOW"}, key="t2:b")
    assert soap_slow.value.code == "TIMEOUT"
    with pytest.raises(LegacyError) as fault:
        await plat.call("location", "locate", {"msisdn": "FAIL"}, key="t2:c")
    assert (fault.value.code, fault.value.unreachable) == ("Server", True)
    with pytest.raises(LegacyError) as missing:
        await plat.call("fax", "send", {}, key="t2:d")
    assert missing.value.code == "NO_SYSTEM"


async def test_the_breaker_opens_and_recovers(runtime: Runtime, legacy: LegacyServer) -> None:
    await seed_legacy(runtime, legacy)
    plat = platform(
        runtime.pool, runtime.journal, PartnersSettings(breaker_threshold=2, breaker_reset_s=0.5)
    )
    for n in range(2):
        with pytest.raises(LegacyError) as failed:
            await plat.call("sms", "send_sms", {"to": "+49", "text": "FAIL"}, key=f"t3:{n}")
        assert failed.value.code == "HTTP500"
    before = len(legacy.calls())
    with pytest.raises(LegacyError) as open_:
        await plat.call("sms", "send_sms", {"to": "+49", "text": "fine"}, key="t3:x")
    assert open_.value.code == "BREAKER_OPEN"
    assert len(legacy.calls()) == before  # not called while open
    # The location system has a breaker of its own: unaffected.
    await plat.call("location", "locate", {"msisdn": "+49555"}, key="t3:y")
    await asyncio.sleep(0.6)
    await plat.call("sms", "send_sms", {"to": "+49", "text": "fine"}, key="t3:z")  # half-open
    assert (await plat.system("sms")).breaker.state == "closed"


def _url(conninfo: str) -> str:
    if conninfo.startswith("postgres"):
        return conninfo
    parts = conninfo_to_dict(conninfo)
    query = urlencode({k: v for k, v in parts.items() if k != "dbname" and v is not None})
    return f"postgresql:///{parts.get('dbname', '')}?{query}"


async def test_a_sql_system_binds_values_under_a_timeout(runtime: Runtime, db_url: str) -> None:
    await set_system(
        runtime.pool,
        SystemRequest(
            role="location",
            kind=SystemKind.SQL,
            url=_url(db_url),
            timeout_ms=300,
            statements={
                "locate": "select 'CELL-' || right(%(msisdn)s, 3) as cell, true as found",
                "slow": "select pg_sleep(2)",
            },
        ),
        actor="t",
    )
    plat = platform(runtime.pool, runtime.journal)
    hostile = "'; drop table partners.runs; --123"
    assert await plat.call("location", "locate", {"msisdn": hostile}, key="k") == {
        "cell": "CELL-" + hostile[-3:],
        "found": True,
    }
    with pytest.raises(LegacyError) as slow:
        await plat.call("location", "slow", {}, key="k2")
    assert (slow.value.code, slow.value.unreachable) == ("TIMEOUT", True)
    async with runtime.pool.connection() as conn:  # the hostile value was a value, not SQL
        assert await (await conn.execute("select count(*) as n from partners.runs")).fetchone()


async def test_the_infra_channel_runs_one_object_for_a_legacy_system(
    runtime: Runtime, legacy: LegacyServer
) -> None:
    await seed_legacy(runtime, legacy)
    async with api_client(runtime) as http:
        found = await http.post(
            "/partners/objects/device.locate", json={"input": {"msisdn": "+49777"}}
        )
        assert found.status_code == 200, found.text
        assert found.json() == {
            "object": "device.locate",
            "output": {"cell": "CELL-777", "found": True},
        }
        compared = await http.post(
            "/partners/objects/compare", json={"input": {"left": 3, "op": "lt", "right": 4}}
        )
        assert compared.json()["output"] == {"result": True}
        cases = [
            ("fax.send", {"to": "1"}, 422, "object"),
            ("branch", {"condition": True}, 422, "object"),
            ("device.locate", {}, 422, "input.msisdn"),
            ("device.locate", {"msisdn": 5}, 422, "input.msisdn"),
            ("compare", {"left": "a", "op": "lt", "right": "b"}, 422, "input.op"),
            ("device.locate", {"msisdn": "FAIL"}, 502, "object"),
        ]
        for name, data, status, field in cases:
            answer = await http.post(f"/partners/objects/{name}", json={"input": data})
            assert answer.status_code == status, (name, answer.text)
            assert answer.json()["field"] == field, (name, answer.json())
    async with api_client(runtime, role=Role.PARTNER) as http:
        refused = await http.post("/partners/objects/compare", json={"input": {}})
        assert refused.status_code == 403
    async with runtime.pool.connection() as conn:
        row = await (
            await conn.execute(
                "select count(*) as n from journal.lane_entries where lane = 'partners.billing'"
            )
        ).fetchone()
    assert row is not None
    assert row["n"] == 0  # the infra channel bills nothing


async def test_a_system_password_never_shows(runtime: Runtime) -> None:
    secret = TEST_PASSWORDS[0]
    async with api_client(runtime) as http:
        answer = await http.put(
            "/partners/systems",
            json={
                "role": "location",
                "kind": "sql",
                "url": f"postgresql://lbs:{secret}@127.0.0.1:1/lbs",
                "statements": {"locate": "select 1"},
            },
        )
        assert answer.status_code == 200, answer.text
        listed = await http.get("/partners/systems")
    assert secret not in answer.text
    assert secret not in listed.text
    assert listed.json()[0]["url"] == "postgresql://lbs:***@127.0.0.1:1/lbs"
