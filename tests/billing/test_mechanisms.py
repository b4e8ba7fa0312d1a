"""Billing's mechanisms tested so that removing one fails a test: settlement applies
the staged items in the order they were taken (B4), across batches and across the two
kinds, whatever order their ids are in; dunning suspends for arrears past due plus
grace only, over two runs; and the billing service daemon carries a suspension and its
restoration to the division."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import psycopg

from bossa.billing import PaymentRequest, ServiceDaemon, bill, pay, run_dunning, settle
from bossa.db import Conn
from bossa.journal import Journal
from bossa.ledger import balances
from bossa.provisioning import Deliverer, add_division, add_plan_command
from tests.billing.conftest import key, month, open_run
from tests.billing.test_concurrency import seed
from tests.foundation.plans import nested_plans, nodes, plan_of, uses
from tests.provisioning.servers import postgres_target


async def test_settlement_applies_staged_items_in_the_order_taken(
    db_url: str, journal: Journal
) -> None:
    """60 deposits whose ids run against their time of receipt, and 10 write-offs
    between them, settled in batches of 7: the ledger postings follow the time each
    item was taken (B4), not the ids nor the kind."""
    seed(db_url, 40)
    run = await open_run(journal.pool, month(1))
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "insert into billing.staged_deposits (run_id, account_id, amount, idempotency_key,"
            " received_at, received_by)"
            " select %(run)s, 'A-' || (1 + i %% 40), 100 + i, 'dep-' || i,"
            "  now() + (61 - i) * interval '2 ms', 'front-office'"
            " from generate_series(1, 60) i",
            {"run": run},
        )
        conn.execute(
            "insert into billing.staged_writeoffs (run_id, account_id, amount, idempotency_key,"
            " received_at, received_by)"
            " select %(run)s, 'A-' || i, 1000, 'wo-' || i,"
            "  now() + (i * 3 + 1) * interval '1 ms', 'front-office'"
            " from generate_series(4, 40, 4) i",
            {"run": run},
        )
    await bill(journal.pool, run)
    assert await settle(journal.pool, run, batch=7) == 70
    with psycopg.connect(db_url) as conn:
        postings = [
            int(r[0])
            for r in conn.execute(
                "select transaction_id from ("
                " select received_at, 'deposit' as kind, id, transaction_id"
                " from billing.staged_deposits"
                " union all select received_at, 'writeoff', id, transaction_id"
                " from billing.staged_writeoffs) s"
                " order by received_at, kind, id"
            ).fetchall()
        ]
    assert len(postings) == 70
    assert postings == sorted(postings)  # posted in the order taken


def owed_on(period: tuple[date, date]) -> date:
    """The due date of a run's bills (20 days after the period, the default)."""
    return period[1] + timedelta(days=20)


async def receivable(journal: Journal, account: str) -> int:
    async with journal.pool.connection() as conn:
        return (await balances(conn, account))["receivable"]


async def test_dunning_within_and_past_grace_over_two_runs(
    journal: Journal, accounts: list[str]
) -> None:
    """Arrears are what is past due plus the account's grace (14 days): nobody is
    suspended on the last day of grace; the day after, those who still owe the first
    bill are. An account that paid its first bill owes only the second, not yet past
    due: it is left alone until that bill's grace has passed too."""
    grace = timedelta(days=14)
    first_period, second_period = month(2), month(1)
    first = await open_run(journal.pool, first_period)
    assert await bill(journal.pool, first) == 4
    await settle(journal.pool, first)
    first_due = owed_on(first_period)
    assert await run_dunning(journal, today=first_due + grace) == []  # the last day of grace

    second = await open_run(journal.pool, second_period)
    assert await bill(journal.pool, second) == 4
    await settle(journal.pool, second)
    async with journal.pool.connection() as conn:
        row = await (
            await conn.execute(
                "select sum(amount - paid_from_prepaid) as owed from ledger.issued_bills"
                " where account_id = 'A-1001' and bill_run_id = %s",
                (first,),
            )
        ).fetchone()
    assert row is not None
    first_bill = int(row["owed"])
    assert first_bill > 0
    assert await receivable(journal, "A-1001") > first_bill  # the second bill is owed too
    await pay(
        journal,
        PaymentRequest(account="A-1001", amount=str(first_bill), currency="KRW"),
        kind="arrears",
        actor="t",
        idempotency_key=key(),
    )
    # A day past the first bill's grace: those who still owe it; not A-1001.
    assert await run_dunning(journal, today=first_due + grace + timedelta(days=1)) == [
        "A-1002",
        "A-1003",
        "A-1004",
    ]
    second_due = owed_on(second_period)
    assert await run_dunning(journal, today=second_due + grace) == []
    assert await run_dunning(journal, today=second_due + grace + timedelta(days=1)) == ["A-1001"]


SERVICE_SQL = "insert into service_applied (sa_id, intf_code) values (:sa_id, :intf_code)"


async def test_service_daemon_suspends_and_restores_at_the_division(
    journal: Journal, accounts: list[str]
) -> None:
    """Dunning suspends A-1002 (one WIBRO contract, SA-5003); the billing service daemon
    turns its suspend entry into a provisioning order that reaches the division (4204);
    the arrears paid, the restore (4205) follows it there."""
    with postgres_target() as target:
        with psycopg.connect(target.dsn, autocommit=True) as conn:
            conn.execute(
                "create table service_applied (id bigint generated always as identity,"
                " sa_id text not null, intf_code text not null)"
            )
        pool = journal.pool
        await add_division(pool, "SVC", {"server_type": "sql", "server_url": target.url}, actor="t")
        for product in ("ADSL", "SOIP", "WIBRO"):
            for intf_code in ("4204", "4205"):
                await add_plan_command(pool, product, intf_code, "SVC", SERVICE_SQL, actor="t")
        run = await open_run(journal.pool, month(2))
        await bill(journal.pool, run)
        await settle(journal.pool, run)
        suspended = await run_dunning(journal, today=owed_on(month(2)) + timedelta(days=15))
        assert "A-1002" in suspended
        deliverer = Deliverer(pool)
        try:
            await asyncio.wait_for(ServiceDaemon(journal, deliverer).run(once=True), 60)
            owed = await receivable(journal, "A-1002")
            paid = await pay(
                journal,
                PaymentRequest(account="A-1002", amount=str(owed), currency="KRW"),
                kind="arrears",
                actor="t",
                idempotency_key=key(),
            )
            assert paid["restored"] == ["SA-5003"]
            await asyncio.wait_for(ServiceDaemon(journal, deliverer).run(once=True), 60)
        finally:
            await deliverer.close()
        with psycopg.connect(target.dsn) as conn:
            rows = conn.execute(
                "select intf_code from service_applied where sa_id = 'SA-5003' order by id"
            ).fetchall()
    assert [r[0] for r in rows] == ["4204", "4205"]


async def test_bill_chunk_claims_pending_accounts_through_their_index(
    db_url: str, journal: Journal
) -> None:
    """The statements `billing.bill_chunk` really runs (auto_explain, nested): with 3,000
    accounts, half billed, the chunk finds its pending accounts through the partial index
    of pending ones, not by reading the run's every account."""
    seed(db_url, 3000)
    run = await open_run(journal.pool, month(1))
    await bill_some(journal, run, 1500)
    async with journal.pool.connection() as conn:
        await conn.execute("analyze billing.run_accounts")

    async def chunk(conn: Conn) -> None:
        await conn.execute("select billing.bill_chunk(%s, 50, 't')", (run,))

    async with journal.pool.connection() as conn:
        plans = await nested_plans(conn, chunk)
    # The chunk's claim of its accounts: the CTE `claimed` of the statement that marks
    # them billed (the update beside it may scan a test's few rows however it likes).
    statement = plan_of(plans, "for update skip locked")
    [cte] = [n for n in statement if n.get("Subplan Name") == "CTE claimed"]
    claim = nodes(cte)
    assert uses(claim, "run_accounts_pending"), claim
    assert not any(
        n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "run_accounts" for n in claim
    ), claim


async def bill_some(journal: Journal, run: int, accounts: int) -> None:
    async with journal.pool.connection() as conn:
        await conn.execute("select billing.bill_chunk(%s, %s, 't')", (run, accounts))
