"""bossa's bill run: throughput against a raw set-based bound, and payment latency
while a run bills.

    .venv/bin/python -m bench.billing.run [--quick] [--json FILE] [--no-results]

Starts a private durable PostgreSQL (fsync on), loads N accounts (three contracts each:
a monthly product whose price changes inside the period, a monthly one with a one-off
fee, a quarterly one; some contracts start or end inside the period; twenty rated usage
records each; a third of them with prepaid funds) into a template database, and for
every (workers, chunk) setting bills a fresh copy with `bossa.billing.bill`, then
settles and reconciles. The peer is the set-based SQL that computes the same charges
(proration, periods, price versions, one-off fees) and makes the same ledger writes.
Then payments: 8 clients paying deposits with no run open,
and the same while a run bills in the background. Prints the settings, figures, ratios
and targets, and where the time goes inside `billing.bill_chunk`; appends a dated
section to bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import re
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.common import Cpu, append_section, base_parser, fmt, free_port, git_ref, pct  # noqa: E402
from bossa.billing import (  # noqa: E402
    PaymentRequest,
    WindowRequest,
    add_window,
    bill,
    pay,
    reconcile,
    settle,
    start_run,
)
from bossa.db import EmbeddedPostgres, open_pool  # noqa: E402
from bossa.db.migrations import migrate  # noqa: E402
from bossa.journal import Journal  # noqa: E402

# Last month: a run bills a period that has begun and ended within the look-back.
PERIOD_END = dt.date.today().replace(day=1) - dt.timedelta(days=1)
PERIOD_START = PERIOD_END.replace(day=1)
TARGET_RATE = 2_300_000.0  # accounts per hour
TARGET_P99_RATIO = 1.5
TARGET_RAW_RATIO = 0.6  # issue 12: the bill run against the set-based SQL, same writes
# The price change of ADSL inside the period: the old price before, the new from then.
CHANGE = PERIOD_START + dt.timedelta(days=15)
SINCE = dt.date(1900, 1, 1)
#: (product, kind, period, amount, valid_from, valid_to)
PRICES = [
    ("ADSL", "recurring", "monthly", 2_500_000, SINCE, CHANGE),
    ("ADSL", "recurring", "monthly", 2_700_000, CHANGE, None),
    ("WIBRO", "recurring", "monthly", 1_900_000, SINCE, None),
    ("WIBRO", "one_off", None, 50_000, SINCE, None),
    ("SOIP", "recurring", "quarterly", 2_700_000, SINCE, None),
]
PRODUCTS = ["ADSL", "WIBRO", "SOIP"]


@dataclass
class Settings:
    quick: bool
    accounts: int = 100_000
    usage_per_account: int = 20
    prepaid_every: int = 3  # every n-th account has prepaid funds
    # Accounts in the billed cycle; the rest of the copy is moved to another cycle, so
    # a run bills a subset on full-size tables (None: all of them).
    run_accounts: int | None = None
    cells: list[tuple[int, int]] = field(default_factory=list)  # (workers, chunk)
    payers: int = 8
    pay_window_s: float = 20.0
    pay_workers: int = 1  # the background run during the payment phase: bill()'s defaults
    pay_chunk: int = 500

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if quick:
            return cls(quick=True, accounts=10_000, cells=[(1, 500), (2, 500)], pay_window_s=6.0)
        # Every cell bills all 100,000 accounts (it billed 2,000 while a usage scan made a
        # full run take 25 minutes per cell; fixed in billing.bill_chunk).
        return cls(quick=False, cells=[(1, 500), (2, 500), (2, 1000)])


# -- data ------------------------------------------------------------------------------

SEED = """
insert into customers.products (code, name)
select code, code || ' plan' from unnest(%(codes)s::text[]) code;
insert into customers.customers (id, name, msisdn)
select 'C-' || lpad(g::text, 7, '0'), 'Customer ' || g, '+8210' || lpad(g::text, 8, '0')
from generate_series(1, %(n)s) g;
insert into ledger.accounts (id, customer_id, currency, created_by)
select 'A-' || lpad(g::text, 7, '0'), 'C-' || lpad(g::text, 7, '0'), 'KRW', 'bench'
from generate_series(1, %(n)s) g;
-- Every 10th account's contracts start inside the period, every 15th's end inside it,
-- and 5%% are terminated (no dates: billed nothing).
insert into customers.contracts (sa_id, customer_id, account_id, product_code, status,
                                 start_date, end_date)
select 'SA-' || lpad(g::text, 7, '0') || '-' || p.code, 'C-' || lpad(g::text, 7, '0'),
       'A-' || lpad(g::text, 7, '0'), p.code,
       case when (g + p.i) %% 20 = 0 then 'terminated' else 'active' end,
       case when g %% 10 = 0 then %(start)s::date + g %% 28 else date '2020-01-01' end,
       case when g %% 15 = 0
            then greatest(%(start)s::date + g %% 20 + 1, %(start)s::date + g %% 28 + 3) end
from generate_series(1, %(n)s) g, unnest(%(codes)s::text[]) with ordinality as p(code, i);
insert into ledger.rated_usage (account_id, used_at, charge, description)
select 'A-' || lpad(g::text, 7, '0'),
       %(start)s::timestamptz + make_interval(days => (g + k) %% 28, hours => k),
       1000 + (g * 7 + k * 13) %% 50000, 'voice'
from generate_series(1, %(n)s) g, generate_series(1, %(k)s) k;
"""

PRICE_ROW = """
insert into customers.product_prices (product_code, kind, period, amount, currency,
                                      valid_from, valid_to)
values (%s, %s, %s, %s, 'KRW', %s, %s)
"""

# Prepaid funds through ledger.post itself, set-based: balanced, balances kept.
DEPOSITS = """
select count(ledger.post(id, 'deposit', amt, array['cash', 'prepaid']::ledger.book[],
                         array[amt, -amt], null, 'seed', 'bench'))
from (select id, (1 + substr(id, 3)::int %% 9) * 1000000::bigint as amt
      from ledger.accounts where substr(id, 3)::int %% %(every)s = 0) s
"""

# The charges, set-based over every contract of the cycle: the rules of
# docs/billing.md written again here (not billing.period_charges), so the billed totals
# of bossa and of the peer cross-check each other.
RECURRING = """
with terms as (
    select c.account_id, c.product_code, c.start_date as cs,
           case when c.status = 'terminated'
                then coalesce(c.end_date, c.status_changed_at::date, c.start_date)
                else c.end_date end as ce
    from customers.contracts c
    join ledger.accounts a on a.id = c.account_id and a.bill_cycle = 'MONTHLY'
),
priced as (
    select t.*, v.kind, v.period, v.amount, v.valid_from, v.valid_to,
           greatest(t.cs, v.valid_from) as lo,
           least(coalesce(t.ce, 'infinity'::date), coalesce(v.valid_to, 'infinity'::date)) as hi
    from terms t join customers.product_prices v on v.product_code = t.product_code
    where (t.ce is null or t.ce > t.cs) and v.valid_from < coalesce(t.ce, 'infinity'::date)
      and coalesce(v.valid_to, 'infinity'::date) > t.cs
),
pieces as (
    select p.account_id, p.amount, p.cs, p.lo, p.hi, s::date as ps,
           (s + case p.period when 'monthly' then interval '1 month'
                              when 'quarterly' then interval '3 months'
                              else interval '1 year' end)::date as pe
    from priced p,
         generate_series(date_trunc(case p.period when 'monthly' then 'month'
                                                  when 'quarterly' then 'quarter'
                                                  else 'year' end, %(start)s::timestamp),
                         %(end)s::timestamp,
                         case p.period when 'monthly' then interval '1 month'
                                       when 'quarterly' then interval '3 months'
                                       else interval '1 year' end) s
    where p.kind = 'recurring'
),
charged as (
    select account_id,
           ((amount * d) / n + case when 2 * ((amount * d) %% n) > n then 1
                                    when 2 * ((amount * d) %% n) = n
                                         and (amount * d) / n %% 2 = 1 then 1
                                    else 0 end) as amount
    from (select account_id, amount, least(pe, hi) - greatest(ps, lo) as d, pe - ps as n
          from pieces
          where greatest(ps, lo) < least(pe, hi)
            and greatest(ps, cs) between %(start)s::date and %(end)s::date) x
    union all
    select account_id, amount from priced
    where kind = 'one_off' and valid_from <= cs and cs between %(start)s::date and %(end)s::date
)
select account_id, sum(amount) as recurring from charged group by 1
"""
USAGE = """
select account_id, sum(charge) as usage from ledger.rated_usage
where bill_id is null and used_at < (%(end)s::date + 1)::timestamptz group by 1
"""
BILLS = f"""
select a.id as account_id, coalesce(r.recurring, 0) as recurring, coalesce(u.usage, 0) as usage
from ledger.accounts a
left join ({RECURRING}) r on r.account_id = a.id
left join ({USAGE}) u on u.account_id = a.id
where a.bill_cycle = 'MONTHLY'
"""  # noqa: S608  the bench's own SQL fragments and an int()

# The peer named in the brief: the same bills, one statement into a scratch table.
RAW_BILLS = f"""
insert into bench_raw_bills (account_id, recurring, usage, amount)
select account_id, recurring, usage, recurring + usage from ({BILLS}) b
"""  # noqa: S608  the bench's own SQL fragments and an int()

# A second, stricter bound: everything bill_chunk writes, set-based (bills, usage
# marked, bill and bill_from_prepaid transactions, postings, balances).
RAW_LEDGER = [
    f"create temp table rb on commit drop as {BILLS}",
    # Statistics for the temporary tables, as anyone writing this SQL by hand would
    # (without them the planner guesses their size and picks nested loops).
    "analyze rb",
    "create temp table bb (bill_id bigint, account_id text, amount bigint, x bigint)"
    " on commit drop",
    """with b as (
        insert into ledger.bills (account_id, bill_run_id, period_start, period_end,
                                  recurring, usage, amount, paid_from_prepaid, due_date)
        select rb.account_id, null, %(start)s, %(end)s, recurring, usage, recurring + usage,
               least(greatest(coalesce(-p.amount, 0), 0), recurring + usage),
               %(end)s::date + 20
        from rb left join ledger.balances p on p.account_id = rb.account_id
                                           and p.book = 'prepaid'
        returning id, account_id, amount, paid_from_prepaid)
    insert into bb select * from b""",
    "analyze bb",
    """update ledger.rated_usage u set bill_id = bb.bill_id from bb
    where u.account_id = bb.account_id and u.bill_id is null
      and u.used_at < (%(end)s::date + 1)::timestamptz""",
    """create temp table tx on commit drop as
    select bb.account_id, bb.bill_id, 'bill' as kind, bb.amount,
           array['receivable', 'revenue']::ledger.book[] as books,
           array[bb.amount, -bb.amount] as amounts
    from bb where bb.amount > 0
    union all
    select bb.account_id, bb.bill_id, 'bill_from_prepaid', bb.x,
           array['prepaid', 'receivable']::ledger.book[], array[bb.x, -bb.x]
    from bb where bb.x > 0""",
    "analyze tx",
    """with t as (
        insert into ledger.transactions (account_id, kind, amount, reference, created_by)
        select account_id, kind, amount, 'bill:' || bill_id, 'bench' from tx
        returning id, account_id, kind)
    insert into ledger.postings (transaction_id, account_id, book, amount)
    select t.id, t.account_id, u.b, u.a
    from t join tx on tx.account_id = t.account_id and tx.kind = t.kind,
         unnest(tx.books, tx.amounts) as u(b, a)""",
    """insert into ledger.balances as bal (account_id, book, amount)
    select account_id, u.b, sum(u.a) from tx, unnest(tx.books, tx.amounts) as u(b, a)
    group by 1, 2
    on conflict (account_id, book) do update set amount = bal.amount + excluded.amount""",
]


def admin(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(statement)


def build_template(pg: EmbeddedPostgres, settings: Settings) -> float:
    t0 = time.perf_counter()
    admin(pg.url("postgres"), "create database bench_tpl")
    url = pg.url("bench_tpl")
    migrate(url)
    with psycopg.connect(url) as c:
        for statement in filter(str.strip, SEED.split(";")):
            c.execute(
                statement,
                {
                    "codes": PRODUCTS,
                    "n": settings.accounts,
                    "k": settings.usage_per_account,
                    "start": PERIOD_START,
                },
            )
            if "customers.products" in statement:
                c.cursor().executemany(PRICE_ROW, PRICES)
        c.execute(DEPOSITS, {"every": settings.prepaid_every})
        c.commit()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("vacuum analyze")
        c.execute("checkpoint")
    return time.perf_counter() - t0


def copy_db(pg: EmbeddedPostgres, name: str, run_accounts: int | None = None) -> str:
    admin(pg.url("postgres"), f"drop database if exists {name} with (force)")
    admin(pg.url("postgres"), f"create database {name} template bench_tpl strategy file_copy")
    url = pg.url(name)
    if run_accounts is not None:
        admin(
            url,
            "update ledger.accounts set bill_cycle = 'QUARTERLY'"  # noqa: S608  the bench's own SQL fragments and an int()
            f" where substr(id, 3)::int > {int(run_accounts)}",
        )
        admin(url, "vacuum analyze ledger.accounts")
    return url


def drop_db(pg: EmbeddedPostgres, name: str) -> None:
    admin(pg.url("postgres"), f"drop database if exists {name} with (force)")


async def open_run(pool: Any) -> int:
    """The period's run, inside a bill-run window planned for it (runs open only in one)."""
    now = dt.datetime.now(dt.UTC)
    window = WindowRequest(
        bill_cycle="MONTHLY",
        planned_start=now - dt.timedelta(minutes=1),
        planned_end=now + dt.timedelta(hours=8),
    )
    await add_window(pool, window, actor="bench")
    return await start_run(
        pool, cycle="MONTHLY", period_start=PERIOD_START, period_end=PERIOD_END, actor="bench"
    )


async def close_run(pool: Any, run_id: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    applied = await settle(pool, run_id)
    t1 = time.perf_counter()
    report = await reconcile(pool, run_id)
    t2 = time.perf_counter()
    return {
        "settled_items": applied,
        "settle_s": t1 - t0,
        "reconcile_s": t2 - t1,
        "reconciled": report["reconciled"],
        "differences": len(report["differences"]),
        "difference_sample": [dict(d) for d in report["differences"][:3]],
        "bills": int(report["totals"]["bills"]),
        "billed_amount": int(report["totals"]["billed"]),
    }


# -- 1. throughput ---------------------------------------------------------------------


async def bill_cell(
    pg: EmbeddedPostgres, name: str, workers: int, chunk: int, run_accounts: int | None
) -> dict[str, Any]:
    url = copy_db(pg, name, run_accounts)
    try:
        admin(url, "checkpoint")
        async with open_pool(url, min_size=1, max_size=workers + 2) as pool:
            t0 = time.perf_counter()
            run_id = await open_run(pool)
            start_s = time.perf_counter() - t0
            with Cpu() as cpu:
                billed = await bill(pool, run_id, workers=workers, chunk=chunk)
            closed = await close_run(pool, run_id)
        return {
            "workers": workers,
            "chunk": chunk,
            "billed": billed,
            "start_run_s": start_s,
            "bill_s": cpu.wall,
            "per_hour": billed / cpu.wall * 3600,
            "cpu": cpu.summary(),
            **closed,
        }
    finally:
        drop_db(pg, name)


def raw_bound(pg: EmbeddedPostgres) -> dict[str, Any]:
    url = copy_db(pg, "bench_raw")
    params = {"start": PERIOD_START, "end": PERIOD_END}
    try:
        admin(url, "checkpoint")
        with psycopg.connect(url) as c:
            c.execute(
                "create table bench_raw_bills (account_id text primary key,"
                " recurring bigint not null, usage bigint not null, amount bigint not null)"
            )
            c.commit()
            t0 = time.perf_counter()
            n = c.execute(RAW_BILLS, params).rowcount
            c.commit()
            bills_s = time.perf_counter() - t0
            total = c.execute("select sum(amount) from bench_raw_bills").fetchone()[0]
            admin(url, "checkpoint")
            t0 = time.perf_counter()
            steps = []
            for statement in RAW_LEDGER:
                t1 = time.perf_counter()
                c.execute(statement, params)
                steps.append((_normalise(statement)[:70], (time.perf_counter() - t1) * 1000))
            c.commit()
            ledger_s = time.perf_counter() - t0
            ledger_n = c.execute("select count(*) from ledger.bills").fetchone()[0]
            unbalanced = c.execute(
                "select count(*) from (select transaction_id from ledger.postings"
                " group by 1 having sum(amount) <> 0) x"
            ).fetchone()[0]
        return {
            "accounts": n,
            "bills_s": bills_s,
            "bills_per_hour": n / bills_s * 3600,
            "billed_amount": int(total),
            "ledger_s": ledger_s,
            "ledger_per_hour": ledger_n / ledger_s * 3600,
            "ledger_unbalanced": unbalanced,
            "ledger_steps": steps,
        }
    finally:
        drop_db(pg, "bench_raw")


# -- 2. payment latency ----------------------------------------------------------------


async def payments(pg: EmbeddedPostgres, settings: Settings, n_accounts: int) -> dict[str, Any]:
    url = copy_db(pg, "bench_pay", settings.run_accounts)
    try:
        admin(url, "checkpoint")
        ids = [f"A-{g:07d}" for g in range(1, n_accounts + 1)]
        samples: list[tuple[str, float, str]] = []  # (phase, latency ms, status)
        phase = {"now": "warmup"}
        stop = asyncio.Event()
        async with (
            open_pool(url, min_size=settings.payers, max_size=settings.payers + 2) as pay_pool,
            open_pool(url, min_size=1, max_size=settings.pay_workers + 2) as bill_pool,
        ):
            journal = Journal(pay_pool)
            rng = random.Random(7)

            async def payer() -> None:
                while not stop.is_set():
                    request = PaymentRequest(account=rng.choice(ids), amount="1000", currency="KRW")
                    tag = phase["now"]
                    t0 = time.perf_counter()
                    out = await pay(
                        journal,
                        request,
                        kind="deposit",
                        actor="bench",
                        idempotency_key=uuid.uuid4().hex,
                    )
                    samples.append((tag, (time.perf_counter() - t0) * 1000, out["status"]))

            tasks = [asyncio.create_task(payer()) for _ in range(settings.payers)]
            waits: dict[str, list[int]] = defaultdict(list)  # phase -> payers waiting on locks

            async def sampler() -> None:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
                    while not stop.is_set():
                        row = await (
                            await c.execute(
                                "select count(*) from pg_stat_activity where"
                                " wait_event_type = 'Lock' and query like '%%ledger.accounts%%'"
                                " and query not like '%%bill_chunk%%'"
                            )
                        ).fetchone()
                        waits[phase["now"]].append(int(row[0]))
                        await asyncio.sleep(0.05)

            sampling = asyncio.create_task(sampler())
            await asyncio.sleep(2.0)
            phase["now"] = "baseline"
            await asyncio.sleep(settings.pay_window_s)
            phase["now"] = "opening"
            t0 = time.perf_counter()
            run_id = await open_run(bill_pool)
            start_s = time.perf_counter() - t0
            phase["now"] = "billing"
            t_bill = time.perf_counter()
            billing = asyncio.create_task(
                bill(bill_pool, run_id, workers=settings.pay_workers, chunk=settings.pay_chunk)
            )
            done, _ = await asyncio.wait({billing}, timeout=settings.pay_window_s)
            window = time.perf_counter() - t_bill
            phase["now"] = "after"
            stop.set()
            await asyncio.gather(*tasks, sampling)
            billed = await billing
            bill_s = time.perf_counter() - t_bill
            closed = await close_run(bill_pool, run_id)
        by: dict[str, list[float]] = defaultdict(list)
        statuses: dict[str, set[str]] = defaultdict(set)
        for tag, ms, status in samples:
            by[tag].append(ms)
            statuses[tag].add(status)
        out: dict[str, Any] = {
            "start_run_s": start_s,
            "window_s": window,
            "bill_finished_in_window": bool(done),
            "billed": billed,
            "bill_s": bill_s,
            **closed,
        }
        for tag in ("baseline", "opening", "billing"):
            v = by.get(tag, [])
            out[tag] = {
                "n": len(v),
                "per_s": len(v) / (settings.pay_window_s if tag == "baseline" else window)
                if tag != "opening"
                else None,
                "p50": pct(v, 0.50),
                "p99": pct(v, 0.99),
                "max": max(v) if v else float("nan"),
                "status": sorted(statuses[tag]),
                "lock_waiting_avg": sum(waits[tag]) / len(waits[tag]) if waits[tag] else 0.0,
                "lock_waiting_share": (
                    sum(1 for w in waits[tag] if w) / len(waits[tag]) if waits[tag] else 0.0
                ),
            }
        return out
    finally:
        drop_db(pg, "bench_pay")


# -- diagnostics -----------------------------------------------------------------------


def _normalise(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text[:110]


async def diagnostics(pg: EmbeddedPostgres, chunk: int) -> dict[str, Any]:
    """Where the time goes inside billing.bill_chunk: every statement it runs (nested ones
    too, through auto_explain at NOTICE level), and standalone plans of the per-account
    statements for one account."""
    url = copy_db(pg, "bench_diag", chunk * 3)
    try:
        async with open_pool(url, min_size=1, max_size=2) as pool:
            run_id = await open_run(pool)
        with psycopg.connect(url, autocommit=True) as c:
            t0 = time.perf_counter()
            plain = c.execute(
                "select billed from billing.bill_chunk(%s, %s, 'bench')", (run_id, chunk)
            ).fetchone()[0]
            plain_ms = (time.perf_counter() - t0) * 1000
            notices: list[str] = []
            c.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
            for setting in (
                "load 'auto_explain'",
                "set auto_explain.log_min_duration = 0",
                "set auto_explain.log_analyze = on",
                "set auto_explain.log_timing = off",
                "set auto_explain.log_buffers = on",
                "set auto_explain.log_nested_statements = on",
                "set auto_explain.log_format = json",
                "set auto_explain.log_level = notice",
                "set client_min_messages = notice",
            ):
                c.execute(setting)
            t0 = time.perf_counter()
            traced = c.execute(
                "select billed from billing.bill_chunk(%s, %s, 'bench')", (run_id, chunk)
            ).fetchone()[0]
            traced_ms = (time.perf_counter() - t0) * 1000
            c.execute("set auto_explain.log_min_duration = -1")
            stats: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0.0])
            for message in notices:
                m = re.match(r"duration: ([\d.]+) ms\s+plan:\s*(\{.*\})\s*$", message, re.S)
                if not m:
                    continue
                plan = json.loads(m.group(2))
                query = _normalise(plan.get("Query Text", "?"))
                if query.startswith("select billing.bill_chunk"):
                    continue
                s = stats[query]
                s[0] += float(m.group(1))
                s[1] += 1
                s[2] += float(plan.get("Plan", {}).get("Shared Hit Blocks", 0)) + float(
                    plan.get("Plan", {}).get("Shared Read Blocks", 0)
                )
            rows = sorted(
                (
                    {"statement": q, "total_ms": v[0], "calls": v[1], "blocks": v[2]}
                    for q, v in stats.items()
                ),
                key=lambda r: -r["total_ms"],
            )
            # Standalone plans of the chunk's statements, for the next chunk's accounts.
            accounts = [
                r[0]
                for r in c.execute(
                    "select account_id from billing.run_accounts"
                    " where run_id = %s and not billed order by 1 limit %s",
                    (run_id, chunk),
                ).fetchall()
            ]
            plans: dict[str, list[str]] = {}
            standalone = {
                "charges (billing.period_charges)": (
                    "select * from billing.period_charges(%(accounts)s, %(start)s, %(end)s)"
                ),
                "usage locked (ledger.issue_bills)": (
                    "select id from ledger.rated_usage where account_id = any (%(accounts)s)"
                    " and bill_id is null and used_at < (%(end)s::date + 1)::timestamptz"
                    " for update"
                ),
                "claim (billing.bill_chunk)": (
                    "select account_id from billing.run_accounts"
                    " where run_id = %(run)s and not billed order by account_id"
                    " limit %(limit)s for update skip locked"
                ),
            }
            params = {
                "accounts": accounts,
                "run": run_id,
                "limit": chunk,
                "start": PERIOD_START,
                "end": PERIOD_END,
            }
            c.execute("begin")
            for name, sql in standalone.items():
                lines = c.execute(f"explain (analyze, buffers) {sql}", params).fetchall()
                plans[name] = [line[0] for line in lines]
            c.execute("rollback")
        return {
            "chunk": chunk,
            "plain_ms": plain_ms,
            "plain_billed": plain,
            "traced_ms": traced_ms,
            "traced_billed": traced,
            "statements": rows[:14],
            "plans": plans,
        }
    finally:
        drop_db(pg, "bench_diag")


# -- the run ---------------------------------------------------------------------------


async def run(settings: Settings, base: Path, port: int) -> dict[str, Any]:
    pg = EmbeddedPostgres(base, port=port, database="bossa", durable=True)
    await asyncio.to_thread(pg.start)
    out: dict[str, Any] = {}
    try:
        with psycopg.connect(pg.url("postgres"), autocommit=True) as c:
            server = {
                k: c.execute(f"show {k}").fetchone()[0]
                for k in ("server_version", "fsync", "synchronous_commit", "shared_buffers")
            }
        print(f"  server: PostgreSQL on 127.0.0.1:{port}: {server}")
        out["server"] = server
        load_s = await asyncio.to_thread(build_template, pg, settings)
        print(f"  loaded {settings.accounts:,} accounts in {load_s:.1f} s")
        out["load_s"] = load_s

        print("\n== 1. bill-run throughput ==")
        cells = []
        for i, (w, ch) in enumerate(settings.cells):
            cell = await bill_cell(pg, f"bench_cell{i}", w, ch, settings.run_accounts)
            cells.append(cell)
            print(
                f"  W={w} C={ch}: {cell['billed']:,} accounts in {cell['bill_s']:.1f} s ="
                f" {cell['per_hour']:,.0f} accounts/h (start_run {cell['start_run_s']:.1f} s;"
                f" settle {cell['settle_s']:.1f} s; reconcile {cell['reconcile_s']:.1f} s,"
                f" reconciled={cell['reconciled']}, differences={cell['differences']})"
            )
            print(f"      cpu: {cell['cpu']}")
        out["cells"] = cells
        raw = await asyncio.to_thread(raw_bound, pg)
        out["raw"] = raw
        print(
            f"  raw set-based bills (one statement into a scratch table): {raw['accounts']:,}"
            f" in {raw['bills_s']:.2f} s = {raw['bills_per_hour']:,.0f} accounts/h"
        )
        print(
            f"  raw set-based with the same ledger writes: {raw['ledger_s']:.2f} s ="
            f" {raw['ledger_per_hour']:,.0f} accounts/h (unbalanced transactions:"
            f" {raw['ledger_unbalanced']})"
        )
        for statement, ms in raw["ledger_steps"]:
            print(f"      {ms:9.1f} ms | {statement}")
        same = {c["billed_amount"] for c in cells}
        if settings.run_accounts is None:  # the raw statement bills every account
            same.add(raw["billed_amount"])
        out["amounts_agree"] = len(same) == 1
        print(f"  billed amount equal in every cell (and the raw statement): {len(same) == 1}")
        best = max(cells, key=lambda c: c["per_hour"])
        out["best"] = best
        print(
            f"  best bossa W={best['workers']} C={best['chunk']} {best['per_hour']:,.0f}/h;"
            f" ratio to raw bills {best['per_hour'] / raw['bills_per_hour']:.3f},"
            f" to raw with ledger writes {best['per_hour'] / raw['ledger_per_hour']:.3f}"
        )

        print("\n== 2. payment latency, no run vs during a run ==")
        p = await payments(pg, settings, settings.accounts)
        out["payments"] = p
        for tag in ("baseline", "opening", "billing"):
            s = p[tag]
            print(
                f"  {tag}: n={s['n']}, p50 {fmt(s['p50'])} ms, p99 {fmt(s['p99'])} ms,"
                f" max {fmt(s['max'])} ms, status {s['status']}"
                + (f", {s['per_s']:.0f}/s" if s["per_s"] else "")
                + f"; payers waiting on a row lock of ledger.accounts: avg"
                f" {s['lock_waiting_avg']:.2f}, in {s['lock_waiting_share']:.0%} of samples"
            )
        print(
            f"  start_run {p['start_run_s']:.2f} s; billing window {p['window_s']:.1f} s"
            f" (bill finished in window: {p['bill_finished_in_window']}); run billed"
            f" {p['billed']:,} in {p['bill_s']:.1f} s; settled {p['settled_items']} staged"
            f" items in {p['settle_s']:.1f} s; reconciled={p['reconciled']}"
        )
        if not p["reconciled"]:
            print(f"  differences: {p['differences']}, e.g. {p['difference_sample']}")

        print("\n== diagnostics: inside billing.bill_chunk ==")
        d = await diagnostics(pg, 500)
        out["diagnostics"] = d
        print(
            f"  chunk of {d['plain_billed']}: {d['plain_ms']:.0f} ms"
            f" ({d['plain_ms'] / max(1, d['plain_billed']):.2f} ms/account); traced chunk"
            f" {d['traced_ms']:.0f} ms"
        )
        for r in d["statements"]:
            print(
                f"  {r['total_ms']:8.1f} ms {r['calls']:6d} calls"
                f" {r['total_ms'] / r['calls'] * 1000:7.1f} us/call | {r['statement']}"
            )
        for name, lines in d["plans"].items():
            print(f"  plan [{name}]:")
            for line in lines:
                print(f"    {line}")
    finally:
        await asyncio.to_thread(pg.stop)
    return out


def targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    best = out["best"]
    p = out["payments"]
    ratio = p["billing"]["p99"] / p["baseline"]["p99"]
    to_raw = best["per_hour"] / out["raw"]["ledger_per_hour"]
    found = [
        {
            "target": "bill run / set-based SQL with the same ledger writes (best setting)",
            "value": to_raw,
            "goal": f">= {TARGET_RAW_RATIO}",
            "met": to_raw >= TARGET_RAW_RATIO,
        },
        {
            "target": "bill-run throughput (accounts/h, best setting)",
            "value": best["per_hour"],
            "goal": f">= {TARGET_RATE:,.0f}",
            "met": best["per_hour"] >= TARGET_RATE,
        },
        {
            "target": "payment p99 during a run / p99 with no run",
            "value": ratio,
            "goal": f"<= {TARGET_P99_RATIO}",
            "met": ratio <= TARGET_P99_RATIO,
        },
        {
            "target": "reconcile clean after settle (every cell and the payment run)",
            "value": None,
            "goal": "no differences",
            "met": all(c["reconciled"] for c in out["cells"]) and p["reconciled"],
        },
    ]
    print("\n== targets ==")
    for t in found:
        print(f"  {'MET ' if t['met'] else 'MISS'} {t['target']}: {fmt(t['value'])} ({t['goal']})")
    return found


def append_results(
    path: Path, settings: Settings, out: dict[str, Any], found: list[dict[str, Any]], ref: str
) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python -m bench.billing.run", *sys.argv[1:]])
    raw = out["raw"]
    p = out["payments"]
    lines = [
        f"\n## {now} — bill run and payments during it{' (quick)' if settings.quick else ''}\n",
        f"- command: `{command}`",
        f"- git ref: `{ref}`",
        f"- machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}",
        f"- server: {out['server']}",
        f"- data: {settings.accounts:,} accounts x 3 contracts (monthly with a price change"
        " in the period, monthly with a one-off fee, quarterly; every 10th account's start in"
        " the period, every 15th's end in it; 5% terminated),"
        f" {settings.usage_per_account} rated usage each, prepaid on every"
        f" {settings.prepaid_every}rd account",
        "",
        "| system | W | C | accounts | bill s | accounts/h | ratio to raw bills |"
        " ratio to raw+ledger | reconciled |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines.extend(
        f"| bossa bill() | {c['workers']} | {c['chunk']} | {c['billed']:,} |"
        f" {c['bill_s']:.1f} | {c['per_hour']:,.0f} |"
        f" {c['per_hour'] / raw['bills_per_hour']:.3f} |"
        f" {c['per_hour'] / raw['ledger_per_hour']:.3f} |"
        f" {'yes' if c['reconciled'] else '**no**'} |"
        for c in out["cells"]
    )
    lines.append(
        f"| raw: one insert-select of the bills | — | — | {raw['accounts']:,} |"
        f" {raw['bills_s']:.2f} | {raw['bills_per_hour']:,.0f} | 1 | — | — |"
    )
    lines.append(
        f"| raw: set-based, same ledger writes | — | — | {raw['accounts']:,} |"
        f" {raw['ledger_s']:.2f} | {raw['ledger_per_hour']:,.0f} | — | 1 | — |"
    )
    lines += [
        "",
        f"Payments: {settings.payers} clients paying deposits; the run bills with"
        f" W={settings.pay_workers} C={settings.pay_chunk}.",
        "",
        "| phase | payments | per s | p50 ms | p99 ms | max ms | status |"
        " payers waiting on an accounts row lock (avg; share of samples) |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for tag in ("baseline", "opening", "billing"):
        s = p[tag]
        lines.append(
            f"| {tag} | {s['n']} | {fmt(s['per_s'])} | {fmt(s['p50'])} | {fmt(s['p99'])} |"
            f" {fmt(s['max'])} | {', '.join(s['status'])} |"
            f" {s['lock_waiting_avg']:.2f}; {s['lock_waiting_share']:.0%} |"
        )
    lines += ["", "| target | value | goal | met |", "|---|---:|---:|---|"]
    for t in found:
        lines.append(
            f"| {t['target']} | {fmt(t['value'])} | {t['goal']} |"
            f" {'yes' if t['met'] else '**no**'} |"
        )
    d = out["diagnostics"]
    lines += [
        "",
        f"Inside `billing.bill_chunk` (one chunk of {d['plain_billed']}: {d['plain_ms']:.0f} ms"
        f" untraced; auto_explain, nested statements, timing off):",
        "",
        "```",
    ]
    for r in d["statements"][:10]:
        lines.append(
            f"{r['total_ms']:8.1f} ms {r['calls']:6d} calls"
            f" {r['total_ms'] / r['calls'] * 1000:7.1f} us/call | {r['statement']}"
        )
    lines.append("```")
    lines += ["", "CPU during bossa's bills:", ""]
    lines += [f"- W={c['workers']} C={c['chunk']}: {c['cpu']}" for c in out["cells"]]
    if out.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in out["notes"]]
    append_section(path, lines)


def main() -> None:
    parser = base_parser(__doc__.split("\n")[0], "10k accounts (about 2 minutes)")
    parser.add_argument(
        "--pay-workers",
        type=int,
        default=None,
        help="bill-run workers during the payment phase (default 1, BillingSettings' default)",
    )
    args = parser.parse_args()
    settings = Settings.make(args.quick)
    if args.pay_workers is not None:
        settings.pay_workers = args.pay_workers
    ref = git_ref()
    port = free_port()
    print("bench/billing: bill-run throughput vs raw SQL, payment latency during a run")
    print(f"  git ref {ref}; {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print(f"  settings: {settings}")
    with tempfile.TemporaryDirectory(prefix="bossa-bench-billing-") as tmp:
        out = asyncio.run(run(settings, Path(tmp), port))
    found = targets(out)
    if not args.no_results:
        append_results(ROOT / "bench" / "RESULTS.md", settings, out, found, ref)
        print("\nappended to bench/RESULTS.md")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"settings": settings.__dict__, "git_ref": ref, **out, "targets": found},
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
