"""S13, interleaving: one pipeline process (`bossa sync pipeline`) rates CDR files and
processes business events in turn, switching at the seed's limits (maximum and minimum
READY events, maximum CDR time, maximum event time, the optional switch when no CDRs
wait), on real PostgreSQL; nothing is lost or applied twice across the switches."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from bossa import config
from bossa.config import ConfigError
from bossa.journal import Journal
from bossa.journal import service as journal_ops
from bossa.runtime import Runtime
from bossa.sync import EventState, SyncSettings, listen, report
from bossa.sync.lanes import Interleaver, interleaver
from bossa.sync.models import Mode, SwitchReason, Thresholds, next_mode
from bossa.sync.service import ready_events, switch_listener
from tests.sync.test_sync import (
    HEADER,
    asyncio_sleep_past,
    buy,
    change,
    local,
    new_line,
    outcome,
    runtime,  # noqa: F401
    utc_now,
)

pytestmark = pytest.mark.anyio

CDRS, EVENTS = Mode.CDRS, Mode.EVENTS


class Clock:
    """A monotonic clock the test moves: the time limits are reached when it says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings(**limits: object) -> SyncSettings:
    values: dict[str, object] = {
        "max_events": 5,
        "min_events": 2,
        "max_cdr_time_s": 0.0,
        "max_event_time_s": 0.0,
        "check_interval_s": 0.01,
        "poll_s": 0.01,
    }
    values.update(limits)
    return SyncSettings(**values)  # type: ignore[arg-type]


async def started(journal: Journal, inbox: Path, clock: Clock, **limits: object) -> Interleaver:
    it = interleaver(journal, settings(**limits), inbox, poll_s=0.0, clock=clock)
    await it.listener.start()
    it.since = clock()
    return it


def drop(inbox: Path, name: str, lines: list[str]) -> Path:
    path = inbox / f"{name}.csv"
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return path


async def until(it: Interleaver, done: object, *, most: int = 40) -> None:
    """Steps until `done()` holds (a file is rated, the mode changed)."""
    for _ in range(most):
        if done():  # type: ignore[operator]
            return
        await it.step()
    raise AssertionError(f"not reached in {most} steps; switches: {it.stats.switches}")


async def ready(it: Interleaver) -> int:
    return await ready_events(it.listener.pool, it.lane)


# -- the rule alone --------------------------------------------------------------------------


LIMITS = Thresholds(
    max_events=10, min_events=2, max_cdr_time_s=5, max_event_time_s=3, events_when_no_cdrs=False
)


@pytest.mark.parametrize(
    ("mode", "ready", "elapsed", "waiting", "expected"),
    [
        (CDRS, 9, 0.0, True, None),
        (CDRS, 10, 0.0, True, SwitchReason.MAX_EVENTS),  # reaches the maximum
        (CDRS, 3, 4.9, True, None),
        (CDRS, 3, 5.0, True, SwitchReason.CDR_TIME),  # the CDR time is spent
        (CDRS, 2, 60.0, True, None),  # at the minimum: nothing for events to do
        (CDRS, 3, 0.0, False, None),  # no CDRs wait, the option is off: the seed's wait
        (EVENTS, 3, 0.0, True, None),
        (EVENTS, 2, 0.0, True, SwitchReason.MIN_EVENTS),  # falls to the minimum
        (EVENTS, 0, 0.0, False, SwitchReason.MIN_EVENTS),
        (EVENTS, 8, 3.0, True, SwitchReason.EVENT_TIME),  # the event time is spent
    ],
)
def test_the_seed_thresholds(
    mode: Mode, ready: int, elapsed: float, waiting: bool, expected: SwitchReason | None
) -> None:
    assert next_mode(mode, LIMITS, ready=ready, elapsed_s=elapsed, cdrs_waiting=waiting) == expected


def test_the_optional_switch_when_no_cdrs_wait() -> None:
    limits = Thresholds(10, 2, 0, 0, events_when_no_cdrs=True)
    assert next_mode(CDRS, limits, ready=1, elapsed_s=0, cdrs_waiting=False) == (
        SwitchReason.NO_CDRS
    )
    assert next_mode(CDRS, limits, ready=0, elapsed_s=0, cdrs_waiting=False) is None
    assert next_mode(CDRS, limits, ready=1, elapsed_s=0, cdrs_waiting=True) is None
    # On events with no CDR waiting it stays, below the minimum too; a file brings it back.
    assert next_mode(EVENTS, limits, ready=0, elapsed_s=99, cdrs_waiting=False) is None
    assert next_mode(EVENTS, limits, ready=0, elapsed_s=0, cdrs_waiting=True) == (
        SwitchReason.MIN_EVENTS
    )
    # Events are taken no further than the minimum, unless nothing else waits.
    assert limits.take_limit(7, True, 500) == 5
    assert limits.take_limit(7, False, 500) == 500
    assert limits.take_limit(7, True, 3) == 3


def test_the_settings_are_bounded_and_name_the_field() -> None:
    with pytest.raises(ConfigError) as low:
        config.load(SyncSettings, max_events=0)
    assert low.value.field == "BOSSA_SYNC_MAX_EVENTS"
    with pytest.raises(ConfigError) as long:
        config.load(SyncSettings, max_cdr_time_s=86_401)
    assert long.value.field == "BOSSA_SYNC_MAX_CDR_TIME_S"
    with pytest.raises(ConfigError) as order:
        config.load(SyncSettings, max_events=5, min_events=5)
    assert order.value.field == "BOSSA_SYNC_MIN_EVENTS"
    assert str(order.value).startswith("BOSSA_SYNC_MIN_EVENTS: must be below max_events (5)")


# -- on PostgreSQL ---------------------------------------------------------------------------


async def test_the_mode_switches_at_the_seed_limits_and_nothing_is_lost(
    runtime: Runtime,  # noqa: F811
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    clock = Clock()
    # batch 1: one event per take, so the event time can run out between two takes.
    it = await started(
        runtime.journal, inbox, clock, max_cdr_time_s=10.0, max_event_time_s=10.0, batch=1
    )
    published = await ready(it)  # the sample operator's four accounts, announced
    assert published == 4

    # It starts on events (what waited while it was down) and stops dequeuing at the
    # minimum: exactly two stay READY.
    await until(it, lambda: it.mode is CDRS)
    assert it.stats.switches == [(CDRS, SwitchReason.MIN_EVENTS)]
    assert await ready(it) == 2

    # Rating: a file is taken once it stopped growing (two looks), and rated.
    records = 0
    drop(inbox, "f1", [f"f1-{i},8210555{i:04d},8231,2026-03-02 10:00:00,60" for i in range(3)])
    records += 3
    await until(it, lambda: (inbox / "done" / "f1.csv").exists())
    assert it.mode is CDRS

    # READY events reach the maximum while a file waits: events first, the file after.
    drop(inbox, "f2", [f"f2-{i},8210555{i:04d},8231,2026-03-02 11:00:00,60" for i in range(2)])
    records += 2
    for n in (1, 2, 3):
        await new_line(runtime, n)  # an AccountCreated each
    published += 3
    assert await ready(it) == 5
    await it.step()
    assert it.stats.switches[-1] == (EVENTS, SwitchReason.MAX_EVENTS)
    await until(it, lambda: it.mode is CDRS)
    assert it.stats.switches[-1] == (CDRS, SwitchReason.MIN_EVENTS)
    assert await ready(it) == 2
    assert (inbox / "f2.csv").exists()  # not rated while events were processed
    await until(it, lambda: (inbox / "done" / "f2.csv").exists())

    # The CDR time is spent with more than the minimum READY (but below the maximum).
    await new_line(runtime, 4)
    published += 1
    await it.step()
    assert it.mode is CDRS  # 3 READY: below the maximum, and the time is not spent
    clock.advance(10.0)
    await it.step()
    assert it.stats.switches[-1] == (EVENTS, SwitchReason.CDR_TIME)
    await until(it, lambda: it.mode is CDRS)
    assert it.stats.switches[-1] == (CDRS, SwitchReason.MIN_EVENTS)

    # The event time is spent above the minimum: back to CDRs with events still READY.
    for n in (5, 6, 7):
        await new_line(runtime, n)
    published += 3
    await it.step()  # the switch, then one take: one event (batch 1)
    assert it.stats.switches[-1] == (EVENTS, SwitchReason.MAX_EVENTS)
    assert await ready(it) == 4
    clock.advance(10.0)
    await it.step()
    assert it.stats.switches[-1] == (CDRS, SwitchReason.EVENT_TIME)
    assert await ready(it) == 4
    drop(inbox, "f3", [f"f3-{i},8210555{i:04d},8231,2026-03-02 12:00:00,60" for i in range(4)])
    records += 4
    await until(it, lambda: (inbox / "done" / "f3.csv").exists())
    # f1 dropped again: the same content is rated once.
    (inbox / "done" / "f1.csv").rename(inbox / "f1-again.csv")
    await until(it, lambda: (inbox / "done" / "f1-again.csv").exists())
    await it.listener.close()
    it.close()

    # Nothing lost, nothing twice: every event processed once, every record once.
    await listen(runtime.journal, SyncSettings(), listen_url=None, once=True)
    lane = await report(runtime.pool, SyncSettings())
    assert lane.by_state[EventState.READY] == 0
    assert lane.by_state[EventState.PROCESSED] == published
    assert lane.by_state[EventState.HELD] == 0
    async with runtime.pool.connection() as conn:
        row = await (
            await conn.execute(
                "select (select count(*) from rating.rated_usage) as rated,"
                " (select count(*) from rating.suspense) as suspended,"
                " (select count(*) from rating.batches where source like 'f%%') as batches"
            )
        ).fetchone()
    assert row is not None
    assert row["rated"] + row["suspended"] == records
    assert row["batches"] == 3
    assert it.stats.files == 4  # f1 twice: the second reported as repeated


@pytest.mark.parametrize(("max_events", "product"), [(1, "WIBRO"), (2, "SOIP")])
async def test_a_purchase_is_applied_before_a_later_file_when_the_threshold_says_so(
    runtime: Runtime,  # noqa: F811
    tmp_path: Path,
    max_events: int,
    product: str,
) -> None:
    inbox = tmp_path / "inbox"
    number = await new_line(runtime, 1)
    await buy(runtime, 1, "SOIP")
    bought = utc_now()
    it = await started(runtime.journal, inbox, Clock(), max_events=max_events, min_events=0)
    await until(it, lambda: it.mode is CDRS)  # what waited is applied first: SOIP
    assert await ready(it) == 0

    await asyncio_sleep_past(bought + timedelta(seconds=1))
    await change(runtime, 1, "WIBRO")  # one event READY
    call = utc_now() + timedelta(seconds=2)
    drop(inbox, "later", [f"l1,{number},8231,{local(call)},300"])
    await until(it, lambda: (inbox / "done" / "later.csv").exists())
    # At the threshold (1 READY >= 1) the change is applied before the file is rated;
    # below it (1 < 2), the file is rated first, with what the pipeline held.
    found = await outcome(runtime.pool, "l1")
    assert isinstance(found, tuple)
    assert found[0] == product
    switched = (EVENTS, SwitchReason.MAX_EVENTS) in it.stats.switches
    assert switched is (max_events == 1)
    await it.listener.close()
    it.close()


async def test_the_pipeline_command_drains_inbox_and_events(
    runtime: Runtime,  # noqa: F811
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    number = await new_line(runtime, 1)
    await buy(runtime, 1, "SOIP")
    call = utc_now() + timedelta(seconds=2)
    drop(inbox, "calls", [f"c1,{number},8231,{local(call)},60"])
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bossa.cli", "sync", "pipeline", str(inbox), "--once"],
        env={**os.environ, "BOSSA_DATABASE_URL": runtime.url, "BOSSA_SYNC_POLL_S": "0.05"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "6 events applied, 1 files rated (1 records rated" in done.stdout
    assert (inbox / "done" / "calls.csv").exists()
    assert (await outcome(runtime.pool, "c1"))[0] == "SOIP"
    lane = await report(runtime.pool, SyncSettings())
    assert lane.by_state[EventState.READY] == 0


async def test_a_held_event_sends_it_back_to_rating_and_no_cdrs_sends_it_to_events(
    runtime: Runtime,  # noqa: F811
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    await new_line(runtime, 1)
    await new_line(runtime, 2, msisdn="+1234567890123456789")  # rating cannot key it
    await buy(runtime, 2, "SOIP")
    it = await started(
        runtime.journal, inbox, Clock(), max_events=5, min_events=0, events_when_no_cdrs=True
    )
    # On events with no file waiting it stays there, until the purchase is held (S8):
    # the listener may not take, and the pipeline goes back to rating.
    await until(it, lambda: it.mode is CDRS)
    assert it.stats.switches == [(CDRS, SwitchReason.EVENTS_BLOCKED)]
    held = await report(runtime.pool, SyncSettings())
    assert held.by_state[EventState.HELD] == 1

    # Rating goes on while the event is held, and events READY do not take it away.
    await new_line(runtime, 3)
    drop(inbox, "f1", [f"f1-0,821055500001,8231,{local(utc_now())},60"])
    await until(it, lambda: (inbox / "done" / "f1.csv").exists())
    await it.step()
    assert it.mode is CDRS
    assert len(it.stats.switches) == 1

    # The operator discards the bad event: no file waits, an event is READY: to events
    # at once (the optional switch), and it stays there until a file comes.
    await journal_ops.discard(
        runtime.journal, held.held[0].entry_id, actor="op", reason="number fixed by hand"
    )
    await it.step()
    assert it.stats.switches[-1] == (EVENTS, SwitchReason.NO_CDRS)
    for _ in range(3):
        await it.step()
    assert it.mode is EVENTS
    assert await ready(it) == 0
    drop(inbox, "f2", [f"f2-0,821055500003,8231,{local(utc_now())},60"])
    await until(it, lambda: (inbox / "done" / "f2.csv").exists())
    assert it.stats.switches[-1] == (CDRS, SwitchReason.MIN_EVENTS)
    await it.listener.close()
    it.close()


async def test_a_disconnected_listener_keeps_the_pipeline_rating(
    runtime: Runtime,  # noqa: F811
    tmp_path: Path,
) -> None:
    """S9 through the pipeline: `bossa sync listener disconnect` returns once it stopped
    taking events, files are still rated meanwhile, and `connect` lets the events in."""
    inbox = tmp_path / "inbox"
    it = interleaver(runtime.journal, settings(max_events=1, min_events=0), inbox, poll_s=0.05)
    task = asyncio.create_task(it.run())
    try:
        await until_true(lambda: ready(it), 0)  # the sample operator's events applied
        off = await switch_listener(runtime.pool, 0, connected=False, actor="dba", wait_s=20)
        assert off.state == "disconnected"
        await new_line(runtime, 1)
        drop(inbox, "f1", [f"f1-0,821055500001,8231,{local(utc_now())},60"])
        for _ in range(200):
            if (inbox / "done" / "f1.csv").exists():
                break
            await asyncio.sleep(0.05)
        assert (inbox / "done" / "f1.csv").exists()
        assert await ready(it) == 1  # READY at the maximum, but not taken
        on = await switch_listener(runtime.pool, 0, connected=True, actor="dba", wait_s=20)
        assert on.state == "active"
        await until_true(lambda: ready(it), 0)
    finally:
        it.stop()
        await task
        it.close()
    assert it.stats.files == 1
    assert (EVENTS, SwitchReason.MAX_EVENTS) in it.stats.switches


async def until_true(value: Callable[[], Awaitable[int]], wanted: int) -> None:
    for _ in range(400):
        if await value() == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {wanted}")


async def test_once_drains_events_below_the_minimum_too(
    runtime: Runtime,  # noqa: F811
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    drop(inbox, "f1", [f"f1-0,821055500001,8231,{local(utc_now())},60"])
    # No time limits: READY events at the minimum would wait for nothing, forever.
    it = interleaver(runtime.journal, settings(), inbox, poll_s=0.05)
    try:
        await asyncio.wait_for(it.run(until_idle=True), timeout=60)
    finally:
        it.close()
    assert await ready(it) == 0
    assert it.stats.events == 4
    assert it.stats.files == 1
