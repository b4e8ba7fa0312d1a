"""Billing and the ledger through HTTP, with a credential: accounts, payments with
Idempotency-Key, bad input answered 4xx naming the field with nothing booked, the
bill-period state, a run's progress and its reconciliation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from bossa.billing import bill, settle
from bossa.customers import load_sample
from bossa.journal import Journal
from bossa.runtime import Runtime
from tests.billing.conftest import month, plan_window
from tests.support import api_client


@pytest.fixture
async def runtime(journal: Journal, db_url: str) -> AsyncIterator[Runtime]:
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    runtime = Runtime.around(db_url, journal, embedded=False)
    yield runtime
    await runtime.deliverer.close()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(runtime) as http:
        for n in range(1001, 1005):
            opened = await http.post(
                "/ledger/accounts",
                json={"account": f"A-{n}", "customer": f"C-{n}", "currency": "krw"},
            )
            # The sample loader opened them already (a contract names only an account
            # that exists): opening again answers the account, not created.
            assert opened.status_code in (200, 201), opened.text
            assert opened.json()["account"] == f"A-{n}"
        yield http


async def booked(journal: Journal) -> dict[str, int]:
    async with journal.pool.connection() as conn:
        row = await (
            await conn.execute(
                "select (select count(*) from ledger.transactions) as transactions,"
                " (select count(*) from billing.staged_deposits) as deposits,"
                " (select count(*) from billing.staged_writeoffs) as writeoffs,"
                " (select count(*) from billing.payments) as payments"
            )
        ).fetchone()
    assert row is not None
    return dict(row)


async def test_accounts_open_once_and_show(client: httpx.AsyncClient) -> None:
    again = await client.post(
        "/ledger/accounts",
        json={"account": "A-1001", "customer": "C-1001", "currency": "KRW"},
    )
    assert again.status_code == 201
    assert again.json()["created"] is False
    shown = (await client.get("/ledger/accounts/A-1001")).json()
    assert shown["account"]["currency"] == "KRW"
    assert shown["available"] == 0
    missing = await client.get("/ledger/accounts/A-9999")
    assert missing.status_code == 404
    assert missing.json()["field"] == "account"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"account": "A-7", "customer": "C-9999", "currency": "KRW"}, "customer"),
        ({"account": "A-7", "customer": "C-1001", "currency": "XYZ"}, "currency"),
        ({"account": "", "customer": "C-1001", "currency": "KRW"}, "account"),
        # The actor is the credential's, never the body's.
        ({"account": "A-7", "customer": "C-1001", "currency": "KRW", "actor": "x"}, "actor"),
        ({"account": "A-\x007", "customer": "C-1001", "currency": "KRW"}, "account"),
        ({"account": "A-7", "customer": "C-1001\x00", "currency": "KRW"}, "customer"),
        ({"account": "A-7", "customer": "C-1001", "currency": "KR\x00"}, "currency"),
        (
            {"account": "A-7", "customer": "C-1001", "currency": "KRW", "bill_cycle": "M\x00"},
            "bill_cycle",
        ),
        (
            {"account": "A-7", "customer": "C-1001", "currency": "KRW", "grace_days": 2**63},
            "grace_days",
        ),
    ],
)
async def test_bad_accounts_refused_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    answer = await client.post("/ledger/accounts", json=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["field"] == field


async def test_payment_replays_and_conflicts(client: httpx.AsyncClient, journal: Journal) -> None:
    body = {"account": "A-1001", "amount": "50000", "currency": "KRW"}
    first = await client.post(
        "/billing/payments/deposit", json=body, headers={"Idempotency-Key": "k1"}
    )
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "posted"
    assert first.json()["amount_minor"] == 50_000
    again = await client.post(
        "/billing/payments/deposit", json=body, headers={"Idempotency-Key": "k1"}
    )
    assert again.status_code in (200, 201)
    assert again.json() == {**first.json(), "replay": True}
    other = await client.post(
        "/billing/payments/deposit",
        json={**body, "amount": "50001"},
        headers={"Idempotency-Key": "k1"},
    )
    assert other.status_code == 409
    assert other.json()["field"] == "Idempotency-Key"
    as_arrears = await client.post(
        "/billing/payments/arrears", json=body, headers={"Idempotency-Key": "k1"}
    )
    assert as_arrears.status_code == 409
    assert await booked(journal) == {
        "transactions": 1,
        "deposits": 0,
        "writeoffs": 0,
        "payments": 1,
    }
    shown = (await client.get("/ledger/accounts/A-1001")).json()
    assert shown["available"] == 50_000


@pytest.mark.parametrize(
    ("kind", "body", "status", "field"),
    [
        ("deposit", {"account": "A-1001", "amount": "-5", "currency": "KRW"}, 422, "amount"),
        ("deposit", {"account": "A-1001", "amount": "0", "currency": "KRW"}, 422, "amount"),
        ("deposit", {"account": "A-1001", "amount": "10.5", "currency": "KRW"}, 422, "amount"),
        ("deposit", {"account": "A-1001", "amount": 10.5, "currency": "KRW"}, 422, "amount"),
        ("deposit", {"account": "A-1001", "amount": "1e999", "currency": "KRW"}, 422, "amount"),
        ("deposit", {"account": "A-1001", "amount": "10", "currency": "USD"}, 422, "currency"),
        ("deposit", {"account": "A-9999", "amount": "10", "currency": "KRW"}, 404, "account"),
        ("deposit", {"account": "A-1001", "currency": "KRW"}, 422, "amount"),
        ("deposit", {"account": "A-1001", "amount": "10", "currency": "KRW", "x": 1}, 422, "x"),
        ("arrears", {"account": "A-1001", "amount": "10", "currency": "USD"}, 422, "currency"),
    ],
)
async def test_bad_payments_book_nothing(
    client: httpx.AsyncClient,
    journal: Journal,
    kind: str,
    body: dict[str, Any],
    status: int,
    field: str,
) -> None:
    answer = await client.post(
        f"/billing/payments/{kind}", json=body, headers={"Idempotency-Key": "bad"}
    )
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field
    assert answer.json()["reason"]
    assert await booked(journal) == {
        "transactions": 0,
        "deposits": 0,
        "writeoffs": 0,
        "payments": 0,
    }
    # The key was not spent on a refused request.
    good = await client.post(
        "/billing/payments/deposit",
        json={"account": "A-1001", "amount": "10", "currency": "KRW"},
        headers={"Idempotency-Key": "bad"},
    )
    assert good.status_code == 201, good.text
    assert "replay" not in good.json()


async def test_run_state_progress_and_reconcile(
    client: httpx.AsyncClient, journal: Journal
) -> None:
    assert (await client.get("/billing/state")).json()["staging"] is False
    await plan_window(journal.pool)
    period = month(1)
    started = await client.post(
        "/billing/runs",
        json={"period_start": str(period[0]), "period_end": str(period[1])},
    )
    assert started.status_code == 201, started.text
    run = started.json()["run"]
    state = (await client.get("/billing/state")).json()
    assert state["staging"] is True
    assert state["run_id"] == run
    assert state["run_status"] == "running"
    before = (await client.get(f"/billing/runs/{run}")).json()
    assert before["billed"] == 0
    assert before["progress"] == 0
    assert before["accounts_total"] == 4
    this_month = month(0)
    busy = await client.post(
        "/billing/runs",
        json={"period_start": str(this_month[0]), "period_end": str(this_month[1])},
    )
    assert busy.status_code == 409
    early = await client.get(f"/billing/runs/{run}/reconcile")
    assert early.status_code == 409
    assert early.json()["field"] == "run"

    staged = await client.post(
        "/billing/payments/deposit",
        json={"account": "A-1002", "amount": "2000000", "currency": "KRW"},
        headers={"Idempotency-Key": "during"},
    )
    assert staged.json()["status"] == "staged"
    assert staged.json()["run_id"] == run
    auth = (
        await client.get(
            "/billing/authorize",
            params={"account": "A-1002", "amount": "2000000", "currency": "KRW"},
        )
    ).json()
    assert auth["authorized"] is True  # staged funds count at once

    await bill(journal.pool, run, workers=2, chunk=1)
    after = (await client.get(f"/billing/runs/{run}")).json()
    assert after["billed"] == 4
    assert after["progress"] == 1
    assert after["status"] == "settling"
    assert (await client.get("/billing/state")).json()["run_status"] == "settling"
    await settle(journal.pool, run)
    assert (await client.get("/billing/state")).json()["staging"] is False
    report = await client.get(f"/billing/runs/{run}/reconcile")
    assert report.status_code == 200, report.text
    assert report.json()["reconciled"] is True
    assert report.json()["differences"] == []
    assert report.json()["totals"]["staged_deposits"] == 1
    assert (await client.get("/billing/runs/999999")).status_code == 404
