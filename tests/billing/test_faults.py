"""Bill-run processes killed with SIGKILL: (a) a billing worker mid-run, (b) settlement
mid-way. Re-run, each finishes the job: every account billed once, every staged item
applied once, the books balanced and reconciled with the snapshot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from bossa.billing import bill, reconcile, settle
from bossa.journal import Journal
from bossa.ledger import check
from tests.billing.conftest import month, open_run
from tests.billing.test_concurrency import PRIOR_ARREARS, seed

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


def kill_when(
    proc: subprocess.Popen[bytes], db_url: str, query: str, at_least: int, *params: object
) -> int:
    """SIGKILL the process as soon as `query` counts at least `at_least`; returns the count
    seen just after the kill."""
    deadline = time.monotonic() + 60
    try:
        while count(db_url, query, *params) < at_least:
            if proc.poll() is not None:
                output = proc.communicate()[0].decode()[-3000:]
                pytest.fail(f"the process ended before it could be killed:\n{output}")
            if time.monotonic() > deadline:
                pytest.fail("the process never got going")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        quiesce(db_url)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
    return count(db_url, query, *params)


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


@pytest.mark.fault
async def test_bill_worker_killed_mid_run(db_url: str, journal: Journal) -> None:
    accounts = 3000
    seed(db_url, accounts)
    run = await open_run(journal.pool, month(1))
    billed = "select count(*) from billing.run_accounts where run_id = %s and billed"
    bills = "select count(*) from ledger.bills where bill_run_id = %s"
    seen = kill_when(
        cli(db_url, "bill", str(run), "--workers", "2", "--chunk", "50"), db_url, billed, 300, run
    )
    assert 300 <= seen < accounts, f"too quick to kill mid-run: {seen}"
    assert count(db_url, bills, run) == seen  # a chunk killed mid-way left nothing behind
    status = "select count(*) from billing.runs where id = %s and status = 'running'"
    assert count(db_url, status, run) == 1

    output = finish(cli(db_url, "bill", str(run), "--workers", "2", "--chunk", "50"))
    assert f"{accounts - seen} accounts billed by this process" in output.replace("\n", " ")
    assert count(db_url, billed, run) == accounts
    assert count(db_url, bills, run) == accounts
    once = (
        "select count(*) from (select account_id from ledger.bills where bill_run_id = %s"
        " group by account_id having count(*) = 1) x"
    )
    assert count(db_url, once, run) == accounts
    # Usage billed once: every rated record of the period carries exactly one real bill.
    assert count(db_url, "select count(*) from ledger.rated_usage where bill_id is null") == 0
    assert count(db_url, "select count(*) from ledger.rated_usage where bill_id = 0") == 0
    # One bill posting per billed account with charges; none doubled.
    doubled = (
        "select count(*) from (select reference from ledger.transactions where kind = 'bill'"
        " and reference like 'bill:%%' group by reference having count(*) > 1) x"
    )
    assert count(db_url, doubled) == 0
    assert await bill(journal.pool, run) == 0
    await settle(journal.pool, run)
    await assert_books_clean(journal, run)


@pytest.mark.fault
async def test_settlement_killed_mid_way(db_url: str, journal: Journal) -> None:
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

    applied = "select count(*) from ledger.transactions where idempotency_key like 'staged-%%'"
    seen = kill_when(cli(db_url, "settle", str(run)), db_url, applied, 400)
    assert 400 <= seen < staged, f"too quick to kill mid-settlement: {seen}"
    marked = (
        "select (select count(*) from billing.staged_deposits where settled_at is not null)"
        " + (select count(*) from billing.staged_writeoffs where settled_at is not null)"
    )
    assert count(db_url, marked) == seen  # each item is posted and marked together
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
