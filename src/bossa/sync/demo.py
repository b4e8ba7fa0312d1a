"""The sync and rating chapter of `bossa demo`: a product bought while the rating
pipeline is stopped changes how the next call is rated once it is restarted (S1, S5,
S11, S13). The pipeline is `bossa sync pipeline` (the interleaving of rating CDR files
and business events), run in the tour's process on an inbox in a temporary folder."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console

from bossa import config, ledger, rating
from bossa.customers import service as customers
from bossa.customers.models import ContractRequest, CustomerRequest, ProductChange
from bossa.journal import Journal
from bossa.provisioning import service as provisioning
from bossa.runtime import Runtime
from bossa.sync import service
from bossa.sync.lanes import Interleaver, interleaver
from bossa.sync.models import Mode
from bossa.sync.settings import SyncSettings
from bossa.terminal import table

__all__ = ["chapter"]

CUSTOMER, ACCOUNT, SA_ID, NUMBER = "C-7001", "A-7001", "SA-7001", "+821077770001"
HEADER = "record_key,msisdn,destination,start,duration\n"
#: A call is 5 minutes to a national number (prefix 82): SoIP charges it at its national
#: rates, WiBro at its own, ten times higher, with no free minutes.
CALL_S = 300


def _tariff(
    product: str, peak: int, offpeak: int, weekend: int, allowance: int
) -> rating.TariffVersion:
    return rating.TariffRequest.parse(
        {
            "product": product,
            "valid_from": "2000-01-01",
            "increment": 60,
            "min_charge": 10,
            "discount_percent": 0,
            "allowance_seconds": allowance,
            "zones": [{"prefix": "82", "zone": "national", "included": True}],
            "rates": {"national": {"peak": peak, "offpeak": offpeak, "weekend": weekend}},
        }
    ).version()


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: {what} did not happen within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


async def chapter(out: Console, runtime: Runtime) -> None:
    pool, journal = runtime.pool, runtime.journal
    settings = config.load(
        SyncSettings,
        **{
            **runtime.settings(SyncSettings).model_dump(),
            "check_interval_s": 0.05,
            "poll_s": 0.05,
        },
    )
    zone = settings.zone

    def local_now() -> datetime:
        return datetime.now(zone).replace(tzinfo=None, microsecond=0)

    for product, rates in (("SOIP", (60, 30, 20, 600)), ("WIBRO", (600, 300, 200, 0))):
        await rating.add_tariff(pool, _tariff(product, *rates), actor="demo")
    out.print(
        "Usage tariffs: SOIP national 60/30/20 per minute (peak/off-peak/weekend) with 10"
        " free minutes a month; WIBRO national 600/300/200, no free minutes."
    )

    await customers.create_customer(
        pool, CustomerRequest(id=CUSTOMER, name="Jung Woo-jin", msisdn=NUMBER), actor="demo"
    )
    await customers.open_account(
        pool,
        ledger.AccountRequest(account=ACCOUNT, customer=CUSTOMER, currency="KRW"),
        actor="demo",
    )
    await customers.create_contract(
        journal,
        runtime.deliverer,
        ContractRequest(
            sa_id=SA_ID,
            customer=CUSTOMER,
            account=ACCOUNT,
            product="SOIP",
            bind_data=await _binds(runtime, "SOIP", "4201"),
        ),
        actor="front-office",
    )
    out.print(
        f"{CUSTOMER} ({NUMBER}) buys SOIP on {ACCOUNT}: its business events wait READY on"
        f" {settings.lane} ({await service.ready_events(pool, settings.lane)} events READY,"
        " the tour's earlier changes among them)."
    )

    workdir = Path(tempfile.mkdtemp(prefix="bossa-demo-inbox-"))
    inbox = workdir / "inbox"
    out.print(
        f"The pipeline starts (bossa sync pipeline {inbox}): max {settings.max_events} READY"
        f" events, min {settings.min_events}, CDR time {settings.max_cdr_time_s:g} s, event"
        f" time {settings.max_event_time_s:g} s."
    )
    first, task = _start(journal, settings, inbox)
    await _until(lambda: _settled(first, settings), "applying the events that waited")
    out.print(f"It applied {first.listener.stats.acked} events first, then rates CDRs.")

    call1 = local_now() + timedelta(seconds=2)
    _drop(inbox, "cdrs-1", [_call("call-1", NUMBER, call1)])
    await _until(lambda: _rated(inbox, "cdrs-1"), "rating cdrs-1.csv")
    out.print("cdrs-1.csv dropped in the inbox: rated.")
    first_switches = _switches(first)
    await _stop(first, task)
    out.print("The pipeline stops (SIGTERM: it finishes what it holds, gives back the rest).")

    await _past(call1, zone)
    await customers.change_product(
        journal,
        runtime.deliverer,
        SA_ID,
        ProductChange(product="WIBRO", bind_data=await _binds(runtime, "WIBRO", "4202")),
        actor="front-office",
    )
    changed = local_now()
    call2 = changed + timedelta(seconds=2)
    _drop(inbox, "cdrs-2", [_call("call-2", NUMBER, call2)])
    waiting = await service.ready_events(pool, settings.lane)
    out.print(
        f"While it is down, {CUSTOMER} moves to WIBRO at {changed:%H:%M:%S}: the event waits"
        f" in the queue ({waiting} READY), and cdrs-2.csv, a call at {call2:%H:%M:%S}, waits"
        " in the inbox."
    )

    second, task = _start(journal, settings, inbox)
    await _until(lambda: _rated(inbox, "cdrs-2"), "rating cdrs-2.csv after the restart")
    out.print(
        "The pipeline restarts: it applies the waiting event before it rates the waiting"
        " file, so the call is rated with the product bought while it was down."
    )
    second_switches = _switches(second)
    await _stop(second, task)
    shutil.rmtree(workdir, ignore_errors=True)

    table(
        [
            {"run": "first", "switches": first_switches},
            {"run": "after the restart", "switches": second_switches},
        ],
        ["run", "switches"],
        title="the pipeline's mode switches (bossa_sync_mode_switches_total)",
    )
    table(
        [r.model_dump(mode="json") for r in await rating.rated(pool, ["call-1", "call-2"])],
        ["record_key", "started_at", "product_code", "duration", "billed", "free", "charge"],
        title="rating.rated_usage",
    )


async def _binds(runtime: Runtime, product: str, intf_code: str) -> dict[str, object]:
    """The provisioning order's bind data: the tour's sample plans (the provisioning
    chapter's, when it ran) set the line's speed; without a plan, none."""
    plans = await provisioning.list_plans(runtime.pool)
    planned = any(p.product_code == product and p.intf_code == intf_code for p in plans)
    return {"speed": "10M"} if planned else {}


def _start(
    journal: Journal, settings: SyncSettings, inbox: Path
) -> tuple[Interleaver, asyncio.Task[None]]:
    it = interleaver(journal, settings, inbox, poll_s=0.1, actor="demo")
    return it, asyncio.create_task(it.run())


async def _stop(it: Interleaver, task: asyncio.Task[None]) -> None:
    it.stop()
    await task
    it.close()


async def _settled(it: Interleaver, settings: SyncSettings) -> bool:
    if it.mode is not Mode.CDRS:
        return False
    return await service.ready_events(it.listener.pool, settings.lane) <= settings.min_events


async def _rated(inbox: Path, name: str) -> bool:
    return (inbox / "done" / f"{name}.csv").exists()


def _call(key: str, number: str, start: datetime) -> str:
    return f"{key},{number.removeprefix('+')},8221234567,{start:%Y-%m-%d %H:%M:%S},{CALL_S}"


def _drop(inbox: Path, name: str, lines: list[str]) -> None:
    # Written aside, then moved in: the inbox never sees half a file.
    part = inbox.parent / f"{name}.part"
    part.write_text(HEADER + "".join(line + "\n" for line in lines))
    part.rename(inbox / f"{name}.csv")


async def _past(moment: datetime, zone: ZoneInfo) -> None:
    """Wait until the local clock is past `moment` (CDR times are whole seconds)."""
    now = datetime.now(zone).replace(tzinfo=None)
    await asyncio.sleep(max(0.0, (moment - now).total_seconds() + 1))


def _switches(it: Interleaver) -> str:
    return ", ".join(f"to {mode.value} ({reason.value})" for mode, reason in it.stats.switches)
