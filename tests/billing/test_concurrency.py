"""Concurrent clients pay deposits and arrears throughout a bill run over 10,000
accounts: every payment answered at once, staged once, settled once; restores sent
during the run; every account billed once; the books reconcile with the snapshot."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bossa.billing import PaymentRequest, bill, pay, reconcile, settle
from bossa.db import open_pool
from bossa.journal import Journal, JournalSettings
from bossa.ledger import check
from tests.billing.conftest import key as new_key
from tests.billing.conftest import month, open_run

ACCOUNTS = 10_000
PRODUCTS = {"CBASIC": 10_000, "CDATA": 20_000, "CTV": 5_000}  # KRW a month
PRIOR_ARREARS = 35_000
PRIOR_DEPOSIT = 50_000
CLIENTS = 4
MAX_LATENCY_S = 2.0


def seed(db_url: str, n: int) -> None:
    """n customers with three contracts each and a KRW account; every 4th account owes
    PRIOR_ARREARS from before, every 8th is suspended for it; every 4th (offset 1) has
    prepaid funds; every 3rd used the network in last month's period (`month(1)`)."""
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "insert into customers.products (code, name)"
            " select code, code from unnest(%s::text[]) code",
            (list(PRODUCTS),),
        )
        conn.execute(
            "insert into customers.product_prices"
            " (product_code, kind, period, amount, currency, valid_from)"
            " select code, 'recurring', 'monthly', fee, 'KRW', date '1900-01-01'"
            " from unnest(%s::text[], %s::bigint[]) u(code, fee)",
            (list(PRODUCTS), list(PRODUCTS.values())),
        )
        conn.execute(
            "insert into customers.customers (id, name)"
            " select 'C-' || i, 'Customer ' || i from generate_series(1, %s) i",
            (n,),
        )
        # Accounts before the contracts that name them: a contract names only an account
        # that exists.
        conn.execute(
            "insert into ledger.accounts (id, customer_id, currency)"
            " select 'A-' || i, 'C-' || i, 'KRW' from generate_series(1, %s) i",
            (n,),
        )
        conn.execute(
            "insert into customers.contracts"
            " (sa_id, customer_id, product_code, account_id, start_date)"
            " select 'SA-' || i || '-' || p, 'C-' || i, p, 'A-' || i, date '2000-01-01'"
            " from generate_series(1, %s) i, unnest(%s::text[]) p",
            (n, list(PRODUCTS)),
        )
        conn.execute(
            "select ledger.post('A-' || i, 'bill', %(a)s,"
            " array['receivable', 'revenue']::ledger.book[], array[%(a)s, -%(a)s]::bigint[],"
            " null, 'seed:' || i, 'seed') from generate_series(4, %(n)s, 4) i",
            {"a": PRIOR_ARREARS, "n": n},
        )
        conn.execute(
            "select ledger.post('A-' || i, 'deposit', %(a)s,"
            " array['cash', 'prepaid']::ledger.book[], array[%(a)s, -%(a)s]::bigint[],"
            " null, null, 'seed') from generate_series(1, %(n)s, 4) i",
            {"a": PRIOR_DEPOSIT, "n": n},
        )
        conn.execute(
            "insert into ledger.rated_usage (account_id, used_at, charge)"
            " select 'A-' || i, %s::date + time '12:00', 100 + i %% 900"
            " from generate_series(3, %s, 3) i",
            (month(1)[0] + timedelta(days=14), n),
        )
        conn.execute(
            "update ledger.accounts set status = 'suspended' where substr(id, 3)::int % 8 = 0"
        )
        conn.execute(
            "update customers.contracts c set status = 'suspended' from ledger.accounts a"
            " where a.customer_id = c.customer_id and a.status = 'suspended'"
        )


@pytest.fixture
async def wide(db_url: str, journal_settings: JournalSettings) -> AsyncIterator[Journal]:
    """A journal over a pool wide enough for the workers, the settler and every client."""
    async with open_pool(db_url, min_size=4, max_size=CLIENTS + 6) as opened:
        yield Journal(opened, journal_settings, actor="test")


async def test_payment_between_settlement_and_posting_reconciles(
    db_url: str, journal: Journal
) -> None:
    """A payment whose transaction began before settlement ended staging, and that
    posts online after it, is part of the books after the run: reconcile must agree."""
    seed(db_url, 8)
    pool = journal.pool
    run = await open_run(pool, month(1))
    await bill(pool, run, workers=1, chunk=10)
    async with await psycopg.AsyncConnection.connect(db_url) as holder:
        # A front-office session holds the account's row (as pay itself does first).
        await holder.execute("select 1 from ledger.accounts where id = 'A-1' for update")
        late = asyncio.create_task(
            pay(
                journal,
                PaymentRequest(account="A-1", amount="700", currency="KRW"),
                kind="deposit",
                actor="t",
                idempotency_key=new_key(),
            )
        )
        await asyncio.sleep(0.3)  # the payment's transaction has begun and waits
        assert not late.done()
        await settle(pool, run)
        await holder.rollback()
    answer = await late
    assert answer["status"] == "posted"
    report = await reconcile(pool, run)
    assert report["reconciled"], report["differences"]


class Clients:
    """Front-office clients paying while the run goes on; every answer recorded."""

    def __init__(
        self,
        journal: Journal,
        db_url: str,
        arrears: list[str],
        accounts: int = ACCOUNTS,
        pause_s: float = 0.0,
    ) -> None:
        self.journal = journal
        self.pause_s = pause_s
        self.accounts = accounts
        self.db_url = db_url
        self.arrears = arrears  # accounts that owe, each paid off by one client
        self.stop = asyncio.Event()
        self.answers: dict[str, dict[str, Any]] = {}  # idempotency key -> first answer
        self.requests: dict[str, tuple[PaymentRequest, str]] = {}
        self.replays: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.latencies: list[float] = []
        self.errors: list[BaseException] = []

    async def _pay(self, request: PaymentRequest, kind: str, key: str) -> dict[str, Any]:
        began = time.monotonic()
        try:
            answer = await pay(
                self.journal, request, kind=kind, actor="client", idempotency_key=key
            )
        except Exception as exc:
            self.errors.append(exc)
            raise
        finally:
            self.latencies.append(time.monotonic() - began)
        return answer

    async def depositor(self, me: int) -> None:
        rng = random.Random(me)
        n = 0
        while not self.stop.is_set():
            await asyncio.sleep(self.pause_s)
            if self.answers and rng.random() < 0.15:  # a client sends a request again
                key = rng.choice(list(self.answers))
                request, kind = self.requests[key]
                self.replays.append((self.answers[key], await self._pay(request, kind, key)))
                continue
            n += 1
            key = f"dep-{me}-{n}"
            account = f"A-{rng.randint(1, self.accounts)}"
            request = PaymentRequest(
                account=account, amount=str(rng.randint(1, 90_000)), currency="KRW"
            )
            self.requests[key] = (request, "deposit")
            self.answers[key] = await self._pay(request, "deposit", key)

    async def payer(self, me: int) -> None:
        """Pays off whole arrears, as a customer would who reads what they owe first."""
        n = 0
        while not self.stop.is_set() and self.arrears:
            account = self.arrears.pop()
            while True:
                await asyncio.sleep(self.pause_s)
                owed = await self.owed(account)
                if owed <= 0:
                    break
                n += 1
                key = f"arr-{me}-{n}"
                request = PaymentRequest(account=account, amount=str(owed), currency="KRW")
                self.requests[key] = (request, "arrears")
                self.answers[key] = await self._pay(request, "arrears", key)
                if self.answers[key]["restored"]:
                    break

    async def owed(self, account: str) -> int:
        async with self.journal.pool.connection() as conn:
            row = await (
                await conn.execute(
                    "select coalesce((select amount from ledger.balances"
                    "  where account_id = %(a)s and book = 'receivable'), 0)"
                    " - coalesce((select sum(amount) from billing.staged_writeoffs"
                    "  where account_id = %(a)s and settled_at is null), 0) as owed",
                    {"a": account},
                )
            ).fetchone()
        assert row is not None
        return int(row["owed"])


async def scalar(journal: Journal, query: str, params: dict[str, Any] | None = None) -> Any:
    async with journal.pool.connection() as conn:
        row = await (await conn.execute(query, params)).fetchone()
    assert row is not None
    return next(iter(row.values()))


@pytest.mark.slow
async def test_payments_throughout_a_run_over_10000_accounts(db_url: str, wide: Journal) -> None:
    seed(db_url, ACCOUNTS)
    journal, pool = wide, wide.pool
    suspended = [f"A-{i}" for i in range(8, ACCOUNTS + 1, 8)]
    other_arrears = [f"A-{i}" for i in range(4, ACCOUNTS + 1, 8)]
    # Paced: an unpaced stream outruns settlement, which then never ends (see below).
    clients = Clients(journal, db_url, other_arrears[:150] + suspended[:150], pause_s=0.02)
    random.Random(7).shuffle(clients.arrears)
    tasks = [asyncio.create_task(clients.depositor(i)) for i in range(CLIENTS - 2)]
    tasks += [asyncio.create_task(clients.payer(i)) for i in range(2)]

    began = time.monotonic()
    await asyncio.sleep(0.3)  # some payments post online before the run
    run = await open_run(pool, month(1))
    # The run stays open a moment before billing: billing a chunk set-based takes the
    # 10,000 accounts in a few seconds, too short for the payers to restore some during it.
    await asyncio.sleep(1.0)
    billed = await bill(pool, run, workers=2, chunk=500)
    await asyncio.sleep(0.3)  # the run is over; payments are still staged until settled
    await settle(pool, run)
    await asyncio.sleep(0.3)  # and post online again
    clients.stop.set()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - began

    # Nothing refused or lost; each answered at once; replays give the first answer.
    assert clients.errors == []
    assert billed == ACCOUNTS
    answers = clients.answers
    statuses = {a["status"] for a in answers.values()}
    assert statuses == {"posted", "staged"}, statuses
    assert max(clients.latencies) < MAX_LATENCY_S, sorted(clients.latencies)[-5:]
    assert clients.replays, "no request was sent twice"
    for first, again in clients.replays:
        assert again == {**first, "replay": True}
    staged = {k: a for k, a in answers.items() if a["status"] == "staged"}
    assert all(a["run_id"] == run for a in staged.values())
    rows = {}
    for table in ("staged_deposits", "staged_writeoffs"):
        async with pool.connection() as conn:
            found = await (
                await conn.execute(
                    sql.SQL(
                        "select idempotency_key, id, amount, transaction_id, settled_at"
                        " from billing.{} where run_id = %s"
                    ).format(sql.Identifier(table)),
                    (run,),
                )
            ).fetchall()
        for row in found:
            assert (table, row["idempotency_key"]) not in rows  # each staged item once
            rows[(table, row["idempotency_key"])] = row
    assert {k for _, k in rows} == set(staged)
    for key, answer in staged.items():
        # An arrears payment is a write-off, and a deposit for what it pays beyond them.
        parts = (
            [("staged_deposits", answer["amount_minor"])]
            if answer["kind"] == "deposit"
            else [("staged_writeoffs", answer["writeoff_minor"]),
                  ("staged_deposits", answer["deposit_minor"])]
        )  # fmt: skip
        parts = [(table, amount) for table, amount in parts if amount]
        assert rows[(parts[0][0], key)]["id"] == answer["staged_id"]
        for table, amount in parts:
            assert rows[(table, key)]["amount"] == amount
            assert rows[(table, key)]["settled_at"] is not None
        assert sum(amount for _, amount in parts) == answer["amount_minor"]
    posted = [a["transaction_id"] for a in answers.values() if a["status"] == "posted"]
    assert len(set(posted)) == len(posted)
    assert await scalar(
        journal, "select count(*) from ledger.transactions where id = any(%(ids)s)", {"ids": posted}
    ) == len(posted)
    settled_tx = [r["transaction_id"] for r in rows.values()]
    assert await scalar(
        journal,
        "select count(*) from ledger.transactions where id = any(%(ids)s)"
        " and idempotency_key like 'staged-%%'",
        {"ids": settled_tx},
    ) == len(rows)

    # Arrears paid during the run restored service at once: queued before settlement.
    restored = {a["account"]: a["restored"] for a in staged.values() if a["restored"]}
    # How many depends on how long the run lasts (it got shorter as billing and
    # settlement got faster); what matters is that there are some, all queued in time.
    assert len(restored) >= 3, len(restored)
    assert set(restored) <= set(suspended)
    async with pool.connection() as conn:
        entries = await (
            await conn.execute(
                "select payload->>'account' as account, payload->>'sa_id' as sa_id, created_at"
                " from journal.entries where lane = 'billing.service' and kind = 'service.resume'"
            )
        ).fetchall()
        settled_at = await scalar(
            journal, "select settled_at from billing.runs where id = %(r)s", {"r": run}
        )
    queued: dict[str, set[str]] = {}
    for entry in entries:
        queued.setdefault(entry["account"], set()).add(entry["sa_id"])
    for account, contracts in restored.items():
        assert queued[account] == set(contracts)
        assert len(contracts) == 3
    assert all(e["created_at"] < settled_at for e in entries if e["account"] in restored)

    # Every account billed exactly once; books balanced and reconciled with the snapshot.
    assert (
        await scalar(
            journal,
            "select count(*) from (select account_id from ledger.bills where bill_run_id = %(r)s"
            " group by account_id having count(*) = 1) once",
            {"r": run},
        )
        == ACCOUNTS
    )
    assert (
        await scalar(
            journal, "select count(*) from ledger.bills where bill_run_id = %(r)s", {"r": run}
        )
        == ACCOUNTS
    )
    async with pool.connection() as conn:
        assert await check(conn) == {"unbalanced_transactions": [], "balances_off": []}
    report = await reconcile(pool, run)
    assert report["reconciled"], report["differences"][:10]
    assert report["totals"]["unsettled"] == 0
    print(
        f"{len(answers)} payments ({len(staged)} staged, {len(clients.replays)} replays,"
        f" {len(restored)} restores) in {elapsed:.1f}s; latency max"
        f" {max(clients.latencies) * 1000:.0f} ms"
    )


@pytest.mark.slow
async def test_settlement_ends_while_deposits_keep_coming(db_url: str, wide: Journal) -> None:
    """B4/B5: settlement must come to an end (and staging with it) even while the front
    office keeps taking deposits faster than one settler applies them one by one."""
    seed(db_url, 500)
    journal, pool = wide, wide.pool
    clients = Clients(journal, db_url, [], accounts=500)
    run = await open_run(pool, month(1))
    tasks = [asyncio.create_task(clients.depositor(i)) for i in range(3)]
    try:
        await asyncio.sleep(1)
        await bill(pool, run, workers=2, chunk=500)
        async with asyncio.timeout(20):
            await settle(pool, run)
    finally:
        clients.stop.set()
        await asyncio.gather(*tasks)
    assert clients.errors == []
    report = await reconcile(pool, run)
    assert report["reconciled"], report["differences"][:10]
