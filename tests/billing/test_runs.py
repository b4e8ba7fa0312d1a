"""Bill runs under issue 11: opened only by the billing role, inside a planned window,
for a period that has begun and is not older than the look-back, with bounded due days;
cancellable (audited) before billing has begun, what was staged then settled as if no
run had been open. And hostile input on every billing and ledger route: NUL bytes,
out-of-range integers and times, all 4xx naming the field."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from bossa.access import Role
from bossa.billing import bill, cancel_run, settle
from bossa.errors import Conflict
from bossa.journal import Journal
from bossa.runtime import Runtime
from tests.billing.conftest import key, month, open_run, plan_window
from tests.support import api_client


@pytest.fixture
async def runtime(journal: Journal, db_url: str, accounts: list[str]) -> AsyncIterator[Runtime]:
    runtime = Runtime.around(db_url, journal, embedded=False)
    yield runtime
    await runtime.deliverer.close()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(runtime, role=Role.BILLING_OPERATOR) as http:
        yield http


def period(p: tuple[date, date], **extra: Any) -> dict[str, Any]:
    return {"period_start": str(p[0]), "period_end": str(p[1]), **extra}


async def state(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.get("/billing/state")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def deposit(client: httpx.AsyncClient, account: str, amount: str) -> dict[str, Any]:
    answer = await client.post(
        "/billing/payments/deposit",
        json={"account": account, "amount": amount, "currency": "KRW"},
        headers={"Idempotency-Key": key()},
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


# -- who may open a run -------------------------------------------------------------------


async def test_only_the_billing_role_opens_runs_and_windows(
    runtime: Runtime, journal: Journal
) -> None:
    window = {
        "bill_cycle": "MONTHLY",
        "planned_start": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "planned_end": (datetime.now(UTC) + timedelta(hours=4)).isoformat(),
    }
    for role in (Role.FRONT_OFFICE, Role.READ_ONLY, Role.PROVISIONING_OPERATOR, Role.PARTNER):
        async with api_client(runtime, role=role) as http:
            assert (await http.post("/billing/windows", json=window)).status_code == 403
            assert (await http.post("/billing/runs", json=period(month(1)))).status_code == 403
            assert (await http.post("/billing/runs/1/cancel")).status_code == 403
    async with api_client(runtime, role=None) as anonymous:
        assert (await anonymous.post("/billing/runs", json=period(month(1)))).status_code == 401
    async with api_client(runtime, role=Role.BILLING_OPERATOR) as billing:
        planned = await billing.post("/billing/windows", json=window)
        assert planned.status_code == 201, planned.text
        started = await billing.post("/billing/runs", json=period(month(1)))
        assert started.status_code == 201, started.text
        shown = (await billing.get(f"/billing/runs/{started.json()['run']}")).json()
    # The audit names the credential, never a name from the body.
    assert shown["started_by"].startswith("token:test-billing-operator-")
    async with journal.pool.connection() as conn:
        row = await (await conn.execute("select created_by from billing.windows")).fetchone()
    assert row is not None
    assert row["created_by"].startswith("token:test-billing-operator-")


# -- the period, the window, the due days ----------------------------------------------------


async def test_a_run_for_2000_01_is_refused_and_payments_stay_online(
    client: httpx.AsyncClient, journal: Journal
) -> None:
    await plan_window(journal.pool)
    answer = await client.post(
        "/billing/runs", json={"period_start": "2000-01-01", "period_end": "2000-01-31"}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "period_end"
    assert "more than 93 days ago" in answer.json()["reason"]
    assert (await state(client))["staging"] is False
    assert (await deposit(client, "A-1001", "1000"))["status"] == "posted"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (period(month(-1)), 422, "period_start"),  # next month: a future period
        (
            period((date.today() + timedelta(days=1), date.today() + timedelta(days=1))),
            422,
            "period_start",
        ),
        (period((month(1)[1], month(1)[0])), 422, "period_end"),  # ends before it starts
        (period((month(14)[0], month(1)[1])), 422, "period_end"),  # over a year long
        (period(month(1), due_days=0), 422, "due_days"),
        (period(month(1), due_days=91), 422, "due_days"),
        (period(month(1), due_days=2**63), 422, "due_days"),
        (period(month(1), planned_end="2001-01-01T00:00:00+00:00"), 422, "planned_end"),
        (period(month(1), planned_end="2999-01-01T00:00:00+00:00"), 422, "planned_end"),
        (period(month(1), planned_end="9999-12-31T23:59:59-23:59"), 422, "planned_end"),
        (period(month(1), planned_end="0001-01-01T00:00:00+14:00"), 422, "planned_end"),
        (period(month(1), bill_cycle="MONTH\x00LY"), 422, "bill_cycle"),
        (period(month(1), bill_cycle="M" * 33), 422, "bill_cycle"),
        (period(month(1), actor="someone"), 422, "actor"),
        ({"period_start": "99999-01-01", "period_end": "2026-01-01"}, 422, "period_start"),
    ],
)
async def test_bad_runs_are_refused_naming_the_field(
    client: httpx.AsyncClient, journal: Journal, body: dict[str, Any], status: int, field: str
) -> None:
    await plan_window(journal.pool)
    answer = await client.post("/billing/runs", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field
    assert (await state(client))["staging"] is False


async def test_a_run_opens_only_inside_a_window_of_its_cycle(
    client: httpx.AsyncClient, journal: Journal
) -> None:
    refused = await client.post("/billing/runs", json=period(month(1)))
    assert refused.status_code == 409, refused.text
    assert refused.json()["field"] == "cycle"
    assert "no bill-run window of the MONTHLY cycle contains now" in refused.json()["reason"]
    # A window of the past does not count (nor can one be planned).
    now = datetime.now(UTC)
    past = {
        "bill_cycle": "MONTHLY",
        "planned_start": (now - timedelta(hours=5)).isoformat(),
        "planned_end": (now - timedelta(hours=1)).isoformat(),
    }
    answer = await client.post("/billing/windows", json=past)
    assert (answer.status_code, answer.json()["field"]) == (422, "planned_end")
    window = await plan_window(journal.pool, hours=6)
    started = await client.post("/billing/runs", json=period(month(1)))
    assert started.status_code == 201, started.text
    shown = (await client.get(f"/billing/runs/{started.json()['run']}")).json()
    async with journal.pool.connection() as conn:
        row = await (
            await conn.execute("select planned_end from billing.windows where id = %s", (window,))
        ).fetchone()
    assert row is not None
    # The run's planned end is its window's, so overrunning it is seen (B5).
    assert datetime.fromisoformat(shown["planned_end"]) == row["planned_end"]
    assert (await state(client))["planned_window"]["id"] == window


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"planned_start": "2026-12-01T00:00:00"}, "planned_start"),  # no UTC offset
        ({"planned_end": "+10000-01-01T00:00:00+00:00"}, "planned_end"),
        ({"planned_start": "1900-01-01T00:00:00+00:00"}, "planned_start"),
        ({"bill_cycle": "MONTHLY\x00"}, "bill_cycle"),
        ({"bill_cycle": "NOPE"}, "cycle"),  # no account bills in it
        ({"planned_end": "later"}, "planned_end"),
    ],
)
async def test_bad_windows_are_refused_naming_the_field(
    client: httpx.AsyncClient, change: dict[str, str], field: str
) -> None:
    now = datetime.now(UTC)
    body = {
        "bill_cycle": "MONTHLY",
        "planned_start": now.isoformat(),
        "planned_end": (now + timedelta(hours=4)).isoformat(),
        **change,
    }
    answer = await client.post("/billing/windows", json=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["field"] == field


async def test_a_window_lasts_at_most_a_week_and_is_planned_within_a_year(
    client: httpx.AsyncClient,
) -> None:
    now = datetime.now(UTC)
    for start, end, field in (
        (now, now + timedelta(days=7, seconds=1), "planned_end"),
        (now + timedelta(days=367), now + timedelta(days=367, hours=4), "planned_start"),
    ):
        answer = await client.post(
            "/billing/windows",
            json={
                "bill_cycle": "MONTHLY",
                "planned_start": start.isoformat(),
                "planned_end": end.isoformat(),
            },
        )
        assert (answer.status_code, answer.json()["field"]) == (422, field), answer.text


async def test_a_billed_period_is_not_billed_again(
    client: httpx.AsyncClient, journal: Journal
) -> None:
    run = await open_run(journal.pool, month(2))
    async with journal.pool.connection() as conn:
        await conn.execute("select billing.bill_chunk(%s, 100, 't')", (run,))
        await conn.execute("update billing.runs set status = 'settling' where id = %s", (run,))
    await settle(journal.pool, run)
    await plan_window(journal.pool)
    # Overlapping the billed month, however shifted, is refused; the next month is fine.
    overlapping = (month(2)[0] + timedelta(days=3), month(1)[1])
    answer = await client.post("/billing/runs", json=period(overlapping))
    assert answer.status_code == 409, answer.text
    assert answer.json()["field"] == "period_start"
    assert f"bill run {run} of the MONTHLY cycle covers" in answer.json()["reason"]
    assert (await client.post("/billing/runs", json=period(month(1)))).status_code == 201


# -- cancelling a run ---------------------------------------------------------------------


async def test_cancel_before_billing_settles_what_was_staged(
    client: httpx.AsyncClient, journal: Journal, db_url: str
) -> None:
    await plan_window(journal.pool)
    started = await client.post("/billing/runs", json=period(month(1)))
    run = started.json()["run"]
    staged = await deposit(client, "A-1001", "70000")
    assert staged["status"] == "staged"
    cancelled = await client.post(f"/billing/runs/{run}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json() == {"run": run, "status": "cancelled", "staged_applied": 1}
    # As if no run had been open: the deposit is on the online books; payments post again.
    assert (await state(client))["staging"] is False
    shown = (await client.get("/ledger/accounts/A-1001")).json()
    assert (shown["available"], shown["staged"]) == (70_000, {"deposits": 0, "writeoffs": 0})
    assert (await deposit(client, "A-1001", "1"))["status"] == "posted"
    status = (await client.get(f"/billing/runs/{run}")).json()
    assert status["status"] == "cancelled"
    assert status["cancelled_by"].startswith("token:test-billing-operator-")
    assert status["cancelled_at"] is not None
    with psycopg.connect(db_url) as conn:
        left = conn.execute(
            "select (select count(*) from billing.run_accounts where run_id = %(r)s)"
            " + (select count(*) from billing.snapshots where run_id = %(r)s)",
            {"r": run},
        ).fetchone()
    assert left == (0,)
    # Again: the same answer, nothing more applied. Reconciling it: nothing to reconcile.
    again = await client.post(f"/billing/runs/{run}/cancel")
    assert again.json() == {"run": run, "status": "cancelled", "staged_applied": 0}
    assert (await client.get(f"/billing/runs/{run}/reconcile")).status_code == 409
    # The period is free for a run that will bill it.
    assert (await client.post("/billing/runs", json=period(month(1)))).status_code == 201


async def test_cancel_is_refused_once_billing_has_begun(
    client: httpx.AsyncClient, journal: Journal
) -> None:
    run = await open_run(journal.pool, month(1))
    async with journal.pool.connection() as conn:
        await conn.execute("select billing.bill_chunk(%s, 1, 't')", (run,))
    refused = await client.post(f"/billing/runs/{run}/cancel")
    assert refused.status_code == 409, refused.text
    assert refused.json()["field"] == "run"
    assert "1 accounts billed" in refused.json()["reason"]
    assert (await state(client))["run_status"] == "running"


async def test_cancel_waits_for_a_chunk_under_way(
    journal: Journal, db_url: str, accounts: list[str]
) -> None:
    """A chunk that is billing while the cancellation comes: the cancellation waits for
    it, sees its bills, and refuses; no chunk bills after a cancellation."""
    run = await open_run(journal.pool, month(1))
    async with await psycopg.AsyncConnection.connect(db_url) as worker:
        await worker.execute("select billing.bill_chunk(%s, 2, 't')", (run,))  # not committed
        cancelling = asyncio.create_task(cancel_run(journal.pool, run, actor="t"))
        await asyncio.sleep(0.3)
        assert not cancelling.done()
        await worker.commit()
    with pytest.raises(Conflict, match="2 accounts billed"):
        await cancelling


async def test_no_chunk_bills_after_a_cancellation(journal: Journal, accounts: list[str]) -> None:
    run = await open_run(journal.pool, month(1))
    assert (await cancel_run(journal.pool, run, actor="t"))["status"] == "cancelled"
    async with journal.pool.connection() as conn:
        row = await (
            await conn.execute("select billed as n from billing.bill_chunk(%s, 100, 't')", (run,))
        ).fetchone()
        bills = await (
            await conn.execute(
                "select count(*) as n from ledger.bills where bill_run_id = %s", (run,)
            )
        ).fetchone()
    assert row == {"n": 0}
    assert bills == {"n": 0}


async def test_cancel_of_a_settled_run_is_refused(
    client: httpx.AsyncClient, journal: Journal
) -> None:
    run = await open_run(journal.pool, month(1))
    await bill(journal.pool, run)
    refused = await client.post(f"/billing/runs/{run}/cancel")
    assert (refused.status_code, refused.json()["field"]) == (409, "run")
    assert "settling" in refused.json()["reason"]
    await settle(journal.pool, run)
    refused = await client.post(f"/billing/runs/{run}/cancel")
    assert (refused.status_code, refused.json()["field"]) == (409, "run")


async def test_the_cli_cancels_and_records_who(
    db_url: str, journal: Journal, accounts: list[str]
) -> None:
    run = await open_run(journal.pool, month(1))
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bossa.cli", "billing", "run", "cancel", str(run)],
        env={**os.environ, "BOSSA_DATABASE_URL": db_url, "BOSSA_ACCESS_CLI_ACTOR": "ops-kim"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"bill run {run} cancelled; 0 staged items applied" in done.stdout
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "select status, cancelled_by from billing.runs where id = %s", (run,)
        ).fetchone()
    assert row == ("cancelled", "cli:ops-kim")


# -- hostile input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "params", "field"),
    [
        ("GET", "/ledger/accounts/A%00", None, "account"),
        ("GET", "/ledger/accounts/" + "A" * 65, None, "account"),
        (
            "GET",
            "/billing/authorize",
            {"account": "A\x00", "amount": "1", "currency": "KRW"},
            "account",
        ),
        (
            "GET",
            "/billing/authorize",
            {"account": "A-1001", "amount": "1", "currency": "K\x00W"},
            "currency",
        ),
        (
            "GET",
            "/billing/authorize",
            {"account": "A-1001", "amount": "1\x00", "currency": "KRW"},
            "amount",
        ),
        (
            "GET",
            "/billing/authorize",
            {"account": "A-1001", "amount": "1e999", "currency": "KRW"},
            "amount",
        ),
        ("GET", "/billing/runs/9223372036854775808", None, "run"),
        ("GET", "/billing/runs/0", None, "run"),
        ("GET", "/billing/runs/-1/reconcile", None, "run"),
        ("POST", "/billing/runs/99999999999999999999/cancel", None, "run"),
        ("GET", "/billing/runs/1/reconcile", {"limit": "0"}, "limit"),
        ("GET", "/billing/runs/1/reconcile", {"limit": "10001"}, "limit"),
    ],
)
async def test_hostile_parameters_are_4xx_naming_the_field(
    runtime: Runtime, method: str, path: str, params: dict[str, str] | None, field: str
) -> None:
    async with api_client(runtime) as http:
        answer = await http.request(method, path, params=params)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"account": "A-1001\x00", "amount": "1", "currency": "KRW"}, "account"),
        ({"account": "A-1001", "amount": "1", "currency": "KR\x00"}, "currency"),
        ({"account": "A-1001", "amount": "1\x00", "currency": "KRW"}, "amount"),
        ({"account": "A-1001", "amount": 2**64, "currency": "KRW"}, "amount"),
        ({"account": "A-1001", "amount": "9" * 5000, "currency": "KRW"}, "amount"),
        ({"account": "A-1001", "amount": ["1"], "currency": "KRW"}, "amount"),
    ],
)
async def test_hostile_payments_are_4xx_naming_the_field(
    runtime: Runtime, journal: Journal, body: dict[str, Any], field: str
) -> None:
    async with api_client(runtime) as http:
        answer = await http.post(
            "/billing/payments/deposit", json=body, headers={"Idempotency-Key": key()}
        )
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
