"""Bill runs struck inside the statement that does the work: (a) the bill-run workers'
backends terminated inside `billing.bill_chunk`, (b) settlement's inside
`billing.settle_batch`, (c) the test's own PostgreSQL crashed (`pg_ctl stop -m immediate`)
inside `bill_chunk`. A hook (tests/faults.py) holds each transaction after it has written
part of its work, so every test knows the fault tore work in flight, and counts it; each
then checks that nothing of the torn work is left, and that a second run finishes the
job: every account billed once, every staged item applied once, the books balanced and
reconciled with the snapshot."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from bossa.billing import bill, reconcile, settle
from bossa.db import open_pool
from bossa.db.migrations import migrate
from bossa.journal import Journal, JournalSettings
from bossa.ledger import check
from tests.billing.conftest import month, open_run
from tests.billing.test_concurrency import PRIOR_ARREARS, seed
from tests.faults import Hook, terminate
from tests.support import own_postgres

REPO = Path(__file__).resolve().parents[2]


def cli(db_url: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BOSSA_DATABASE_URL": db_url}
    return subprocess.Popen(
        [sys.executable, "-m", "bossa.cli", "billing", "run", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def count(db_url: str, query: str, *params: object) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def quiesce(db_url: str) -> None:
    """Wait for the killed client's server sessions to end: a statement under way when
    its client died still runs to its end (and commits, if it was in autocommit)."""
    others = (
        "select count(*) from pg_stat_activity where datname = current_database()"
        " and pid <> pg_backend_pid() and state <> 'idle'"
    )
    deadline = time.monotonic() + 30
    while count(db_url, others):
        assert time.monotonic() < deadline, "the killed process's sessions never ended"
        time.sleep(0.01)


def finish(proc: subprocess.Popen[bytes]) -> str:
    try:
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = output.decode()
    assert proc.returncode == 0, text[-3000:]
    return text


async def assert_books_clean(journal: Journal, run: int) -> None:
    async with journal.pool.connection() as conn:
        assert await check(conn) == {"unbalanced_transactions": [], "balances_off": []}
    report = await reconcile(journal.pool, run)
    assert report["reconciled"], report["differences"][:10]
    assert report["totals"]["unsettled"] == 0


def rows_in_flight(db_url: str, query: str, *params: object) -> set[str]:
    """The rows `query` lists that another transaction holds locked right now: written
    (or claimed) by a transaction in flight and not committed. `query` must end where a
    `for update skip locked` may follow."""
    with psycopg.connect(db_url) as conn:
        every = {str(r[0]) for r in conn.execute(query, params).fetchall()}
        free = {str(r[0]) for r in conn.execute(query + " for update skip locked", params)}
        conn.rollback()
    return every - free


def report(request: pytest.FixtureRequest, **counts: int) -> None:
    """Print the counts a fault test measured (pytest -s, and the junit properties)."""
    print(f"{request.node.name}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    for name, value in counts.items():
        request.node.user_properties.append((name, value))


@pytest.mark.fault
async def test_bill_chunks_torn_by_terminated_backends(
    db_url: str, journal: Journal, request: pytest.FixtureRequest
) -> None:
    """Both workers' chunks are stopped inside `billing.bill_chunk` after billing 10
    accounts each (uncommitted), then their backends are terminated: the torn chunks'
    accounts are left unbilled with no bill, and a second run bills each account once."""
    accounts = 600
    seed(db_url, accounts)
    run = await open_run(journal.pool, month(1))
    hook = Hook(db_url, "billing", "run_accounts", nth=10, when="new.billed").install()
    billed = "select count(*) from billing.run_accounts where run_id = %s and billed"
    bills = "select count(*) from ledger.bills where bill_run_id = %s"
    pending = "select account_id from billing.run_accounts where run_id = %s and not billed"
    proc = cli(db_url, "bill", str(run), "--workers", "2", "--chunk", "50")
    try:
        deadline = time.monotonic() + 60
        while count(db_url, billed, run) < 100:  # some chunks commit before the fault
            assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
            assert time.monotonic() < deadline, "the bill run never got going"
            await asyncio.sleep(0.01)
        hook.arm()
        stuck = hook.wait_stuck(containing="bill_chunk", at_least=2)
        torn = rows_in_flight(db_url, pending, run)
        committed = count(db_url, billed, run)
        assert terminate(db_url, [s.pid for s in stuck]) >= 1
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        hook.disarm()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode != 0, output[-3000:]  # the fault reached the bill run
    # Each stopped chunk had billed its 10 accounts (and issued their bills) unseen.
    assert len(torn) >= 10 * len(stuck), torn
    quiesce(db_url)
    with psycopg.connect(db_url) as conn:
        left = conn.execute(
            "select count(*) filter (where billed),"
            " (select count(*) from ledger.bills where bill_run_id = %(run)s"
            "  and account_id = any(%(torn)s))"
            " from billing.run_accounts where run_id = %(run)s and account_id = any(%(torn)s)",
            {"run": run, "torn": sorted(torn)},
        ).fetchone()
    assert left == (0, 0)  # nothing half-billed: the torn chunks left nothing behind
    assert count(db_url, bills, run) == count(db_url, billed, run) >= committed

    output = finish(cli(db_url, "bill", str(run), "--workers", "2", "--chunk", "50"))
    assert count(db_url, billed, run) == accounts
    once = (
        "select count(*) from (select account_id from ledger.bills where bill_run_id = %s"
        " group by account_id having count(*) = 1) x"
    )
    assert count(db_url, once, run) == accounts
    assert count(db_url, "select count(*) from ledger.rated_usage where bill_id is null") == 0
    assert count(db_url, "select count(*) from ledger.rated_usage where bill_id = 0") == 0
    doubled = (
        "select count(*) from (select reference from ledger.transactions where kind = 'bill'"
        " and reference like 'bill:%%' group by reference having count(*) > 1) x"
    )
    assert count(db_url, doubled) == 0
    assert await bill(journal.pool, run) == 0
    await settle(journal.pool, run)
    await assert_books_clean(journal, run)
    report(request, chunks_torn=len(stuck), accounts_torn=len(torn), billed_before=committed)


@pytest.mark.fault
async def test_settlement_batch_torn_by_terminated_backend(
    db_url: str, journal: Journal, request: pytest.FixtureRequest
) -> None:
    """Settlement is stopped inside `billing.settle_batch` after posting 10 deposits of a
    batch (uncommitted), then its backend is terminated: none of the torn batch is posted
    or marked, the run stays settling (payments still staged), and a second settlement
    applies every staged item once."""
    accounts = 400
    seed(db_url, accounts)
    run = await open_run(journal.pool, month(1))
    # Thousands of staged items, as the front office would have taken during the run:
    # deposits everywhere, write-offs of the earlier arrears (every 4th account).
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "insert into billing.staged_deposits (run_id, account_id, amount, idempotency_key,"
            " received_at, received_by)"
            " select %(run)s, 'A-' || (1 + i %% %(n)s), 1000 + i, 'dep-' || i,"
            "  now() + i * interval '1 microsecond', 'front-office'"
            " from generate_series(1, 3000) i",
            {"run": run, "n": accounts},
        )
        conn.execute(
            "insert into billing.staged_writeoffs (run_id, account_id, amount, idempotency_key,"
            " received_at, received_by)"
            " select %(run)s, 'A-' || i, %(a)s, 'wo-' || i,"
            "  now() + i * interval '1 microsecond', 'front-office'"
            " from generate_series(4, %(n)s, 4) i",
            {"run": run, "n": accounts, "a": PRIOR_ARREARS},
        )
    staged = count(db_url, "select count(*) from billing.staged_deposits") + count(
        db_url, "select count(*) from billing.staged_writeoffs"
    )
    await bill(journal.pool, run, workers=2, chunk=100)
    hook = Hook(
        db_url, "billing", "staged_deposits", nth=10, when="new.settled_at is not null"
    ).install()
    applied = "select count(*) from ledger.transactions where idempotency_key like 'staged-%%'"
    unsettled = "select id from billing.staged_deposits where settled_at is null"
    proc = cli(db_url, "settle", str(run))
    try:
        deadline = time.monotonic() + 60
        while count(db_url, applied) < 400:  # some batches commit before the fault
            assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
            assert time.monotonic() < deadline, "settlement never got going"
            await asyncio.sleep(0.01)
        hook.arm()
        stuck = hook.wait_stuck(containing="settle_batch", at_least=1)
        torn = rows_in_flight(db_url, unsettled)
        committed = count(db_url, applied)
        assert terminate(db_url, [s.pid for s in stuck]) >= 1
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        hook.disarm()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode != 0, output[-3000:]
    assert len(torn) >= 10, torn  # the batch had posted 10 deposits, unseen
    assert committed < staged
    quiesce(db_url)
    with psycopg.connect(db_url) as conn:
        left = conn.execute(
            "select (select count(*) from billing.staged_deposits"
            "        where id = any(%(torn)s::bigint[]) and settled_at is not null),"
            " (select count(*) from ledger.transactions"
            "  where idempotency_key = any(select 'staged-deposit:' || t"
            "                              from unnest(%(torn)s::text[]) t))",
            {"torn": sorted(torn)},
        ).fetchone()
    assert left == (0, 0)  # the torn batch posted nothing and marked nothing
    marked = (
        "select (select count(*) from billing.staged_deposits where settled_at is not null)"
        " + (select count(*) from billing.staged_writeoffs where settled_at is not null)"
    )
    assert count(db_url, marked) == count(db_url, applied) == committed
    status = "select count(*) from billing.runs where id = %s and status = 'settling'"
    assert count(db_url, status, run) == 1  # staging goes on until settlement really ends

    finish(cli(db_url, "settle", str(run)))
    assert count(db_url, applied) == staged
    assert count(db_url, marked) == staged
    unique = (
        "select count(distinct idempotency_key) from ledger.transactions"
        " where idempotency_key like 'staged-%%'"
    )
    assert count(db_url, unique) == staged
    matches = (
        "select (select count(*) from billing.staged_deposits s join ledger.transactions t"
        "  on t.id = s.transaction_id and t.idempotency_key = 'staged-deposit:' || s.id"
        "  and t.amount = s.amount and t.account_id = s.account_id)"
        " + (select count(*) from billing.staged_writeoffs s join ledger.transactions t"
        "  on t.id = s.transaction_id and t.idempotency_key = 'staged-writeoff:' || s.id"
        "  and t.amount = s.amount and t.account_id = s.account_id)"
    )
    assert count(db_url, matches) == staged
    settled = "select count(*) from billing.runs where id = %s and status = 'settled'"
    assert count(db_url, settled, run) == 1
    await assert_books_clean(journal, run)
    report(request, batches_torn=len(stuck), items_torn=len(torn), applied_before=committed)


@pytest.mark.fault
async def test_bill_chunk_torn_by_a_postgresql_crash(
    journal_settings: JournalSettings, request: pytest.FixtureRequest
) -> None:
    """The test's own PostgreSQL is crashed (`pg_ctl stop -m immediate`) while both
    bill-run workers are stopped inside `billing.bill_chunk` with 10 accounts billed each:
    after crash recovery the torn chunks left nothing, and a second run finishes."""
    accounts = 1000
    # Durable: a crash of a server without fsync loses what it had committed, which is
    # no test of bossa.
    with own_postgres(durable=True) as server:
        url = server.url()
        migrate(url)
        seed(url, accounts)
        async with open_pool(url, min_size=1, max_size=4) as pool:
            run = await open_run(pool, month(1))
        hook = Hook(url, "billing", "run_accounts", nth=10, when="new.billed").install()
        billed = "select count(*) from billing.run_accounts where run_id = %s and billed"
        pending = "select account_id from billing.run_accounts where run_id = %s and not billed"
        proc = cli(url, "bill", str(run), "--workers", "2", "--chunk", "50")
        try:
            deadline = time.monotonic() + 60
            while count(url, billed, run) < 50:  # some chunks commit before the crash
                assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
                assert time.monotonic() < deadline, "the bill run never got going"
                await asyncio.sleep(0.01)
            hook.arm()
            stuck = hook.wait_stuck(containing="bill_chunk", at_least=2)
            torn = rows_in_flight(url, pending, run)
            committed = count(url, billed, run)
            # The hook's lock is held through the crash: nothing stopped may go on first.
            await asyncio.to_thread(server.crash)
            hook.close()
            output = proc.communicate(timeout=60)[0].decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            if proc.stdout:
                proc.stdout.close()
        assert proc.returncode != 0, output[-3000:]  # the crash reached the bill run
        assert len(torn) >= 10 * len(stuck), torn
        await asyncio.to_thread(server.start)  # crash recovery
        hook.disarm()
        with psycopg.connect(url) as conn:
            left = conn.execute(
                "select count(*) filter (where billed),"
                " (select count(*) from ledger.bills where bill_run_id = %(run)s"
                "  and account_id = any(%(torn)s))"
                " from billing.run_accounts where run_id = %(run)s"
                " and account_id = any(%(torn)s)",
                {"run": run, "torn": sorted(torn)},
            ).fetchone()
        assert left == (0, 0)  # the torn chunks were rolled back by crash recovery
        bills = "select count(*) from ledger.bills where bill_run_id = %s"
        assert count(url, bills, run) == count(url, billed, run) == committed
        finish(cli(url, "bill", str(run), "--workers", "2", "--chunk", "50"))
        assert count(url, billed, run) == accounts
        once = (
            "select count(*) from (select account_id from ledger.bills where bill_run_id = %s"
            " group by account_id having count(*) = 1) x"
        )
        assert count(url, once, run) == accounts
        async with open_pool(url, min_size=1, max_size=4) as pool:
            crashed = Journal(pool, journal_settings, actor="test")
            await settle(pool, run)
            await assert_books_clean(crashed, run)
    report(request, chunks_torn=len(stuck), accounts_torn=len(torn), billed_before=committed)
