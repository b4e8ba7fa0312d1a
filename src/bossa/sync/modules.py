"""The pipeline modules the listener routes business events to (S6; BRM DAT_AccountBatch,
DAT_BalanceBatch, DAT_Discount and the modules that take a process's events).

A module is registered under a name with `@module`; the business-event file lists, per
type, the modules that get it. Each gets the event inside the transaction that marks it
PROCESSED: what it changes commits with the ack or not at all (applied once). A module
may have an `init`, run when the listener starts and before it takes any event (S11:
events that arrive while the pipeline starts wait until its modules are ready).

What each keeps:

- `account_data`: contracts' account-sync events become rating's subscriptions (the
  existing `service.apply`); AccountCreated announces an account (S10: its details are
  loaded only on its first usage, by rating), AccountCancelled closes it.
- `balance_data`: the account's balances, read from the ledger when the event applies
  (the seed: a module may use the event's data or read the current data at the source).
- `discount_data`: the discount fields (`discount_*`) an event carries, per account.
- `billing`: which cycles a bill run is billing (S14 reads it).
- `recycle`: each recycle request, processed once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bossa import ledger
from bossa.db import Conn, Pool
from bossa.errors import InvalidInput
from bossa.sync import store
from bossa.sync.models import BusinessEvent, BusinessType

__all__ = ["MODULES", "Module", "ModuleContext", "module"]


@dataclass(frozen=True, slots=True)
class ModuleContext:
    instance: int
    entry_id: int
    #: The listener's thread processing the event (S7), as logs and tests name it.
    thread: str = "default#1"


Apply = Callable[[Conn, ModuleContext, BusinessEvent], Awaitable[None]]
Init = Callable[[Pool], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    apply: Apply
    init: Init | None = None


MODULES: dict[str, Module] = {}


def module(name: str, *, init: Init | None = None) -> Callable[[Apply], Apply]:
    """Register `apply` as the pipeline module `name` (replacing one of that name: a
    deployment may put its own in place of bossa's)."""

    def register(apply: Apply) -> Apply:
        MODULES[name] = Module(name, apply, init)
        return apply

    return register


def _account(event: BusinessEvent) -> str:
    account = event.value("account")
    if not isinstance(account, str) or not account:
        raise InvalidInput(f"{event.type} names no account", field="payload.events.data.account")
    return account


@module("account_data")
async def account_data(conn: Conn, ctx: ModuleContext, event: BusinessEvent) -> None:
    if event.type == BusinessType.ACCOUNT_CREATED:
        status = "announced"
    elif event.type == BusinessType.ACCOUNT_CANCELLED:
        status = "closed"
    else:
        status = str(event.value("status") or "open")
    await store.account_announced(
        conn,
        instance=ctx.instance,
        account=_account(event),
        customer=event.customer_id,
        status=status,
        entry=ctx.entry_id,
    )


@module("balance_data")
async def balance_data(conn: Conn, ctx: ModuleContext, event: BusinessEvent) -> None:
    account = _account(event)
    balances = await ledger.balances(conn, account)
    await store.account_balances(
        conn,
        instance=ctx.instance,
        account=account,
        customer=event.customer_id,
        balances=json.dumps(balances),
        entry=ctx.entry_id,
    )


@module("discount_data")
async def discount_data(conn: Conn, ctx: ModuleContext, event: BusinessEvent) -> None:
    discounts: dict[str, Any] = {}
    for internal in event.events:
        discounts.update({k: v for k, v in internal.data.items() if k.startswith("discount_")})
    await store.account_discounts(
        conn,
        instance=ctx.instance,
        account=_account(event),
        customer=event.customer_id,
        discounts=json.dumps(discounts),
        entry=ctx.entry_id,
    )


@module("billing")
async def billing(conn: Conn, ctx: ModuleContext, event: BusinessEvent) -> None:
    cycle = event.value("cycle")
    if not isinstance(cycle, str) or not cycle:
        raise InvalidInput(f"{event.type} names no cycle", field="payload.events.data.cycle")
    run = event.value("run_id")
    await store.billing_mark(
        conn,
        started=event.type == BusinessType.BILLING_STARTED,
        instance=ctx.instance,
        cycle=cycle,
        run=int(run) if isinstance(run, int) else None,
        entry=ctx.entry_id,
    )


@module("recycle")
async def recycle(conn: Conn, ctx: ModuleContext, event: BusinessEvent) -> None:
    by, reason = event.value("requested_by"), event.value("reason")
    await store.recycle_processed(
        conn,
        entry=ctx.entry_id,
        instance=ctx.instance,
        by=by if isinstance(by, str) else None,
        reason=reason if isinstance(reason, str) else None,
    )
