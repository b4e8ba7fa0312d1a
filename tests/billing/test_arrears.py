"""Arrears have one meaning everywhere: the past-due amount (bills whose due date has
passed, less what was paid, oldest first). Dunning suspends on it, paying it restores
service at once in or out of a run, the amount does not change because a run reached
the account, paying more is a deposit; the restore is recorded with when it was sent."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import psycopg

from bossa.billing import (
    PaymentRequest,
    ServiceDaemon,
    account_summary,
    bill,
    pay,
    reconcile,
    run_dunning,
    settle,
)
from bossa.journal import Journal
from bossa.ledger import balances
from bossa.provisioning import Deliverer, ProvisioningSettings
from bossa.provisioning.sample import load_sample_plans
from tests.billing.conftest import key, month, open_run
from tests.faults import Hook
from tests.support import free_port

WIBRO = 1_900_000  # A-1002's one contract, SA-5003, a month
FIRST = month(2)
#: Past the first run's due date (20 days) and the accounts' grace (14 days); before the
#: next run's bills are due.
TODAY = FIRST[1] + timedelta(days=35)


def payment(account: str, amount: int) -> PaymentRequest:
    return PaymentRequest(account=account, amount=str(amount), currency="KRW")


async def arrears_of(journal: Journal, account: str, today: date = TODAY) -> int:
    return int((await account_summary(journal.pool, account, today=today))["arrears"])


async def status_of(journal: Journal, account: str) -> tuple[str, list[str]]:
    async with journal.pool.connection() as conn:
        row = await (
            await conn.execute("select status from ledger.accounts where id = %s", (account,))
        ).fetchone()
        contracts = await (
            await conn.execute(
                "select c.status from customers.contracts c join ledger.accounts a"
                " on a.customer_id = c.customer_id where a.id = %s order by c.sa_id",
                (account,),
            )
        ).fetchall()
    assert row is not None
    return row["status"], [c["status"] for c in contracts]


async def suspended_for_first_bill(journal: Journal) -> None:
    """Bill the first period, settle; dunning suspends every account (none has funds)."""
    first = await open_run(journal.pool, FIRST)
    await bill(journal.pool, first)
    await settle(journal.pool, first)
    assert "A-1002" in await run_dunning(journal, today=TODAY)
    assert await status_of(journal, "A-1002") == ("suspended", ["suspended"])


async def test_paying_exactly_the_suspended_amount_during_a_run_restores_at_once(
    journal: Journal, accounts: list[str]
) -> None:
    await suspended_for_first_bill(journal)
    async with journal.pool.connection() as conn:
        reason = await (
            await conn.execute(
                "select payload->>'reason' as reason from journal.entries"
                " where kind = 'service.suspend' and payload->>'account' = 'A-1002'"
            )
        ).fetchone()
    assert reason == {"reason": f"arrears of {WIBRO} KRW overdue on {TODAY}"}
    assert await arrears_of(journal, "A-1002") == WIBRO

    # The next run reaches the account: a second bill, not yet due, is posted...
    second = await open_run(journal.pool, month(1))
    assert await bill(journal.pool, second) == 4
    async with journal.pool.connection() as conn:
        assert (await balances(conn, "A-1002"))["receivable"] == 2 * WIBRO
    # ...and the amount needed to get service back has not changed.
    assert await arrears_of(journal, "A-1002") == WIBRO

    paid = await pay(
        journal,
        payment("A-1002", WIBRO),
        kind="arrears",
        actor="t",
        idempotency_key="till-1",
        today=TODAY,
    )
    assert paid["status"] == "staged"  # B2: the run still holds the books
    assert paid["restored"] == ["SA-5003"]  # B3: at once
    assert (paid["writeoff_minor"], paid["deposit_minor"]) == (WIBRO, 0)
    assert await status_of(journal, "A-1002") == ("active", ["active"])
    assert await arrears_of(journal, "A-1002") == 0  # the staged write-off counts as paid
    # Dunning during the run does not suspend it again.
    assert "A-1002" not in await run_dunning(journal, today=TODAY)

    await settle(journal.pool, second)
    assert (await reconcile(journal.pool, second))["reconciled"]
    async with journal.pool.connection() as conn:
        assert (await balances(conn, "A-1002"))["receivable"] == WIBRO  # the new bill
    assert await arrears_of(journal, "A-1002") == 0
    # Once the second bill is past due, it is the arrears.
    assert await arrears_of(journal, "A-1002", month(1)[1] + timedelta(days=21)) == WIBRO


async def test_paying_more_than_the_arrears_is_a_deposit(
    journal: Journal, accounts: list[str]
) -> None:
    await suspended_for_first_bill(journal)
    paid = await pay(
        journal,
        payment("A-1002", WIBRO + 100_000),
        kind="arrears",
        actor="t",
        idempotency_key=key(),
        today=TODAY,
    )
    assert paid["status"] == "posted"
    assert paid["restored"] == ["SA-5003"]
    assert (paid["writeoff_minor"], paid["deposit_minor"]) == (WIBRO, 100_000)
    assert paid["deposit_transaction_id"] != paid["transaction_id"]
    async with journal.pool.connection() as conn:
        books = await balances(conn, "A-1002")
    assert (books["receivable"], books["prepaid"], books["cash"]) == (0, -100_000, WIBRO + 100_000)
    # No arrears at all: an arrears payment is all deposit, not an error.
    again = await pay(
        journal, payment("A-1002", 5_000), kind="arrears", actor="t", idempotency_key=key()
    )
    assert (again["writeoff_minor"], again["deposit_minor"], again["restored"]) == (0, 5_000, [])


async def test_paying_part_of_the_arrears_does_not_restore(
    journal: Journal, accounts: list[str]
) -> None:
    await suspended_for_first_bill(journal)
    second = await open_run(journal.pool, month(1))
    part = await pay(
        journal,
        payment("A-1002", WIBRO - 1),
        kind="arrears",
        actor="t",
        idempotency_key=key(),
        today=TODAY,
    )
    assert (part["status"], part["restored"], part["writeoff_minor"]) == ("staged", [], WIBRO - 1)
    assert await status_of(journal, "A-1002") == ("suspended", ["suspended"])
    assert await arrears_of(journal, "A-1002") == 1
    # The last unit restores it, during the run.
    rest = await pay(
        journal, payment("A-1002", 1), kind="arrears", actor="t", idempotency_key=key(), today=TODAY
    )
    assert rest["restored"] == ["SA-5003"]
    await bill(journal.pool, second)
    await settle(journal.pool, second)
    assert (await reconcile(journal.pool, second))["reconciled"]


async def test_a_bill_not_yet_due_is_no_arrears_and_dunning_waits_for_the_grace(
    journal: Journal, accounts: list[str]
) -> None:
    first = await open_run(journal.pool, FIRST)
    await bill(journal.pool, first)
    await settle(journal.pool, first)
    due = FIRST[1] + timedelta(days=20)
    assert await arrears_of(journal, "A-1002", due) == 0  # due today: not past due
    assert await arrears_of(journal, "A-1002", due + timedelta(days=1)) == WIBRO
    # Past due, within the grace of 14 days: not suspended.
    assert await run_dunning(journal, today=due + timedelta(days=14)) == []
    assert "A-1002" in await run_dunning(journal, today=due + timedelta(days=15))


async def test_an_open_runs_bills_are_not_yet_due(journal: Journal, accounts: list[str]) -> None:
    """A catch-up run whose bills are due already: until it settles, they are not arrears
    (a run reaching the account does not change what is owed past due)."""
    catch_up = await open_run(journal.pool, FIRST, due_days=1)
    await bill(journal.pool, catch_up)
    late = FIRST[1] + timedelta(days=60)
    assert await arrears_of(journal, "A-1002", late) == 0
    assert await run_dunning(journal, today=late) == []
    await settle(journal.pool, catch_up)
    assert await arrears_of(journal, "A-1002", late) == WIBRO
    assert "A-1002" in await run_dunning(journal, today=late)


async def test_the_restore_records_when_it_was_sent(
    journal: Journal, accounts: list[str], db_url: str
) -> None:
    await suspended_for_first_bill(journal)
    await open_run(journal.pool, month(1))
    await pay(
        journal,
        payment("A-1002", WIBRO),
        kind="arrears",
        actor="t",
        idempotency_key="till-9",
        today=TODAY,
    )
    shown = await account_summary(journal.pool, "A-1002", today=TODAY)
    assert [(r["payment"], r["sa_id"], r["sent_at"]) for r in shown["restores"]] == [
        ("till-9", "SA-5003", None)
    ]
    # Provisioning's divisions are down (nothing listens on their ports): the order is
    # accepted and buffered for them all the same (P: business never stops); that is
    # when the restore is sent.
    down = f"postgresql://nobody@127.0.0.1:{free_port()}/aaa"
    await load_sample_plans(journal.pool, aaa_url=down, hds_url=f"redis://127.0.0.1:{free_port()}")
    deliverer = Deliverer(journal.pool, ProvisioningSettings(down_hold_s=30))
    try:
        await ServiceDaemon(journal, deliverer).run(once=True)
    finally:
        await deliverer.close()
    shown = await account_summary(journal.pool, "A-1002", today=TODAY)
    [restore] = shown["restores"]
    assert restore["sent_at"] is not None
    assert restore["sent_at"] >= restore["queued_at"]
    with psycopg.connect(db_url) as conn:
        staged = conn.execute(
            "select amount from billing.staged_writeoffs where idempotency_key = 'till-9'"
        ).fetchone()
    assert staged == (WIBRO,)  # the write-off the restore belongs to, by the same key


async def test_dunning_never_suspends_for_arrears_paid_while_it_runs(
    journal: Journal, accounts: list[str], db_url: str
) -> None:
    """Dunning reads its list, then suspends account by account: a payment that commits
    in between (here held in its transaction, with the account locked, until dunning has
    read the list and reached the account) is seen, and the account stays active."""
    first = await open_run(journal.pool, FIRST)
    await bill(journal.pool, first)
    await settle(journal.pool, first)
    owed = await arrears_of(journal, "A-1002")
    assert owed == WIBRO
    hook = Hook(db_url, "billing", "payments", nth=1, event="insert").install()
    hook.arm()
    try:
        paying = asyncio.create_task(
            pay(
                journal,
                payment("A-1002", owed),
                kind="arrears",
                actor="t",
                idempotency_key=key(),
                today=TODAY,
            )
        )
        await asyncio.to_thread(hook.wait_stuck, containing="billing.payments", at_least=1)
        dunning = asyncio.create_task(run_dunning(journal, today=TODAY))
        # Dunning has read its list (the payment is not committed) and waits for the
        # account's lock, which the payment holds.
        await _wait_lock_waiter(db_url, "ledger")
        hook.disarm()
        await paying
        suspended = await dunning
    finally:
        hook.close()
    assert "A-1002" not in suspended
    assert await status_of(journal, "A-1002") == ("active", ["active"])
    assert await arrears_of(journal, "A-1002") == 0


async def _wait_lock_waiter(db_url: str, schema: str, limit_s: float = 30) -> None:
    """Until a backend waits for a row lock on a table of `schema`."""
    deadline = asyncio.get_running_loop().time() + limit_s
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        while True:
            row = await (
                await conn.execute(
                    "select count(*) from pg_stat_activity a where a.datname = current_database()"
                    " and a.wait_event_type = 'Lock' and strpos(a.query, %s) > 0",
                    (f"{schema}.",),
                )
            ).fetchone()
            if row is not None and row[0] > 0:
                return
            assert asyncio.get_running_loop().time() < deadline, "dunning never waited"
            await asyncio.sleep(0.02)
