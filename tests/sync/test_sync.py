"""Business events from contract changes to the rating pipeline's account data (S1, S5,
S6, S8), on real PostgreSQL: a CDR after a purchase or a product change (by event time)
is rated with the new product, also when the listener was not running at the change; a
bad event holds the lane with its whole batch undone until an operator acts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bossa import ledger, rating
from bossa.billing import bill
from bossa.customers import load_sample_operator
from bossa.customers import service as customers
from bossa.customers.models import ContractChange, ContractRequest, CustomerRequest, ProductChange
from bossa.db import Pool
from bossa.journal import Journal
from bossa.journal import service as journal_ops
from bossa.rating.service import Pipeline
from bossa.runtime import Runtime
from bossa.sync import EventState, SyncSettings, listen, report
from tests.billing.conftest import month, open_run
from tests.rating.conftest import voice_tariff

pytestmark = pytest.mark.anyio

SETTINGS = SyncSettings()
LANE = SETTINGS.lane
HEADER = "record_key,msisdn,destination,start,duration\n"


@pytest.fixture
async def runtime(journal: Journal, db_url: str) -> AsyncIterator[Runtime]:
    await load_sample_operator(journal.pool, actor="test")
    await rating.add_tariff(journal.pool, voice_tariff(), actor="test")
    # WIBRO gets a voice tariff at ten times SOIP's rates and no allowance: which
    # product rated a call shows in its charge and in rated_usage.product_code.
    await rating.add_tariff(
        journal.pool,
        voice_tariff(
            product_code="WIBRO",
            allowance_seconds=0,
            rates={k: v * 10 for k, v in voice_tariff().rates.items()},
        ),
        actor="test",
    )
    built = Runtime.around(db_url, journal, embedded=False)
    yield built
    await built.deliverer.close()


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    p = Pipeline.open(threads=1)
    yield p
    p.close()


async def new_line(rt: Runtime, n: int, *, msisdn: str | None = None) -> str:
    """Customer C-9nnn with number +8210555nnnn and KRW account A-9nnn; returns the number."""
    number = msisdn or f"+8210555{n:04d}"
    await customers.create_customer(
        rt.pool, CustomerRequest(id=f"C-9{n:03d}", name=f"line {n}", msisdn=number), actor="t"
    )
    await customers.open_account(
        rt.pool,
        ledger.AccountRequest(account=f"A-9{n:03d}", customer=f"C-9{n:03d}", currency="KRW"),
        actor="t",
    )
    return number.removeprefix("+")


async def buy(rt: Runtime, n: int, product: str) -> None:
    request = ContractRequest(
        sa_id=f"SA-9{n:03d}", customer=f"C-9{n:03d}", account=f"A-9{n:03d}", product=product
    )
    await customers.create_contract(rt.journal, rt.deliverer, request, actor="t")


async def change(rt: Runtime, n: int, product: str) -> None:
    await customers.change_product(
        rt.journal, rt.deliverer, f"SA-9{n:03d}", ProductChange(product=product), actor="t"
    )


def local(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


async def rate(pool: Pool, pipeline: Pipeline, tmp: Path, name: str, lines: list[str]) -> None:
    path = tmp / f"{name}.csv"
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    await rating.rate_file(pool, pipeline, path, actor="t")


async def outcome(pool: Pool, key: str) -> tuple[str, int] | str:
    """(product, charge) of a rated record, or its suspense reason."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "select product_code, charge from rating.rated_usage where record_key = %s",
                (key,),
            )
        ).fetchone()
        if row is not None:
            return row["product_code"], row["charge"]
        row = await (
            await conn.execute("select reason from rating.suspense where record_key = %s", (key,))
        ).fetchone()
        assert row is not None, f"record {key} neither rated nor suspended"
        return str(row["reason"])


def utc_now() -> datetime:
    return datetime.now(SETTINGS.zone).replace(tzinfo=None, microsecond=0)


async def test_cdr_after_purchase_and_change_is_rated_with_the_new_product(
    runtime: Runtime, pipeline: Pipeline, tmp_path: Path
) -> None:
    number = await new_line(runtime, 1)
    await buy(runtime, 1, "SOIP")
    bought = utc_now()
    # Nobody listens yet (S5): the event waits READY, and a call now is not rated with
    # data the pipeline does not have.
    before = await report(runtime.pool, SETTINGS)
    # READY: the purchase, and the AccountCreated of the line's and of the sample
    # operator's four accounts (the purchase waits behind its customer's account).
    assert before.by_state[EventState.READY] == 1 + 1 + 4
    await rate(runtime.pool, pipeline, tmp_path, "early", [f"e1,{number},8231,{local(bought)},60"])
    assert await outcome(runtime.pool, "e1") == "unknown_account"

    # The listener started afterwards takes the waiting event.
    stats = await listen(runtime.journal, SETTINGS, listen_url=None, once=True)
    assert stats.acked == 6
    after = await report(runtime.pool, SETTINGS)
    assert after.by_state[EventState.READY] == 0
    assert after.by_state[EventState.PROCESSED] == 6

    # A call between purchase and change is SOIP's, one after the change WIBRO's (ten
    # times the rate, no allowance), whatever the band.
    call = bought + timedelta(seconds=1)
    await asyncio_sleep_past(call + timedelta(seconds=1))
    await change(runtime, 1, "WIBRO")
    changed = utc_now()
    await listen(runtime.journal, SETTINGS, listen_url=None, once=True)
    late = changed + timedelta(seconds=2)
    await rate(
        runtime.pool,
        pipeline,
        tmp_path,
        "calls",
        [f"c1,{number},8231,{local(call)},300", f"c2,{number},8231,{local(late)},300"],
    )
    soip, wibro = await outcome(runtime.pool, "c1"), await outcome(runtime.pool, "c2")
    assert isinstance(soip, tuple)
    assert soip[0] == "SOIP"
    assert isinstance(wibro, tuple)
    assert wibro[0] == "WIBRO"
    assert wibro[1] > soip[1]

    # Terminated: the product ends; a later call has no account data any more.
    await customers.terminate_contract(
        runtime.journal, runtime.deliverer, "SA-9001", ContractChange(), actor="t"
    )
    ended = utc_now()
    await listen(runtime.journal, SETTINGS, listen_url=None, once=True)
    gone = ended + timedelta(seconds=2)
    await rate(runtime.pool, pipeline, tmp_path, "after", [f"g1,{number},8231,{local(gone)},60"])
    assert await outcome(runtime.pool, "g1") == "unknown_account"
    done = await report(runtime.pool, SETTINGS)
    assert done.by_state[EventState.PROCESSED] == 6 + 2


async def asyncio_sleep_past(moment: datetime) -> None:
    """Wait until the local clock is past `moment` (whole-second CDR times)."""
    seconds = (moment - utc_now()).total_seconds() + 1
    await asyncio.sleep(max(0.0, seconds))


async def test_a_bad_event_holds_its_batch_until_an_operator_acts(runtime: Runtime) -> None:
    # Customers accept numbers of up to 20 digits; rating keys numbers of at most 15.
    await new_line(runtime, 1)
    await new_line(runtime, 2, msisdn="+1234567890123456789")
    await new_line(runtime, 3)
    # The accounts' AccountCreated (the lines' and the sample operator's four) first.
    accounts = await listen(runtime.journal, SETTINGS, listen_url=None, once=True)
    assert accounts.acked == 3 + 4
    for n in (1, 2, 3):
        await buy(runtime, n, "SOIP")

    stats = await listen(runtime.journal, SETTINGS, listen_url=None, once=True)
    assert stats.acked == 0  # the whole batch was undone
    held = await report(runtime.pool, SETTINGS)
    assert held.by_state[EventState.HELD] == 1
    assert held.by_state[EventState.READY] == 2
    assert [h.key for h in held.held] == ["C-9002"]
    assert held.held[0].code == "apply:msisdn"
    async with runtime.pool.connection() as conn:
        rows = await (
            await conn.execute(
                "select count(*) as n from rating.subscriptions where msisdn like '8210555%%'"
            )
        ).fetchone()
    assert rows is not None
    assert rows["n"] == 0

    # The operator's report from the shell names the held event and why.
    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bossa.cli", "sync", "report", "--json"],
        env={**os.environ, "BOSSA_DATABASE_URL": runtime.url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    listed = json.loads(shown.stdout)
    assert listed["by_state"]["held"] == 1
    assert listed["held"][0]["key"] == "C-9002"

    # Held: nothing more is taken, whatever waits.
    again = await listen(runtime.journal, SETTINGS, listen_url=None, once=True)
    assert again.taken == 0

    # The operator gives up on the bad one (the number is fixed at the source): the
    # batch's other events are delivered again and applied.
    await journal_ops.discard(
        runtime.journal, held.held[0].entry_id, actor="op", reason="number fixed by hand"
    )
    resumed = await listen(runtime.journal, SETTINGS, listen_url=None, once=True)
    assert resumed.acked == 2
    final = await report(runtime.pool, SETTINGS)
    assert final.by_state[EventState.PROCESSED] == 7 + 2
    assert final.by_state[EventState.HELD] == 0


async def test_usage_of_an_account_being_billed_waits_and_is_rated_after(
    runtime: Runtime, pipeline: Pipeline, tmp_path: Path
) -> None:
    """S14 end to end: the bill run's BillingStarted, through the listener, holds the
    cycle's accounts; a call rated meanwhile waits in suspense as billing_in_progress;
    BillingCompleted ends the hold and the pipeline's automatic recycling rates it once."""
    number = await new_line(runtime, 2)
    await buy(runtime, 2, "SOIP")
    at = utc_now() + timedelta(seconds=1)  # CDR times are whole seconds
    await listen(runtime.journal, SETTINGS, listen_url=None, once=True)
    run = await open_run(runtime.pool, month(1))
    await listen(runtime.journal, SETTINGS, listen_url=None, once=True)
    await asyncio_sleep_past(at)
    await rate(runtime.pool, pipeline, tmp_path, "held", [f"h1,{number},8231,{local(at)},60"])
    assert await outcome(runtime.pool, "h1") == "billing_in_progress"
    # Recycling finds nothing to do while the hold lasts.
    assert await rating.recycle_fixed(runtime.pool, pipeline, force=True) == 0
    assert await outcome(runtime.pool, "h1") == "billing_in_progress"

    await bill(runtime.pool, run)
    await listen(runtime.journal, SETTINGS, listen_url=None, once=True)
    assert await rating.recycle_fixed(runtime.pool, pipeline, force=True) == 1
    rated = await outcome(runtime.pool, "h1")
    assert isinstance(rated, tuple)
    assert rated[0] == "SOIP"
    assert await rating.recycle_fixed(runtime.pool, pipeline, force=True) == 0
