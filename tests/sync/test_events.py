"""Business events beyond contracts, on real PostgreSQL (S1-S12): each published in the
transaction of its change, through the notification list and the policy hook, assembled,
routed to its instance's lane or held in the outbox while the publisher is disconnected;
the listener routes them to the registered modules, per type on its threads, holds a
whole batch on a bad event, disconnects and reconnects without loss, and waits for its
modules at start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bossa import ledger, sync
from bossa.billing import PaymentRequest, bill, pay, start_run
from bossa.customers import service as customers
from bossa.db import Conn, Pool
from bossa.journal import service as journal_ops
from bossa.runtime import Runtime
from bossa.sync import EventState, InternalEvent, SyncSettings
from bossa.sync import metrics as sync_metrics
from bossa.sync.lanes import Listener
from bossa.sync.service import MODULES, ModuleContext, module
from tests.billing.conftest import month, plan_window
from tests.sync.test_sync import new_line, runtime  # noqa: F401

pytestmark = pytest.mark.anyio

SETTINGS = SyncSettings()


@pytest.fixture
async def rt(runtime: Runtime) -> Runtime:  # noqa: F811
    """The sync tests' runtime with the sample operator's own events (its four accounts'
    AccountCreated) processed and purged past their retention (S6), as in production:
    each test starts from an empty lane."""
    await sync.listen(runtime.journal, SETTINGS, listen_url=None, once=True)
    async with runtime.pool.connection() as conn:
        await conn.execute(
            "update journal.entries set finished_at = now() - interval '2 days'"
            " where lane = 'sync.pipeline.0' and state = 'done'"
        )
        await conn.execute("delete from sync.pipeline_accounts")
    assert await journal_ops.purge(runtime.journal, "sync.pipeline.0") == 4
    assert await lane_events(runtime.pool) == []
    return runtime


async def lane_events(pool: Pool, lane: str = "sync.pipeline.0") -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (
            await conn.execute(
                "select id, key, kind, payload, state from journal.lane_entries"
                " where lane = %s order by id",
                (lane,),
            )
        ).fetchall()


def types(rows: list[dict[str, Any]]) -> list[str]:
    return [str(r["payload"]["type"]) for r in rows]


async def rows(pool: Pool, query: str, *args: Any) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (await conn.execute(query, args)).fetchall()


def event_file(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / f"events-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_s1_events_are_published_in_their_transaction_and_applied(
    runtime: Runtime,  # noqa: F811
) -> None:
    pool = runtime.pool
    await new_line(runtime, 1)  # customer C-9001, account A-9001: AccountCreated
    await new_line(runtime, 2)
    # A rolled-back change publishes nothing: the event is in its transaction.
    with pytest.raises(RuntimeError):
        await open_and_fail(pool)
    await pay(
        runtime.journal,
        PaymentRequest(account="A-9001", amount=1500, currency="KRW"),
        kind="deposit",
        actor="t",
        idempotency_key="k-1",
    )
    await customers.close_account(pool, "A-9002", actor="t")
    await sync.request_recycle(pool, runtime.journal, actor="op", reason="tariff fixed")
    await plan_window(pool)
    period = month(1)
    run = await start_run(
        pool, cycle="MONTHLY", period_start=period[0], period_end=period[1], actor="t"
    )
    await bill(pool, run)

    # The sample operator's accounts (C-1001..C-1004), opened by the fixture, came first.
    everything = await lane_events(pool)
    assert types(everything[:4]) == ["AccountCreated"] * 4
    queued = everything[4:]
    assert types(queued) == [
        "AccountCreated",
        "AccountCreated",
        "BalanceAdjusted",
        "AccountCancelled",
        "RecycleRequest",
        "BillingStarted",
        # The sample operator's four accounts' fees (the new lines have no contract).
        *["CycleFeeApplied"] * 4,
        "BillingCompleted",
    ]
    assert [r["key"] for r in queued] == [
        "C-9001",
        "C-9002",
        "C-9001",
        "C-9002",
        None,
        "cycle:MONTHLY",
        "C-1001",
        "C-1002",
        "C-1003",
        "C-1004",
        "cycle:MONTHLY",
    ]
    adjusted = queued[2]["payload"]["events"][0]
    assert adjusted["name"] == "billing.payment_taken"
    assert adjusted["data"] == {"account": "A-9001", "kind": "deposit", "amount_minor": 1500}

    stats = await sync.listen(runtime.journal, SETTINGS, listen_url=None, once=True)
    assert stats.acked == 15
    report = await sync.report(pool, SETTINGS)
    assert report.by_state[EventState.PROCESSED] == 15
    accounts = {
        r["account_id"]: r
        for r in await rows(pool, "select * from sync.pipeline_accounts order by account_id")
    }
    assert accounts["A-9001"]["status"] == "announced"
    # The ledger books prepaid funds as a liability (credit, negative).
    assert accounts["A-9001"]["balances"]["prepaid"] == -1500
    assert accounts["A-9002"]["status"] == "closed"
    cycles = await rows(pool, "select * from sync.billing_cycles")
    assert [(c["cycle"], c["run_id"]) for c in cycles] == [("MONTHLY", run)]
    assert cycles[0]["started_at"] is not None
    assert cycles[0]["completed_at"] is not None
    recycled = await rows(pool, "select requested_by, reason from sync.recycle_requests")
    assert recycled == [{"requested_by": "op", "reason": "tariff fixed"}]


async def open_and_fail(pool: Pool) -> None:
    async with pool.connection() as conn, conn.transaction():
        request = ledger.AccountRequest(account="A-9999", customer="C-9001", currency="KRW")
        await ledger.open_account(conn, request, actor="t")
        raise RuntimeError("the change fails after its event")


POLICY_FILE: dict[str, Any] = {
    "notify": {
        "billing.payment_taken": "policy",
        "customers.account_opened": "publish",
        "customers.product_purchased": "policy",
    },
    "policy_hook": "test_round_and_drop",
    "business_events": {
        "BalanceAdjusted": {"requires": ["billing.payment_taken"], "modules": ["balance_data"]},
        "AccountCreated": {"requires": ["customers.account_opened"], "modules": ["account_data"]},
    },
}


@sync.policy("test_round_and_drop")
def round_and_drop(event: InternalEvent) -> InternalEvent | None:
    """Drops payments under 100 and marks the others; drops contract events of C-9003."""
    if event.customer_id == "C-9003":
        return None
    amount = event.data.get("amount_minor")
    if isinstance(amount, int):
        if amount < 100:
            return None
        return event.model_copy(update={"data": {**event.data, "checked": True}})
    return event


async def test_the_policy_hook_changes_or_drops_events_before_publishing(
    rt: Runtime,
    tmp_path: Path,
) -> None:
    settings = SyncSettings(events=event_file(tmp_path, POLICY_FILE))
    async with rt.pool.connection() as conn, conn.transaction():
        published = await sync.publish(
            conn,
            rt.journal,
            [
                InternalEvent(
                    name="billing.payment_taken",
                    customer_id="C-1",
                    data={"account": "A-1", "amount_minor": 50},
                ),
                InternalEvent(
                    name="billing.payment_taken",
                    customer_id="C-2",
                    data={"account": "A-2", "amount_minor": 500},
                ),
                # Not in the notification list: never published.
                InternalEvent(name="billing.run_started", data={"cycle": "MONTHLY"}),
            ],
            settings=settings,
        )
    assert [(b.type, b.customer_id) for b in published] == [("BalanceAdjusted", "C-2")]
    queued = await lane_events(rt.pool)
    assert len(queued) == 1
    assert queued[0]["payload"]["events"][0]["data"] == {
        "account": "A-2",
        "amount_minor": 500,
        "checked": True,
    }

    # A contract's event goes through the same list and hook: dropped for C-9003.
    from bossa.customers.models import ContractRequest

    await new_line(rt, 3)
    async with rt.pool.connection() as conn, conn.transaction():
        await customers_contract(conn)
        event = await sync.contract_changed(
            conn, rt.journal, "SA-9003", sync.EventType.PRODUCT_PURCHASED, settings
        )
    assert event is None
    assert ContractRequest  # the request model the contract helper builds on
    # On the lane: the payment, and C-9003's AccountCreated (published with the default
    # file by new_line); no contract event.
    assert [r["kind"] for r in await lane_events(rt.pool)] == ["business-event"] * 2


async def customers_contract(conn: Conn) -> None:
    """A contract row for C-9003 written as customers writes it (without its event)."""
    from bossa.customers import store as customers_store

    await customers_store.create_contract(
        conn,
        "SA-9003",
        customer="C-9003",
        account="A-9003",
        product="SOIP",
        start_date=datetime.now(UTC).date(),
        actor="t",
    )


async def test_a_disconnected_publisher_keeps_events_and_connect_moves_them_in_order(
    rt: Runtime,
) -> None:
    pool = rt.pool
    state = await sync.switch_publisher(
        pool, rt.journal, connected=False, actor="dba", reason="reindex"
    )
    assert not state.connected
    for n in (1, 2, 3):
        await new_line(rt, n)
    await customers.close_account(pool, "A-9002", actor="t")
    # Changes committed; their events wait in the outbox, not on the lane.
    assert await lane_events(pool) == []
    waiting = await sync.publisher(pool)
    assert waiting.outbox == 4
    await sync_metrics.refresh(pool)
    assert sync_metrics.OUTBOX._value.get() == 4
    assert sync_metrics.PUBLISHER_CONNECTED._value.get() == 0

    # The listener has nothing to do meanwhile (and loses nothing).
    idle = await sync.listen(rt.journal, SETTINGS, listen_url=None, once=True)
    assert idle.taken == 0

    back = await sync.switch_publisher(pool, rt.journal, connected=True, actor="dba")
    assert back.connected
    assert back.outbox == 0
    queued = await lane_events(pool)
    assert types(queued) == ["AccountCreated"] * 3 + ["AccountCancelled"]
    assert [r["key"] for r in queued] == ["C-9001", "C-9002", "C-9003", "C-9002"]
    # And new events go straight to the lane after the ones that waited.
    await new_line(rt, 4)
    assert types(await lane_events(pool))[-1] == "AccountCreated"
    log = await rows(pool, "select action, actor, reason, moved from sync.control_log order by id")
    assert log == [
        {"action": "disconnect", "actor": "dba", "reason": "reindex", "moved": 0},
        {"action": "connect", "actor": "dba", "reason": None, "moved": 4},
    ]
    await sync_metrics.refresh(pool)
    assert sync_metrics.READY.labels("sync.pipeline.0")._value.get() == 5
    done = await sync.listen(rt.journal, SETTINGS, listen_url=None, once=True)
    assert done.acked == 5
    closed = await rows(
        pool, "select status from sync.pipeline_accounts where account_id = 'A-9002'"
    )
    assert closed == [{"status": "closed"}]


async def test_a_bad_event_rolls_its_whole_batch_back_and_holds(
    rt: Runtime,
) -> None:
    pool = rt.pool
    async with pool.connection() as conn, conn.transaction():
        await sync.publish(
            conn,
            rt.journal,
            [
                InternalEvent(
                    name="customers.account_opened", customer_id="C-1", data={"account": "A-1"}
                ),
                InternalEvent(name="customers.account_opened", customer_id="C-2", data={}),
                InternalEvent(
                    name="customers.account_opened", customer_id="C-3", data={"account": "A-3"}
                ),
            ],
        )
    stats = await sync.listen(rt.journal, SETTINGS, listen_url=None, once=True)
    assert stats.acked == 0
    held = await sync.report(pool, SETTINGS)
    assert held.by_state[EventState.HELD] == 1
    assert held.by_state[EventState.READY] == 2
    assert held.held[0].key == "C-2"
    assert held.held[0].code == "apply:payload.events.data.account"
    assert await rows(pool, "select * from sync.pipeline_accounts") == []
    again = await sync.listen(rt.journal, SETTINGS, listen_url=None, once=True)
    assert again.taken == 0
    await journal_ops.discard(rt.journal, held.held[0].entry_id, actor="op", reason="bad")
    resumed = await sync.listen(rt.journal, SETTINGS, listen_url=None, once=True)
    assert resumed.acked == 2
    found = await rows(pool, "select account_id from sync.pipeline_accounts order by 1")
    assert found == [{"account_id": "A-1"}, {"account_id": "A-3"}]


# -- the listener's threads, disconnect and start, with modules of the tests' own ---------

PROBE: list[tuple[str, str, float, float]] = []
SLOW_S = 0.3


@module("test_probe")
async def probe(conn: Conn, ctx: ModuleContext, event: sync.BusinessEvent) -> None:
    """Records which thread processed which event when; sleeps the event's `units`."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.sleep(float(event.value("units") or 0) * 0.05)
    await conn.execute("select 1")
    PROBE.append((str(event.value("label")), ctx.thread, began, loop.time()))


SEED_FILE: dict[str, Any] = {
    "notify": {
        "test.recycle": "publish",
        "test.cycle_forward": "publish",
        "test.open_new_cycle": "publish",
    },
    "business_events": {
        "RecycleRequest": {"requires": ["test.recycle"], "modules": ["test_probe"]},
        "CycleForward": {"requires": ["test.cycle_forward"], "modules": ["test_probe"]},
        "OpenNewActgCycle": {"requires": ["test.open_new_cycle"], "modules": ["test_probe"]},
    },
    "threads": {"RecycleRequest": 1, "OpenNewActgCycle": 2},
}
SEED_QUEUE = [
    ("test.recycle", "RecycleRequest #1", 6),
    ("test.cycle_forward", "CycleForward #1", 2),
    ("test.open_new_cycle", "OpenNewActgCycle #1", 3),
    ("test.open_new_cycle", "OpenNewActgCycle #2", 1),
    ("test.open_new_cycle", "OpenNewActgCycle #3", 2),
    ("test.open_new_cycle", "OpenNewActgCycle #4", 1),
    ("test.cycle_forward", "CycleForward #2", 1),
    ("test.recycle", "RecycleRequest #2", 1),
    ("test.cycle_forward", "CycleForward #3", 1),
]


async def publish_each(
    rt: Runtime, settings: SyncSettings, events: list[tuple[str, str, float]]
) -> None:
    """One business operation (transaction) per event, each of its own customer."""
    for n, (name, label, units) in enumerate(events):
        async with rt.pool.connection() as conn, conn.transaction():
            await sync.publish(
                conn,
                rt.journal,
                [
                    InternalEvent(
                        name=name, customer_id=f"C-{n}", data={"label": label, "units": units}
                    )
                ],
                settings=settings,
            )


async def test_the_seeds_thread_allocation_example_through_the_listener(
    rt: Runtime,
    tmp_path: Path,
) -> None:
    settings = SyncSettings(events=event_file(tmp_path, SEED_FILE))
    await publish_each(rt, settings, SEED_QUEUE)
    PROBE.clear()
    stats = await sync.listen(rt.journal, settings, listen_url=None, once=True)
    assert stats.acked == 9
    log = sorted(PROBE, key=lambda r: r[2])
    assert [label for label, *_ in log] == [label for _, label, _ in SEED_QUEUE]
    by = {label: (thread, began, ended) for label, thread, began, ended in log}
    assert by["RecycleRequest #1"][0] == by["RecycleRequest #2"][0] == "RecycleRequest#1"
    assert by["RecycleRequest #2"][1] >= by["RecycleRequest #1"][2]
    assert {by[f"OpenNewActgCycle #{n}"][0] for n in (1, 2)} == {
        "OpenNewActgCycle#1",
        "OpenNewActgCycle#2",
    }
    assert by["OpenNewActgCycle #2"][1] < by["OpenNewActgCycle #1"][2]  # side by side
    for n in (1, 2, 3):
        assert by[f"CycleForward #{n}"][0] == "default#1"
    assert by["CycleForward #2"][1] >= by["OpenNewActgCycle #4"][1]
    assert by["CycleForward #2"][1] >= by["CycleForward #1"][2]
    assert by["CycleForward #3"][1] >= by["RecycleRequest #2"][1]


SLOW_FILE: dict[str, Any] = {
    "notify": {"test.slow": "publish"},
    "business_events": {"SlowThing": {"requires": ["test.slow"], "modules": ["test_probe"]}},
}


async def wait_for(check: Callable[[], Any], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


@pytest.fixture
async def running_listener(
    rt: Runtime,
    tmp_path: Path,
) -> AsyncIterator[tuple[Listener, SyncSettings]]:
    settings = SyncSettings(events=event_file(tmp_path, SLOW_FILE), poll_s=0.05)
    worker = Listener(rt.journal, settings)
    task = asyncio.create_task(worker.run())
    yield worker, settings
    worker.stop()
    await asyncio.wait_for(task, timeout=30)


async def test_disconnect_waits_for_the_event_in_hand_and_connect_loses_nothing(
    rt: Runtime,
    running_listener: tuple[Listener, SyncSettings],
) -> None:
    worker, settings = running_listener
    pool = rt.pool
    await wait_for(lambda: _state_is(pool, "active"))
    PROBE.clear()
    # Each event takes 0.3 s: the disconnect lands while the first is being processed.
    await publish_each(rt, settings, [("test.slow", f"slow {n}", 6) for n in range(4)])
    await wait_for(lambda: _ready(pool, below=4))
    state = await sync.switch_listener(pool, 0, connected=False, actor="dba", wait_s=20)
    assert state.state == "disconnected"
    # It returned after the event in hand finished, not before; nothing is in process.
    finished = [label for label, *_ in PROBE]
    assert finished, "the event in hand was finished before the disconnect returned"
    report = await sync.report(pool, settings)
    assert report.by_state[EventState.IN_PROCESS] == 0
    assert report.by_state[EventState.PROCESSED] == len(finished)
    assert report.by_state[EventState.READY] == 4 - len(finished)
    assert report.listener is not None
    assert report.listener.state == "disconnected"
    # Disconnected, it takes nothing, whatever arrives.
    await publish_each(rt, settings, [("test.slow", "slow 4", 0)])
    await asyncio.sleep(0.5)
    assert (await sync.report(pool, settings)).by_state[EventState.PROCESSED] == len(finished)

    connected = await sync.switch_listener(pool, 0, connected=True, actor="dba", wait_s=20)
    assert connected.state == "active"
    await wait_for(lambda: _processed(pool, 5))
    assert sorted(label for label, *_ in PROBE) == [f"slow {n}" for n in range(5)]
    log = await rows(pool, "select target, action, actor from sync.control_log order by id")
    assert log == [
        {"target": "listener", "action": "disconnect", "actor": "dba"},
        {"target": "listener", "action": "connect", "actor": "dba"},
    ]
    assert worker.stats.acked == 5


async def _state_is(pool: Pool, state: str) -> bool:
    return (await sync.listener_state(pool, 0)).state == state


async def _ready(pool: Pool, *, below: int) -> bool:
    found = await rows(
        pool,
        "select count(*) as n from journal.lane_entries where lane = 'sync.pipeline.0'"
        " and state in ('ready', 'waiting')",
    )
    return int(found[0]["n"]) < below


async def _processed(pool: Pool, n: int) -> bool:
    found = await rows(
        pool,
        "select count(*) as n from journal.lane_entries where lane = 'sync.pipeline.0'"
        " and state = 'done'",
    )
    return int(found[0]["n"]) == n


async def test_events_wait_while_the_pipelines_modules_start(
    rt: Runtime,
    tmp_path: Path,
) -> None:
    ready = asyncio.Event()

    async def slow_init(pool: Pool) -> None:
        await ready.wait()

    @module("test_slow_start", init=slow_init)
    async def slow_start(conn: Conn, ctx: ModuleContext, event: sync.BusinessEvent) -> None:
        PROBE.append(("started module", ctx.thread, 0.0, 0.0))

    try:
        settings = SyncSettings(
            poll_s=0.05,
            events=event_file(
                tmp_path,
                {
                    "notify": {"test.slow": "publish"},
                    "business_events": {
                        "SlowThing": {"requires": ["test.slow"], "modules": ["test_slow_start"]}
                    },
                },
            ),
        )
        await publish_each(rt, settings, [("test.slow", "x", 0)])
        PROBE.clear()
        worker = Listener(rt.journal, settings)
        task = asyncio.create_task(worker.run())
        await wait_for(lambda: _state_is(rt.pool, "starting"))
        await asyncio.sleep(0.3)
        report = await sync.report(rt.pool, settings)
        assert report.by_state[EventState.READY] == 1  # waits for the modules
        assert PROBE == []
        ready.set()
        await wait_for(lambda: _processed(rt.pool, 1))
        assert PROBE == [("started module", "default#1", 0.0, 0.0)]
        worker.stop()
        await asyncio.wait_for(task, timeout=30)
        assert (await sync.listener_state(rt.pool, 0)).state == "stopped"
    finally:
        MODULES.pop("test_slow_start", None)


async def test_several_instances_with_an_account_router(
    rt: Runtime,
) -> None:
    pool = rt.pool
    zero = SyncSettings(instances=2, instance=0)
    one = SyncSettings(instances=2, instance=1)
    await sync.set_route(pool, "C-9001", 1, zero, actor="op")
    with pytest.raises(sync.InvalidInput if hasattr(sync, "InvalidInput") else Exception):
        await sync.set_route(pool, "C-9001", 2, zero, actor="op")
    async with pool.connection() as conn, conn.transaction():
        await sync.publish(
            conn,
            rt.journal,
            [
                InternalEvent(
                    name="customers.account_opened", customer_id="C-9001", data={"account": "A-1"}
                ),
                InternalEvent(name="billing.run_started", data={"cycle": "MONTHLY", "run_id": 1}),
            ],
            settings=zero,
        )
        assert await sync.instance_of(conn, "C-9001", zero) == 1
    assert types(await lane_events(pool, "sync.pipeline.1")) == ["AccountCreated", "BillingStarted"]
    assert types(await lane_events(pool, "sync.pipeline.0")) == ["BillingStarted"]
    await sync.listen(rt.journal, one, listen_url=None, once=True)
    found = await rows(pool, "select instance, account_id from sync.pipeline_accounts")
    assert found == [{"instance": 1, "account_id": "A-1"}]
    assert [r["state"] for r in await lane_events(pool, "sync.pipeline.0")] == ["ready"]
    # The listener keeps its lane's processed events for the retention setting (S6).
    policy = await rt.journal.policy("sync.pipeline.1", fresh=True)
    assert policy.retention_s == one.retention_s


def test_settings_refuse_an_instance_that_does_not_exist() -> None:
    from bossa.config import ConfigError, load

    with pytest.raises(ConfigError, match="instance"):
        load(SyncSettings, instances=2, instance=2)


async def test_a_long_event_keeps_the_listener_alive_for_a_disconnect(
    rt: Runtime,
    running_listener: tuple[Listener, SyncSettings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listener silent for longer than LISTENER_SILENT_S is reported stopped; one busy
    with a long event must keep saying it is alive, or a disconnect would return while
    the event is still being processed."""
    from bossa.sync import lanes
    from bossa.sync import service as sync_service

    monkeypatch.setattr(sync_service, "LISTENER_SILENT_S", 0.5)
    monkeypatch.setattr(lanes, "SEEN_EVERY_S", 0.1)
    _worker, settings = running_listener
    await wait_for(lambda: _state_is(rt.pool, "active"))
    PROBE.clear()
    await publish_each(rt, settings, [("test.slow", "long", 30)])  # 1.5 s
    await wait_for(lambda: _ready(rt.pool, below=1))
    state = await sync.switch_listener(rt.pool, 0, connected=False, actor="dba", wait_s=20)
    assert state.state == "disconnected"
    assert [label for label, *_ in PROBE] == ["long"]  # finished before the return
    await sync.switch_listener(rt.pool, 0, connected=True, actor="dba", wait_s=20)


async def test_billing_suspending_a_contract_publishes_its_status_change(rt: Runtime) -> None:
    """Dunning and payments suspend and restore contracts through customers'
    `set_contract_status`: the pipeline hears of it as of a suspension by hand."""
    from tests.sync.test_sync import buy

    await new_line(rt, 1)
    await buy(rt, 1, "SOIP")
    async with rt.pool.connection() as conn, conn.transaction():
        await customers.set_contract_status(conn, "SA-9001", "suspended", actor="billing")
    queued = await lane_events(rt.pool)
    assert [(r["kind"], r["payload"]["type"]) for r in queued] == [
        ("business-event", "AccountCreated"),
        ("account-sync", "product_purchased"),
        ("account-sync", "status_changed"),
    ]
    assert queued[2]["payload"]["status"] == "suspended"
    stats = await sync.listen(rt.journal, SETTINGS, listen_url=None, once=True)
    assert stats.acked == 3
