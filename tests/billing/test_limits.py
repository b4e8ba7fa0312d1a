"""Money limits (issue 11, point 6): a payment needs an idempotency key, and five
identical concurrent payments with one key pay once; a payment and an account's prepaid
funds have per-currency maximums (staged deposits count); no book can be driven past
what PostgreSQL's bigint holds, so settlement never fails on an overflow; and sums over
many accounts are exact beyond bigint."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from bossa.billing import (
    BillingSettings,
    PaymentLimits,
    PaymentRequest,
    bill,
    pay,
    reconcile,
    settle,
)
from bossa.errors import InvalidInput
from bossa.journal import Journal
from bossa.ledger import BOOK_LIMIT, MAX_MINOR, AccountRequest, balances, check, open_account
from bossa.runtime import Runtime
from tests.billing.conftest import key, month, open_run
from tests.billing.test_concurrency import seed
from tests.billing.test_http import booked
from tests.support import api_client

NOTHING = {"transactions": 0, "deposits": 0, "writeoffs": 0, "payments": 0}
#: Small KRW limits, so that a few payments reach them.
LIMITS = {"max_payment": {"KRW": 600_000}, "max_balance": {"KRW": 1_000_000}}


@pytest.fixture
async def runtime(journal: Journal, db_url: str, accounts: list[str]) -> AsyncIterator[Runtime]:
    runtime = Runtime.around(db_url, journal, embedded=False)
    runtime.sections["billing"] = BillingSettings.model_validate(LIMITS)
    yield runtime
    await runtime.deliverer.close()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(runtime) as http:
        yield http


def deposit_body(account: str = "A-1001", amount: str = "1000") -> dict[str, str]:
    return {"account": account, "amount": amount, "currency": "KRW"}


# -- the idempotency key ------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Idempotency-Key": ""}, {"Idempotency-Key": "a b"}, {"Idempotency-Key": "k" * 129}],
    ids=["missing", "empty", "space", "too-long"],
)
@pytest.mark.parametrize("kind", ["deposit", "arrears"])
async def test_a_payment_needs_a_good_idempotency_key(
    client: httpx.AsyncClient, journal: Journal, kind: str, headers: dict[str, str]
) -> None:
    answer = await client.post(f"/billing/payments/{kind}", json=deposit_body(), headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "Idempotency-Key"
    assert await booked(journal) == {
        "transactions": 0,
        "deposits": 0,
        "writeoffs": 0,
        "payments": 0,
    }


async def test_the_service_refuses_a_missing_or_bad_key(
    journal: Journal, accounts: list[str]
) -> None:
    request = PaymentRequest.model_validate(deposit_body())
    for bad in ("", "a b", "k" * 129, "é", "tab\there"):
        with pytest.raises(InvalidInput) as refused:
            await pay(journal, request, kind="deposit", actor="t", idempotency_key=bad)
        assert refused.value.field == "Idempotency-Key"
    longest = "k" * 128
    answer = await pay(journal, request, kind="deposit", actor="t", idempotency_key=longest)
    assert answer["idempotency_key"] == longest


@pytest.mark.parametrize("during_run", [False, True], ids=["posted", "staged"])
async def test_five_identical_concurrent_deposits_pay_once(
    client: httpx.AsyncClient, journal: Journal, during_run: bool
) -> None:
    if during_run:
        await open_run(journal.pool, month(1))
    headers = {"Idempotency-Key": "till-7-receipt-1"}
    answers = await asyncio.gather(
        *(
            client.post("/billing/payments/deposit", json=deposit_body(), headers=headers)
            for _ in range(5)
        )
    )
    assert [a.status_code for a in answers] == [201] * 5, [a.text for a in answers]
    bodies = [a.json() for a in answers]
    assert sum(1 for b in bodies if not b.get("replay")) == 1
    first = next(b for b in bodies if not b.get("replay"))
    assert all(b == first or b == {**first, "replay": True} for b in bodies)
    assert first["status"] == ("staged" if during_run else "posted")
    assert await booked(journal) == {
        "transactions": 0 if during_run else 1,
        "deposits": 1 if during_run else 0,
        "writeoffs": 0,
        "payments": 1,
    }


async def test_distinct_keys_are_distinct_payments(
    client: httpx.AsyncClient, journal: Journal
) -> None:
    answers = await asyncio.gather(
        *(
            client.post(
                "/billing/payments/deposit", json=deposit_body(), headers={"Idempotency-Key": key()}
            )
            for _ in range(5)
        )
    )
    assert [a.status_code for a in answers] == [201] * 5
    assert (await booked(journal))["transactions"] == 5


# -- per-payment and per-account maximums ---------------------------------------------------


async def test_one_payment_over_its_currencys_maximum_is_refused(
    client: httpx.AsyncClient, journal: Journal
) -> None:
    too_much = await client.post(
        "/billing/payments/deposit",
        json=deposit_body(amount="600001"),
        headers={"Idempotency-Key": key()},
    )
    assert too_much.status_code == 422, too_much.text
    assert too_much.json()["field"] == "amount"
    assert "largest payment allowed, 600000 KRW" in too_much.json()["reason"]
    assert await booked(journal) == {
        "transactions": 0,
        "deposits": 0,
        "writeoffs": 0,
        "payments": 0,
    }
    exactly = await client.post(
        "/billing/payments/deposit",
        json=deposit_body(amount="600000"),
        headers={"Idempotency-Key": key()},
    )
    assert exactly.status_code == 201, exactly.text


async def test_prepaid_funds_stay_within_the_accounts_maximum_staged_included(
    client: httpx.AsyncClient, journal: Journal
) -> None:
    async def deposit(amount: str) -> httpx.Response:
        return await client.post(
            "/billing/payments/deposit",
            json=deposit_body("A-1004", amount),
            headers={"Idempotency-Key": key()},
        )

    assert (await deposit("600000")).json()["status"] == "posted"
    run = await open_run(journal.pool, month(1))
    assert (await deposit("400000")).json()["status"] == "staged"  # at the maximum now
    over = await deposit("1")
    assert over.status_code == 422, over.text
    assert over.json()["field"] == "amount"
    assert "maximum of 1000000 KRW; at most 0 more" in over.json()["reason"]
    # The bill (SOIP, 900,000) is paid from the online prepaid funds (all 600,000 of
    # them), making room again for 600,000 beside the 400,000 staged.
    await bill(journal.pool, run)
    assert (await deposit("600000")).status_code == 201
    assert (await deposit("1")).status_code == 422
    await settle(journal.pool, run)
    async with journal.pool.connection() as conn:
        books = await balances(conn, "A-1004")
        assert await check(conn) == {"unbalanced_transactions": [], "balances_off": []}
    assert (-books["prepaid"], books["receivable"]) == (1_000_000, 300_000)
    assert (await reconcile(journal.pool, run))["reconciled"]


async def test_an_account_driven_to_the_default_maximum_settles(
    journal: Journal, db_url: str, accounts: list[str]
) -> None:
    """USD with bossa's defaults: ten staged deposits of the largest payment ($100,000)
    fill an account's maximum ($1,000,000); the eleventh cent is refused; the run bills,
    settles and reconciles."""
    limits = PaymentLimits()
    most, room = limits.of("USD")
    assert (most, room) == (10_000_000, 100_000_000)
    async with journal.pool.connection() as conn:
        await open_account(
            conn, AccountRequest(account="U-1", customer="C-1001", currency="USD"), actor="t"
        )
    run = await open_run(journal.pool, month(1))
    request = PaymentRequest(account="U-1", amount="100000.00", currency="USD")
    for _ in range(room // most):
        answer = await pay(journal, request, kind="deposit", actor="t", idempotency_key=key())
        assert answer["status"] == "staged"
    cent = PaymentRequest(account="U-1", amount="0.01", currency="USD")
    with pytest.raises(InvalidInput, match=r"at most 0\.00 more") as refused:
        await pay(journal, cent, kind="deposit", actor="t", idempotency_key=key())
    assert refused.value.field == "amount"
    await bill(journal.pool, run)
    assert await settle(journal.pool, run) == room // most
    async with journal.pool.connection() as conn:
        books = await balances(conn, "U-1")
        assert await check(conn) == {"unbalanced_transactions": [], "balances_off": []}
    assert (books["prepaid"], books["cash"]) == (-room, room)
    assert (await reconcile(journal.pool, run))["reconciled"]
    with pytest.raises(InvalidInput, match=r"at most 0\.00 more"):  # online, after the run
        await pay(journal, cent, kind="deposit", actor="t", idempotency_key=key())


async def test_the_1e15_deposits_that_overflowed_are_refused_and_the_run_settles(
    journal: Journal, accounts: list[str]
) -> None:
    """The finding: 9,320 deposits of 10^15 staged on one account overflowed bigint, so
    settlement failed on every attempt. At the settings' upper bounds (both maximums
    10^15) the first fills the account and the second is refused; settlement ends."""
    limits = PaymentLimits({"KRW": MAX_MINOR}, {"KRW": MAX_MINOR})
    run = await open_run(journal.pool, month(1))
    huge = PaymentRequest(account="A-1001", amount=str(MAX_MINOR), currency="KRW")
    staged = await pay(
        journal, huge, kind="deposit", actor="t", idempotency_key=key(), limits=limits
    )
    assert staged["status"] == "staged"
    with pytest.raises(InvalidInput) as refused:
        await pay(journal, huge, kind="deposit", actor="t", idempotency_key=key(), limits=limits)
    assert refused.value.field == "amount"
    await bill(journal.pool, run)
    assert await settle(journal.pool, run) == 1
    assert (await reconcile(journal.pool, run))["reconciled"]


async def test_the_cash_book_stops_at_the_ledgers_ceiling(
    journal: Journal, accounts: list[str]
) -> None:
    """Cash is all the money an account ever took in: a payment that would take it past
    10^18 is refused, so no posting of it can overflow bigint."""
    almost = BOOK_LIMIT - 5
    async with journal.pool.connection() as conn:
        # A long history: that much billed, and paid off.
        for recipe, books in (
            ("bill", ["receivable", "revenue"]),
            ("writeoff", ["cash", "receivable"]),
        ):
            await conn.execute(
                "select ledger.post('A-1002', %s, %s, %s::ledger.book[], %s::bigint[],"
                " null, null, 'history')",
                (recipe, almost, books, [almost, -almost]),
            )
    request = PaymentRequest(account="A-1002", amount="6", currency="KRW")
    with pytest.raises(InvalidInput, match="cash book past the ledger's ceiling") as refused:
        await pay(journal, request, kind="deposit", actor="t", idempotency_key=key())
    assert refused.value.field == "amount"
    five = PaymentRequest(account="A-1002", amount="5", currency="KRW")
    await pay(journal, five, kind="deposit", actor="t", idempotency_key=key())
    async with journal.pool.connection() as conn:
        assert (await balances(conn, "A-1002"))["cash"] == BOOK_LIMIT


@pytest.mark.slow
async def test_sums_over_many_accounts_are_exact_beyond_bigint(
    db_url: str, journal: Journal
) -> None:
    """Every sum in billing's and the ledger's SQL is over bigint columns, which
    PostgreSQL sums as numeric: 9,300 accounts each staging the largest deposit the
    settings allow (10^15) total 9.3 x 10^18, past bigint, and the run still settles and
    reconciles, its totals exact."""
    n = 9_300
    seed(db_url, n)
    run = await open_run(journal.pool, month(1))
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "insert into billing.staged_deposits (run_id, account_id, amount, idempotency_key,"
            " received_by) select %s, 'A-' || i, %s, 'big-' || i, 'front-office'"
            " from generate_series(1, %s) i",
            (run, MAX_MINOR, n),
        )
    await bill(journal.pool, run, workers=2, chunk=1000)
    assert await settle(journal.pool, run, batch=2000) == n
    report = await reconcile(journal.pool, run)
    assert report["reconciled"], report["differences"][:5]
    assert report["totals"]["staged_deposit_amount"] == n * MAX_MINOR > 2**63 - 1
    async with journal.pool.connection() as conn:
        assert await check(conn) == {"unbalanced_transactions": [], "balances_off": []}


# -- the CLI ------------------------------------------------------------------------------


def bossa(db_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bossa.cli", *args],
        env={**os.environ, "BOSSA_DATABASE_URL": db_url, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_cli_makes_a_key_per_invocation_and_replays_a_given_one(
    db_url: str, journal: Journal, accounts: list[str]
) -> None:
    first = bossa(db_url, "billing", "pay", "deposit", "A-1001", "10", "KRW")
    second = bossa(db_url, "billing", "pay", "deposit", "A-1001", "10", "KRW")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    made: list[dict[str, Any]] = [json.loads(p.stdout) for p in (first, second)]
    assert made[0]["idempotency_key"] != made[1]["idempotency_key"]
    given = made[0]["idempotency_key"]
    again = bossa(
        db_url, "billing", "pay", "deposit", "A-1001", "10", "KRW", "--idempotency-key", given
    )
    assert json.loads(again.stdout) == {**made[0], "replay": True}
    bad = bossa(
        db_url, "billing", "pay", "deposit", "A-1001", "10", "KRW", "--idempotency-key", "a b"
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "error: Idempotency-Key: must be 1 to 128 printable ASCII characters without spaces"
    )
    assert (await booked(journal))["transactions"] == 2
    helped = bossa(db_url, "billing", "pay", "deposit", "--help", COLUMNS="400", TERM="dumb")
    assert "each invocation makes a new key" in " ".join(helped.stdout.split())
    # Actors come from the credential: --actor is gone.
    assert (
        bossa(db_url, "billing", "pay", "deposit", "A-1", "1", "KRW", "--actor", "x").returncode
        == 2
    )
