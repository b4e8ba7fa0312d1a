"""The listener as a real process, SIGKILLed mid-batch and started again: nothing lost,
nothing applied twice, each customer's events applied in order (S5, S6, S8).

A trigger this test puts on rating.subscriptions logs every row written (a rolled-back
trial's writes roll back with it) and sleeps 20 ms per row, so that a batch takes long
enough for the kill to land inside one; the test checks it did (entries were leased
when the process died)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time

import pytest

from bossa.db import Pool
from bossa.runtime import Runtime
from tests.sync.test_sync import LANE, SETTINGS, buy, change, new_line, runtime  # noqa: F401

pytestmark = pytest.mark.anyio

LINES = 8
PRODUCTS = ["SOIP", "WIBRO", "SOIP", "WIBRO"]  # a purchase, then three changes

LOG = """
create table public.sub_log (
    id bigint generated always as identity, op text, msisdn text, valid_from timestamp,
    product_code text, valid_to timestamp
);
create function public.log_sub() returns trigger language plpgsql as $$
begin
    insert into public.sub_log (op, msisdn, valid_from, product_code, valid_to)
    values (tg_op, new.msisdn, new.valid_from, new.product_code, new.valid_to);
    perform pg_sleep(0.02);
    return new;
end $$;
create trigger log_sub after insert or update on rating.subscriptions
    for each row execute function public.log_sub();
"""


async def states(pool: Pool) -> dict[str, int]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "select state, count(*) as n from journal.lane_entries where lane = %s"
                " group by state",
                (LANE,),
            )
        ).fetchall()
    return {r["state"]: int(r["n"]) for r in rows}


def listener(db_url: str, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "BOSSA_DATABASE_URL": db_url,
        "BOSSA_SYNC_BATCH": "5",
        "BOSSA_JOURNAL_LEASE_MS": "2000",
        "BOSSA_JOURNAL_REAP_INTERVAL_S": "0.2",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bossa.cli", "sync", "listen", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_sigkill_mid_batch_loses_nothing_and_applies_nothing_twice(
    runtime: Runtime,  # noqa: F811
    db_url: str,
) -> None:
    numbers = [await new_line(runtime, n) for n in range(1, LINES + 1)]
    for n in range(1, LINES + 1):
        await buy(runtime, n, PRODUCTS[0])
    for product in PRODUCTS[1:]:
        for n in range(1, LINES + 1):
            await change(runtime, n, product)
    total = LINES * len(PRODUCTS)
    async with runtime.pool.connection() as conn:
        await conn.execute(LOG)
    # Also on the lane: AccountCreated of the sample operator's four accounts and of each
    # line's account, each its customer's head (the purchases wait behind them).
    accounts = 4 + LINES
    assert (await states(runtime.pool)) == {"ready": accounts, "waiting": total}

    first = listener(db_url)
    try:
        deadline = time.monotonic() + 60
        while True:
            now = await states(runtime.pool)
            if now.get("done", 0) >= 5 and now.get("taken", 0) > 0:
                break
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, f"listener made no progress: {now}"
            await asyncio.sleep(0.01)
        first.send_signal(signal.SIGKILL)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate(timeout=10)
    at_kill = await states(runtime.pool)
    # The kill landed with a batch in hand: the loop above saw entries taken 10 ms before
    # it (the state right after may already show them back, as their rolled-back batch).
    assert at_kill.get("done", 0) < total + accounts, at_kill

    second = listener(db_url, "--once")
    _out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert (await states(runtime.pool)) == {"done": total + accounts}

    async with runtime.pool.connection() as conn:
        log = await (
            await conn.execute("select op, msisdn, valid_from, product_code from public.sub_log")
        ).fetchall()
        history = await (
            await conn.execute(
                "select msisdn, product_code, valid_from, valid_to from rating.subscriptions"
                " order by msisdn, valid_from"
            )
        ).fetchall()
    # Applied once each: an insert per purchase or change and an update ending the
    # previous subscription per change; a second application would add a write.
    assert sum(r["op"] == "INSERT" for r in log) == total
    assert sum(r["op"] == "UPDATE" for r in log) == total - LINES
    # In order per customer: each number's history is the products in the order they
    # were changed, each ending where the next begins, the last open.
    for number in numbers:
        rows = [r for r in history if r["msisdn"] == number]
        assert [r["product_code"] for r in rows] == PRODUCTS
        for earlier, later in itertools.pairwise(rows):
            assert earlier["valid_to"] == later["valid_from"]
        assert rows[-1]["valid_to"] is None


#: The publisher side as its own process: product changes, each its own business
#: transaction with its event, round after round, printing each commit.
PUBLISHER = """
import asyncio, sys
from bossa.runtime import running
from bossa.customers import service as customers
from bossa.customers.models import ProductChange

LINES = int(sys.argv[1])

async def main() -> None:
    async with running(actor="publisher") as rt:
        for round in range(10_000):
            product = "WIBRO" if round % 2 == 0 else "SOIP"
            for n in range(1, LINES + 1):
                await customers.change_product(
                    rt.journal, rt.deliverer, f"SA-9{n:03d}", ProductChange(product=product),
                    actor="publisher",
                )
                print(round, n, product, flush=True)

asyncio.run(main())
"""


def publisher_process(db_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(LINES)],
        env={**os.environ, "BOSSA_DATABASE_URL": db_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def contract_events(pool: Pool) -> int:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "select count(*) as n from journal.lane_entries where lane = %s and kind = %s",
                (LANE, "account-sync"),
            )
        ).fetchone()
    assert row is not None
    return int(row["n"])


async def test_publisher_and_listener_killed_lose_nothing_and_keep_each_accounts_order(
    runtime: Runtime,  # noqa: F811
    db_url: str,
) -> None:
    """The publisher's process is SIGKILLed while it publishes, the listener's mid-batch
    while it applies; a new listener drains the lane. Every change that committed has
    its event, applied once, in the customer's order; the one the kill interrupted left
    neither change nor event."""
    numbers = [await new_line(runtime, n) for n in range(1, LINES + 1)]
    for n in range(1, LINES + 1):
        await buy(runtime, n, "SOIP")
    async with runtime.pool.connection() as conn:
        await conn.execute(LOG)
    publisher = publisher_process(db_url)
    first = listener(db_url)
    try:
        deadline = time.monotonic() + 90
        while True:
            now = await states(runtime.pool)
            # Purchases, then two rounds of changes committed, and the listener busy.
            if await contract_events(runtime.pool) >= 3 * LINES and now.get("done", 0) >= 10:
                break
            assert publisher.poll() is None, publisher.stderr.read() if publisher.stderr else ""
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, f"no progress: {now}"
            await asyncio.sleep(0.01)
        publisher.send_signal(signal.SIGKILL)  # mid-publishing: it never stops to wait
        publisher.communicate(timeout=10)
        while (await states(runtime.pool)).get("taken", 0) == 0:
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the listener took nothing more"
            await asyncio.sleep(0.005)
        first.send_signal(signal.SIGKILL)
    finally:
        for proc in (publisher, first):
            if proc.poll() is None:
                proc.kill()
        first.communicate(timeout=10)
    at_kill = await states(runtime.pool)
    # The listener died with a batch in hand: the loop above saw entries taken just before.
    total = sum(at_kill.values())

    second = listener(db_url, "--once")
    _out, err = second.communicate(timeout=180)
    assert second.returncode == 0, err
    assert (await states(runtime.pool)) == {"done": total}  # nothing lost, all processed

    async with runtime.pool.connection() as conn:
        events = await (
            await conn.execute(
                "select key, payload->>'product_code' as product, payload->>'msisdn' as msisdn"
                " from journal.lane_entries where lane = %s and kind = %s order by id",
                (LANE, "account-sync"),
            )
        ).fetchall()
        log = await (
            await conn.execute("select op, msisdn, product_code from public.sub_log order by id")
        ).fetchall()
        contracts = await (
            await conn.execute(
                "select customer_id, product_code from customers.contract_terms"
                " where sa_id like 'SA-9%%'"
            )
        ).fetchall()
        open_subs = await (
            await conn.execute(
                "select msisdn, product_code from rating.subscriptions where valid_to is null"
            )
        ).fetchall()
    # The purchases, then the publisher's changes: at least two rounds of them.
    assert len(events) >= 3 * LINES
    assert {e["msisdn"] for e in events} == set(numbers)
    # Once each: one insert per purchase or change applied, never a second.
    inserts = [r for r in log if r["op"] == "INSERT"]
    assert len(inserts) == len(events)
    # In each customer's order: the products written per number are the events' products
    # in the order they were committed.
    for number in numbers:
        queued = [e["product"] for e in events if e["msisdn"] == number]
        applied = [r["product_code"] for r in inserts if r["msisdn"] == number]
        assert applied == queued, number
    # Nothing lost: each contract's last committed product is the one rating holds.
    current = {f"8210555{c['customer_id'][3:]:0>4}": c["product_code"] for c in contracts}
    held = {r["msisdn"]: r["product_code"] for r in open_subs if r["msisdn"] in numbers}
    assert held == {n: current[n] for n in numbers}
