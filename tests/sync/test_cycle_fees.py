"""CycleFeeApplied (S1) on real PostgreSQL: a bill run publishes one business event per
fee it charges, inside the transaction of the chunk that charges it, and none for a chunk
that rolls back; the listener routes them to the balance data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bossa import ledger, sync
from bossa.billing import bill
from bossa.customers import service as customers
from bossa.customers.models import ContractRequest
from bossa.db import Pool
from bossa.runtime import Runtime
from bossa.sync import InternalEvent, SyncSettings
from bossa.sync.service import forget_configs
from tests.billing.conftest import month, open_run
from tests.sync.test_events import event_file, lane_events, rows, rt, types  # noqa: F401
from tests.sync.test_sync import new_line, runtime  # noqa: F401

pytestmark = pytest.mark.anyio

SETTINGS = SyncSettings()

#: Accounts whose fee event the test's policy hook refuses (the chunk then rolls back).
FAILING: set[str] = set()


@sync.policy("test_fail_some_fees")
def fail_some_fees(event: InternalEvent) -> InternalEvent | None:
    """Raises for the fee of an account in FAILING: the business transaction fails."""
    if event.data.get("account") in FAILING:
        raise RuntimeError(f"refused the fee of {event.data['account']}")
    return event


@pytest.fixture
def failing_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The packaged business-event file with the fees' policy hook above, as the bill
    run's publisher reads it (BOSSA_SYNC_EVENTS)."""
    text = sync.service.default_config().model_dump(mode="json")
    text["policy_hook"] = "test_fail_some_fees"
    monkeypatch.setenv("BOSSA_SYNC_EVENTS", str(event_file(tmp_path, text)))
    forget_configs()
    yield
    FAILING.clear()
    forget_configs()


async def contract(app: Runtime, sa: str, customer: str, account: str, product: str) -> None:
    request = ContractRequest(
        sa_id=sa,
        customer=customer,
        account=account,
        product=product,
        start_date=month(0)[0],
    )
    await customers.create_contract(app.journal, app.deliverer, request, actor="t")


async def lines(app: Runtime) -> None:
    """C-9001 with two accounts (A-9001, A-9101), C-9002 with one: a contract each."""
    await new_line(app, 1)
    await new_line(app, 2)
    await customers.open_account(
        app.pool,
        ledger.AccountRequest(account="A-9101", customer="C-9001", currency="KRW"),
        actor="t",
    )
    await contract(app, "SA-9001", "C-9001", "A-9001", "SOIP")
    await contract(app, "SA-9101", "C-9001", "A-9101", "WIBRO")
    await contract(app, "SA-9002", "C-9002", "A-9002", "SOIP")


async def fees_charged(pool: Pool, run: int) -> dict[str, int]:
    """The run's bills' fees, by account (those with one)."""
    found = await rows(
        pool,
        "select account_id, recurring from ledger.issued_bills"
        " where bill_run_id = %s and recurring <> 0",
        run,
    )
    return {r["account_id"]: int(r["recurring"]) for r in found}


def fee_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["payload"]["type"] == "CycleFeeApplied"]


def fee_data(event: dict[str, Any]) -> dict[str, Any]:
    (internal,) = event["payload"]["events"]
    assert internal["name"] == "billing.cycle_fee_applied"
    return dict(internal["data"])


async def test_each_fee_charged_publishes_one_cycle_fee_applied(rt: Runtime) -> None:  # noqa: F811
    await lines(rt)
    period = month(0)
    run = await open_run(rt.pool, period)
    await bill(rt.pool, run, chunk=2)

    charged = await fees_charged(rt.pool, run)
    assert {"A-9001", "A-9101", "A-9002"} <= set(charged)
    events = fee_events(await lane_events(rt.pool))
    # One event per fee, even two of one customer (two accounts): each is its own
    # business operation, keyed by the customer (per-account order).
    assert sorted(fee_data(e)["account"] for e in events) == sorted(charged)
    by_account = {fee_data(e)["account"]: e for e in events}
    assert by_account["A-9001"]["key"] == by_account["A-9101"]["key"] == "C-9001"
    assert fee_data(by_account["A-9101"]) == {
        "account": "A-9101",
        "currency": "KRW",
        "amount_minor": charged["A-9101"],
        "run_id": run,
        "cycle": "MONTHLY",
        "period_start": period[0].isoformat(),
        "period_end": period[1].isoformat(),
    }
    # Between BillingStarted and BillingCompleted, in the chunks' commit order.
    everything = types(await lane_events(rt.pool))
    first, last = everything.index("CycleFeeApplied"), len(everything) - 1
    assert everything[first - 1] == "BillingStarted"
    assert everything[last] == "BillingCompleted"
    assert set(everything[first:last]) == {"CycleFeeApplied"}

    # The listener routes them to the balance data (batched, S8): the account's
    # balances as the ledger has them after the fee.
    stats = await sync.listen(rt.journal, SETTINGS, listen_url=None, once=True)
    assert stats.parked == 0
    kept = await rows(
        rt.pool,
        "select account_id, balances from sync.pipeline_accounts where account_id = %s",
        "A-9101",
    )
    assert kept[0]["balances"] == await ledger_balances(rt.pool, "A-9101")
    assert kept[0]["balances"]


async def ledger_balances(pool: Pool, account: str) -> dict[str, Any]:
    async with pool.connection() as conn:
        return await ledger.balances(conn, account)


async def test_a_chunk_that_rolls_back_publishes_no_fee(
    rt: Runtime,  # noqa: F811
    failing_hook: None,
) -> None:
    await lines(rt)
    run = await open_run(rt.pool, month(0))
    # One account per chunk, in account order: A-9001 and A-9002 are billed, then the
    # chunk of A-9101 fails in its business transaction after its charge was written.
    FAILING.add("A-9101")
    with pytest.raises(RuntimeError, match="refused the fee of A-9101"):
        await bill(rt.pool, run, chunk=1)
    charged = await fees_charged(rt.pool, run)
    assert "A-9101" not in charged
    assert {"A-9001", "A-9002"} <= set(charged)
    events = fee_events(await lane_events(rt.pool))
    assert sorted(fee_data(e)["account"] for e in events) == sorted(charged)
    pending = await rows(
        rt.pool,
        "select account_id from billing.run_accounts where run_id = %s and not billed",
        run,
    )
    assert "A-9101" in {r["account_id"] for r in pending}

    # The cause fixed, the run goes on: still exactly one event per fee charged.
    FAILING.clear()
    await bill(rt.pool, run, chunk=1)
    charged = await fees_charged(rt.pool, run)
    assert "A-9101" in charged
    events = fee_events(await lane_events(rt.pool))
    assert sorted(fee_data(e)["account"] for e in events) == sorted(charged)


def test_fee_events_are_in_the_default_file() -> None:
    config = sync.service.default_config()
    assert config.published("billing.cycle_fee_applied") == "policy"
    definition = config.business_events["CycleFeeApplied"]
    assert definition.batch
    assert definition.modules == ["balance_data"]
