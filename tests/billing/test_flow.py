"""A bill run over the sample operator while payments arrive: staged and answered at
once, arrears paid mid-run restore service at once, settlement applies everything once,
and the books reconcile with the snapshot to the unit."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bossa.billing import (
    PaymentRequest,
    authorize,
    bill,
    current_state,
    pay,
    reconcile,
    run_dunning,
    settle,
)
from bossa.errors import Conflict, InvalidInput, NotFound
from bossa.journal import Journal
from bossa.ledger import balances, check
from tests.billing.conftest import key, month, open_run


def payment(account: str, amount: str, currency: str = "KRW") -> PaymentRequest:
    return PaymentRequest(account=account, amount=amount, currency=currency)


async def books(journal: Journal, account: str) -> dict[str, int]:
    async with journal.pool.connection() as conn:
        return await balances(conn, account)


async def test_run_with_payments_reconciles(journal: Journal, accounts: list[str]) -> None:
    online = await pay(
        journal, payment("A-1001", "1000000"), kind="deposit", actor="t", idempotency_key=key()
    )
    assert online["status"] == "posted"
    # First cycle: everyone is billed; A-1002 has no funds and falls into arrears.
    first = await open_run(journal.pool, month(2))
    assert (await bill(journal.pool, first)) == 4
    await settle(journal.pool, first)
    assert (await books(journal, "A-1002"))["receivable"] == 1_900_000  # WIBRO monthly fee
    assert (await books(journal, "A-1001"))["prepaid"] == 0  # ADSL 2.5M + SOIP 0.9M > 1M
    # Past the first bills' due date (20 days) and the accounts' grace (14 days).
    assert await run_dunning(journal, today=month(2)[1] + timedelta(days=35)) == [
        "A-1001",
        "A-1002",
        "A-1003",
        "A-1004",
    ]

    second = await open_run(journal.pool, month(1))
    async with journal.pool.connection() as conn:
        assert (await current_state(conn)).staging
    staged = await pay(
        journal, payment("A-1003", "300000"), kind="deposit", actor="t", idempotency_key="dep-1"
    )
    assert staged["status"] == "staged"
    again = await pay(
        journal, payment("A-1003", "300000"), kind="deposit", actor="t", idempotency_key="dep-1"
    )
    assert again["staged_id"] == staged["staged_id"]
    arrears = await pay(
        journal, payment("A-1002", "1900000"), kind="arrears", actor="t", idempotency_key=key()
    )
    assert arrears["status"] == "staged"
    assert arrears["restored"] == ["SA-5003"]  # restored at once, during the run
    auth = await authorize(journal, "A-1003", "100000", "KRW")
    assert auth["funds"] == "-2200000"  # 2.5M owed, 0.3M staged
    assert not auth["authorized"]
    await pay(
        journal, payment("A-1003", "2300000"), kind="deposit", actor="t", idempotency_key=key()
    )
    assert (await authorize(journal, "A-1003", "100000", "KRW"))["authorized"]  # staged counts
    assert (await books(journal, "A-1003"))["prepaid"] == 0  # online books untouched

    await bill(journal.pool, second)
    late = await pay(
        journal, payment("A-1004", "5000"), kind="deposit", actor="t", idempotency_key=key()
    )
    assert late["status"] == "staged"  # billed but not settled: still staging
    assert await settle(journal.pool, second) == 4
    async with journal.pool.connection() as conn:
        assert not (await current_state(conn)).staging
        assert await check(conn) == {"unbalanced_transactions": [], "balances_off": []}
    report = await reconcile(journal.pool, second)
    assert report["reconciled"], report["differences"]
    assert report["totals"]["staged_deposits"] == 3
    after = await pay(
        journal, payment("A-1004", "5000"), kind="deposit", actor="t", idempotency_key=key()
    )
    assert after["status"] == "posted"
    assert (await reconcile(journal.pool, second))["reconciled"]


@pytest.mark.parametrize(
    ("account", "amount", "currency", "error", "field"),
    [
        ("A-1001", "0", "KRW", InvalidInput, "amount"),
        ("A-1001", "-5", "KRW", InvalidInput, "amount"),
        ("A-1001", "10.5", "KRW", InvalidInput, "amount"),
        ("A-1001", "abc", "KRW", InvalidInput, "amount"),
        ("A-1001", "10", "USD", InvalidInput, "currency"),
        ("A-9999", "10", "KRW", NotFound, "account"),
    ],
)
async def test_bad_payments_book_nothing(
    journal: Journal,
    accounts: list[str],
    account: str,
    amount: str,
    currency: str,
    error: type[Exception],
    field: str,
) -> None:
    with pytest.raises(error) as caught:
        await pay(
            journal,
            payment(account, amount, currency),
            kind="deposit",
            actor="t",
            idempotency_key=key(),
        )
    assert caught.value.field == field  # type: ignore[attr-defined]
    async with journal.pool.connection() as conn:
        row = await (await conn.execute("select count(*) as n from ledger.transactions")).fetchone()
    assert row == {"n": 0}


async def test_replayed_key_with_other_content(journal: Journal, accounts: list[str]) -> None:
    await pay(journal, payment("A-1001", "100"), kind="deposit", actor="t", idempotency_key="k")
    with pytest.raises(Conflict) as caught:
        await pay(journal, payment("A-1001", "200"), kind="deposit", actor="t", idempotency_key="k")
    # The key is the header's name on the API, and the same on the CLI.
    assert caught.value.field == "Idempotency-Key"


async def test_only_one_run_at_a_time(journal: Journal, accounts: list[str]) -> None:
    await open_run(journal.pool, month(2))
    with pytest.raises(Conflict, match="still running"):
        await open_run(journal.pool, month(1))
