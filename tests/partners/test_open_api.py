"""The open interface (O2): partners run their own templates only, within their rate
limits and quotas; a revoked credential is refused at once; bad input is a 4xx naming the
field, and then nothing ran and nothing was billed."""

from __future__ import annotations

import asyncio

from bossa.access import Role, revoke_token
from bossa.partners import PartnersSettings, platform
from bossa.partners.lanes import RunDaemon
from bossa.runtime import Runtime
from tests.partners.conftest import NOTIFY, seed_legacy, seed_partner, seed_subscriber
from tests.partners.servers import LegacyServer
from tests.support import api_client, bearer


async def _counts(runtime: Runtime) -> tuple[int, int]:
    """(runs, billing logs): what a refused request must leave unchanged."""
    async with runtime.pool.connection() as conn:
        runs = await (await conn.execute("select count(*) as n from partners.runs")).fetchone()
        logs = await (
            await conn.execute(
                "select count(*) as n from journal.lane_entries where lane = 'partners.billing'"
            )
        ).fetchone()
    assert runs is not None
    assert logs is not None
    return int(runs["n"]), int(logs["n"])


async def test_a_partner_runs_its_own_template_and_it_is_billed(runtime: Runtime) -> None:
    await seed_partner(runtime, "acme", template="check")
    await seed_subscriber(runtime, "c1")
    headers = await bearer(runtime.pool, Role.PARTNER, name="acme")
    async with api_client(runtime, role=None) as http:
        answer = await http.post(
            "/partners/templates/check/runs",
            json={"input": {"subscriber": "c1", "amount": 5000}},
            headers=headers,
        )
        assert answer.status_code == 200, answer.text
        run = answer.json()
        assert run["state"] == "done"
        assert run["output"] == {"status": "active", "big": True}
        assert run["partner"] == "acme"
        assert run["version"] == 1
        again = await http.get(f"/partners/runs/{run['id']}", headers=headers)
        assert again.json()["output"] == run["output"]
        unknown = await http.post(
            "/partners/templates/check/runs",
            json={"input": {"subscriber": "nobody", "amount": 1}},
            headers=headers,
        )
        assert unknown.json()["output"] == {"status": "unknown", "big": False}
    assert await _counts(runtime) == (2, 2)


async def test_a_partner_cannot_run_or_see_another_partners_template(runtime: Runtime) -> None:
    await seed_partner(runtime, "acme", template="check")
    await seed_partner(runtime, "globex", template="theirs")
    globex = await bearer(runtime.pool, Role.PARTNER, name="globex")
    async with api_client(runtime, role=None) as http:
        run = await http.post(
            "/partners/templates/check/runs",
            json={"input": {"subscriber": "c1", "amount": 5}},
            headers=globex,
        )
        assert run.status_code == 404
        assert run.json()["field"] == "template"
        shown = await http.get("/partners/templates/check", headers=globex)
        assert shown.status_code == 404
        listed = await http.get("/partners/templates", headers=globex)
        assert [t["name"] for t in listed.json()] == ["theirs"]
        other = await http.get("/partners/templates?partner=acme", headers=globex)
        assert other.status_code == 403
    assert await _counts(runtime) == (0, 0)


async def test_run_results_are_the_callers_only(runtime: Runtime) -> None:
    await seed_partner(runtime, "acme", template="check")
    await seed_partner(runtime, "globex", template="theirs")
    acme = await bearer(runtime.pool, Role.PARTNER, name="acme")
    globex = await bearer(runtime.pool, Role.PARTNER, name="globex")
    async with api_client(runtime, role=None) as http:
        run = await http.post(
            "/partners/templates/check/runs",
            json={"input": {"subscriber": "c1", "amount": 5}},
            headers=acme,
        )
        peek = await http.get(f"/partners/runs/{run.json()['id']}", headers=globex)
        assert peek.status_code == 404


async def test_daily_quota_is_never_exceeded(runtime: Runtime) -> None:
    await seed_partner(runtime, "acme", template="check", daily_quota=3)
    headers = await bearer(runtime.pool, Role.PARTNER, name="acme")
    body = {"input": {"subscriber": "c1", "amount": 5}}
    async with api_client(runtime, role=None) as http:
        codes = [
            (await http.post("/partners/templates/check/runs", json=body, headers=headers))
            for _ in range(5)
        ]
    assert [c.status_code for c in codes] == [200, 200, 200, 429, 429]
    assert codes[3].json()["field"] == "template"
    assert "daily quota of 3" in codes[3].json()["reason"]
    assert await _counts(runtime) == (3, 3)


async def test_partner_quota_counts_all_its_templates(runtime: Runtime) -> None:
    await seed_partner(runtime, "acme", template="check", partner_quota=2)
    headers = await bearer(runtime.pool, Role.PARTNER, name="acme")
    body = {"input": {"subscriber": "c1", "amount": 5}}
    async with api_client(runtime, role=None) as http:
        codes = [
            (await http.post("/partners/templates/check/runs", json=body, headers=headers))
            for _ in range(3)
        ]
    assert [c.status_code for c in codes] == [200, 200, 429]
    assert codes[2].json()["field"] == "partner"


async def test_rate_limit_per_template(runtime: Runtime) -> None:
    await seed_partner(runtime, "acme", template="check", rate_per_s=2)
    headers = await bearer(runtime.pool, Role.PARTNER, name="acme")
    body = {"input": {"subscriber": "c1", "amount": 5}}
    async with api_client(runtime, role=None) as http:
        codes = [
            (await http.post("/partners/templates/check/runs", json=body, headers=headers))
            for _ in range(3)
        ]
    assert [c.status_code for c in codes] == [200, 200, 429]
    assert codes[2].json()["field"] == "template"
    assert await _counts(runtime) == (2, 2)


async def test_a_revoked_credential_is_refused_at_once(runtime: Runtime) -> None:
    await seed_partner(runtime, "acme", template="check")
    headers = await bearer(runtime.pool, Role.PARTNER, name="acme")
    body = {"input": {"subscriber": "c1", "amount": 5}}
    async with api_client(runtime, role=None) as http:
        first = await http.post("/partners/templates/check/runs", json=body, headers=headers)
        assert first.status_code == 200
        await revoke_token(runtime.pool, "acme", actor="test")
        second = await http.post("/partners/templates/check/runs", json=body, headers=headers)
        assert second.status_code == 401
    assert await _counts(runtime) == (1, 1)


async def test_bad_input_names_the_field_and_nothing_runs(runtime: Runtime) -> None:
    await seed_partner(runtime, "acme", template="check")
    headers = await bearer(runtime.pool, Role.PARTNER, name="acme")
    cases = [
        ("nope", {"input": {"subscriber": "c1", "amount": 5}}, 404, "template"),
        ("check", {"input": {"subscriber": "c1", "amount": "5"}}, 422, "input.amount"),
        ("check", {"input": {"subscriber": "c1"}}, 422, "input.amount"),
        ("check", {"input": {"subscriber": "c1", "amount": 5, "x": 1}}, 422, "input.x"),
        ("check", {"input": {"subscriber": "c1", "amount": 10**9}}, 422, "input.amount"),
        ("check", {}, 422, "input"),
        ("check", {"input": {"subscriber": "c" * 20_000, "amount": 5}}, 422, "input"),
        ("Bad Name", {"input": {}}, 422, "name"),
    ]
    async with api_client(runtime, role=None) as http:
        for template, body, status, field in cases:
            answer = await http.post(
                f"/partners/templates/{template}/runs", json=body, headers=headers
            )
            assert answer.status_code == status, (template, body, answer.text)
            assert answer.json()["field"] == field, (template, body, answer.json())
        huge = await http.post(
            "/partners/templates/check/runs",
            content=b'{"input": {"subscriber": "' + b"x" * 2_000_000 + b'", "amount": 5}}',
            headers={**headers, "Content-Type": "application/json"},
        )
        assert huge.status_code == 413
    assert await _counts(runtime) == (0, 0)


async def test_async_runs_are_queued_then_done_and_billed(runtime: Runtime) -> None:
    await seed_partner(runtime, "acme", template="check")
    await seed_subscriber(runtime, "c1")
    headers = await bearer(runtime.pool, Role.PARTNER, name="acme")
    async with api_client(runtime, role=None) as http:
        accepted = await http.post(
            "/partners/templates/check/runs?mode=async",
            json={"input": {"subscriber": "c1", "amount": 5}},
            headers=headers,
        )
        assert accepted.status_code == 202, accepted.text
        location = accepted.headers["Location"]
        assert (await http.get(location, headers=headers)).json()["state"] == "queued"
        assert await _counts(runtime) == (1, 0)
        await RunDaemon(platform(runtime.pool, runtime.journal)).run(once=True)
        done = (await http.get(location, headers=headers)).json()
        assert done["state"] == "done"
        assert done["output"] == {"status": "active", "big": False}
    assert await _counts(runtime) == (1, 1)


async def test_a_token_revoked_while_its_row_is_cached_runs_nothing(runtime: Runtime) -> None:
    # The run route reuses a token row read less than a second ago (a deferred principal);
    # the transaction that writes the run confirms the token, so a revocation committed
    # before the request still refuses it, and nothing is written or billed.
    await seed_partner(runtime, "acme", template="check")
    await seed_subscriber(runtime, "c1")
    headers = await bearer(runtime.pool, Role.PARTNER, name="acme")
    body = {"input": {"subscriber": "c1", "amount": 5}}
    async with api_client(runtime, role=None) as http:
        assert (
            await http.post("/partners/templates/check/runs", json=body, headers=headers)
        ).is_success
        await revoke_token(runtime.pool, "acme", actor="test")
        cached = await runtime.authenticator.authenticate(headers["Authorization"], deferred=True)
        assert not cached.confirmed  # the row was not read again: the write must refuse it
        refused = await http.post("/partners/templates/check/runs", json=body, headers=headers)
        assert refused.status_code == 401, refused.text
        # Every other route reads the row on every request.
        listed = await http.get("/partners/templates", headers=headers)
        assert listed.status_code == 401
    assert await _counts(runtime) == (1, 1)


async def test_a_cached_token_id_with_a_wrong_secret_is_refused(runtime: Runtime) -> None:
    await seed_partner(runtime, "acme", template="check")
    headers = await bearer(runtime.pool, Role.PARTNER, name="acme")
    body = {"input": {"subscriber": "c1", "amount": 5}}
    token = headers["Authorization"]
    forged = {"Authorization": token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")}
    async with api_client(runtime, role=None) as http:
        assert (
            await http.post("/partners/templates/check/runs", json=body, headers=headers)
        ).is_success
        refused = await http.post("/partners/templates/check/runs", json=body, headers=forged)
        assert refused.status_code == 401
    assert await _counts(runtime) == (1, 1)


async def test_a_revoked_token_reaches_no_legacy_system(
    runtime: Runtime, legacy: LegacyServer
) -> None:
    # A template that calls a legacy system confirms the token before its first step.
    await seed_partner(runtime, "acme", template="notify", definition=NOTIFY)
    await seed_legacy(runtime, legacy)
    await seed_subscriber(runtime, "c1")
    headers = await bearer(runtime.pool, Role.PARTNER, name="acme")
    body = {"input": {"subscriber": "c1", "msisdn": "+4970000123", "text": "hello"}}
    async with api_client(runtime, role=None) as http:
        first = await http.post("/partners/templates/notify/runs", json=body, headers=headers)
        assert first.status_code == 200, first.text
        sent = [c for c in legacy.calls() if c.get("to") == "+4970000123"]
        await revoke_token(runtime.pool, "acme", actor="test")
        refused = await http.post("/partners/templates/notify/runs", json=body, headers=headers)
        assert refused.status_code == 401
    assert [c for c in legacy.calls() if c.get("to") == "+4970000123"] == sent
    assert await _counts(runtime) == (1, 1)


async def test_quota_is_exact_under_concurrent_runs(runtime: Runtime) -> None:
    # Concurrent requests share the group commit and the process's quota block: exactly
    # the quota's runs are answered 200, written and billed; the rest 429, nothing run.
    await seed_partner(runtime, "acme", template="check", daily_quota=7)
    await seed_subscriber(runtime, "c1")
    headers = await bearer(runtime.pool, Role.PARTNER, name="acme")
    body = {"input": {"subscriber": "c1", "amount": 5}}
    async with api_client(runtime, role=None) as http:
        answers = await asyncio.gather(
            *(
                http.post("/partners/templates/check/runs", json=body, headers=headers)
                for _ in range(20)
            )
        )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 7 + [429] * 13
    ids = {a.json()["id"] for a in answers if a.status_code == 200}
    assert len(ids) == 7
    # The subscriber lookups were coalesced, each run still got its own answer.
    outputs = [a.json()["output"] for a in answers if a.status_code == 200]
    assert outputs == [{"status": "active", "big": False}] * 7
    assert await _counts(runtime) == (7, 7)


async def _reserved(runtime: Runtime, template: str) -> int:
    async with runtime.pool.connection() as conn:
        row = await (
            await conn.execute(
                "select coalesce(sum(reserved), 0) as n from partners.usage where template = %s",
                (template,),
            )
        ).fetchone()
    assert row is not None
    return int(row["n"])


async def _settled(runtime: Runtime) -> None:
    """Until no quota reservation of the process is under way."""
    plat = platform(runtime.pool, runtime.journal)
    for _ in range(500):
        if all(q.refill is None for q in plat.quotas.values()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a quota reservation did not finish")


async def test_the_next_quota_block_is_reserved_before_this_one_runs_out(
    runtime: Runtime,
) -> None:
    # Blocks of 10: the first run reserves one; when half of it is left the next is
    # reserved in the background, so that no later run waits for a reservation.
    platform(runtime.pool, runtime.journal, PartnersSettings(quota_block=10))
    await seed_partner(runtime, "acme", template="check")
    await seed_subscriber(runtime, "c1")
    headers = await bearer(runtime.pool, Role.PARTNER, name="acme")
    body = {"input": {"subscriber": "c1", "amount": 5}}
    reserved = []
    async with api_client(runtime, role=None) as http:
        for _ in range(16):
            answer = await http.post("/partners/templates/check/runs", json=body, headers=headers)
            assert answer.status_code == 200, answer.text
            await _settled(runtime)
            reserved.append(await _reserved(runtime, "check"))
    # 1-4 runs: the first block; the 5th leaves 5 and reserves the second; the 15th the third.
    assert reserved == [10] * 4 + [20] * 10 + [30] * 2
    assert await _counts(runtime) == (16, 16)


async def test_reserving_ahead_never_reserves_past_the_quota(runtime: Runtime) -> None:
    platform(runtime.pool, runtime.journal, PartnersSettings(quota_block=10))
    await seed_partner(runtime, "acme", template="check", daily_quota=12)
    await seed_subscriber(runtime, "c1")
    headers = await bearer(runtime.pool, Role.PARTNER, name="acme")
    body = {"input": {"subscriber": "c1", "amount": 5}}
    codes = []
    async with api_client(runtime, role=None) as http:
        for _ in range(14):
            answer = await http.post("/partners/templates/check/runs", json=body, headers=headers)
            codes.append(answer.status_code)
            await _settled(runtime)
            assert await _reserved(runtime, "check") <= 12
    assert codes == [200] * 12 + [429] * 2
    assert await _counts(runtime) == (12, 12)
