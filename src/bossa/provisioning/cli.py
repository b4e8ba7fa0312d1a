"""`bossa provisioning ...`: divisions, plans, orders, buffers, daemons, the log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from bossa import config
from bossa.errors import InvalidInput
from bossa.journal import operator as journal_ops
from bossa.provisioning import catalogue
from bossa.provisioning.catalogue import QUERIES
from bossa.provisioning.daemons import BackupDaemon, OrderDaemon
from bossa.provisioning.delivery import Deliverer
from bossa.provisioning.orders import OrderRequest, lane_of, submit
from bossa.provisioning.settings import ProvisioningSettings
from bossa.runtime import Runtime, running
from bossa.terminal import out, print_json, table

__all__ = ["provisioning_app"]

T = TypeVar("T")
provisioning_app = typer.Typer(
    help="Backup-mode provisioning: divisions, plans, orders, buffers, daemons.",
    no_args_is_help=True,
)
division_app = typer.Typer(help="The division table (P7).", no_args_is_help=True)
plan_app = typer.Typer(help="Provisioning plans per product and order type.", no_args_is_help=True)
order_app = typer.Typer(help="Orders.", no_args_is_help=True)
buffer_app = typer.Typer(help="A division's backup buffer (P8, P9, P10).", no_args_is_help=True)
provisioning_app.add_typer(division_app, name="division")
provisioning_app.add_typer(plan_app, name="plan")
provisioning_app.add_typer(order_app, name="order")
provisioning_app.add_typer(buffer_app, name="buffer")

ActorOpt = Annotated[str, typer.Option("--actor", envvar="USER", help="Who acts (audited).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON output.")]


def _with(action: Callable[[Runtime], Awaitable[T]]) -> T:
    async def go() -> T:
        async with running(actor="cli", pool_max=8) as runtime:
            return await action(runtime)

    return asyncio.run(go())


def _settings() -> ProvisioningSettings:
    return config.load(ProvisioningSettings)


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # SQL text


def _division_values(
    server_type: str | None,
    url: str | None,
    ip: str | None,
    port: int | None,
    name: str | None,
    password: str | None,
    timeout_ms: int | None,
    used: bool | None,
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "server_type": server_type,
        "server_url": url,
        "server_ip": ip,
        "server_port": port,
        "server_name": name,
        "timeout_ms": timeout_ms,
        "server_used": used,
    }
    values = {k: v for k, v in values.items() if v is not None}
    if password is not None:
        values["credentials"] = {"password": password}
    return values


TypeOpt = Annotated[str | None, typer.Option("--type", help="SERVER_TYPE: sql|memstore|soap|rest")]
UrlOpt = Annotated[
    str | None, typer.Option("--url", help="SERVER_URL (SQLAlchemy URL, redis://, WSDL, base URL)")
]
IpOpt = Annotated[str | None, typer.Option("--ip", help="SERVER_IP")]
PortOpt = Annotated[int | None, typer.Option("--port", help="SERVER_PORT")]
NameOpt = Annotated[str | None, typer.Option("--name", help="SERVER_NAME")]
PasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--password", envvar="BOSSA_DIVISION_PASSWORD", help="Kept out of logs and listings."
    ),
]
TimeoutOpt = Annotated[int | None, typer.Option("--timeout-ms", help="Call timeout.")]


@division_app.command("add")
def division_add(
    division: str,
    server_type: TypeOpt = None,
    url: UrlOpt = None,
    ip: IpOpt = None,
    port: PortOpt = None,
    name: NameOpt = None,
    password: PasswordOpt = None,
    timeout_ms: TimeoutOpt = None,
    actor: ActorOpt = "operator",
) -> None:
    """Add a division."""
    values = _division_values(server_type, url, ip, port, name, password, timeout_ms, None)
    _with(lambda rt: catalogue.add_division(rt.pool, division, values, actor=actor))
    out.print(f"division {division} added")


@division_app.command("set")
def division_set(
    division: str,
    server_type: TypeOpt = None,
    url: UrlOpt = None,
    ip: IpOpt = None,
    port: PortOpt = None,
    name: NameOpt = None,
    password: PasswordOpt = None,
    timeout_ms: TimeoutOpt = None,
    used: Annotated[bool | None, typer.Option("--used/--unused", help="SERVER_USED")] = None,
    actor: ActorOpt = "operator",
) -> None:
    """Change a division (SERVER_USED off: orders buffer its commands, nothing is sent)."""
    values = _division_values(server_type, url, ip, port, name, password, timeout_ms, used)
    _with(lambda rt: catalogue.update_division(rt.pool, division, values, actor=actor))
    out.print(f"division {division} updated")


@division_app.command("list")
def division_list(as_json: JsonOpt = False) -> None:
    """The division table, credentials masked."""
    rows = _with(lambda rt: catalogue.list_divisions(rt.pool))
    if as_json:
        print_json(rows)
        return
    table(
        rows,
        [
            "division",
            "server_type",
            "server_url",
            "server_ip",
            "server_port",
            "server_name",
            "server_used",
            "down_until",
        ],
    )


@provisioning_app.command("pause")
def pause(division: str, actor: ActorOpt = "operator") -> None:
    """Stop the division's backup daemon from sending (its buffer keeps filling)."""
    _with(lambda rt: rt.journal.set_policy(lane_of(division), {"paused": True}, actor=actor))
    out.print(f"division {division} paused")


@provisioning_app.command("resume")
def resume(division: str, actor: ActorOpt = "operator") -> None:
    """Let the division's backup daemon send again."""
    _with(lambda rt: rt.journal.set_policy(lane_of(division), {"paused": False}, actor=actor))
    out.print(f"division {division} resumed")


@plan_app.command("add")
def plan_add(
    product: str,
    intf_code: str,
    division: str,
    command: Annotated[str, typer.Argument(help="SQL text, or the template as JSON")],
    position: Annotated[int, typer.Option(help="Order of the division in the plan.")] = 0,
    actor: ActorOpt = "operator",
) -> None:
    """Add (or replace) a division's command in a product's plan."""
    template = _json_or_text(command)
    _with(
        lambda rt: catalogue.add_plan_command(
            rt.pool, product, intf_code, division, template, position=position, actor=actor
        )
    )
    out.print(f"plan {product}/{intf_code}: {division} set")


@plan_app.command("list")
def plan_list(as_json: JsonOpt = False) -> None:
    """Every plan command."""

    async def rows(rt: Runtime) -> list[dict[str, Any]]:
        async with rt.pool.connection() as conn:
            return await (await conn.execute(QUERIES["plans"])).fetchall()

    found = _with(rows)
    if as_json:
        print_json(found)
        return
    for row in found:
        row["command"] = catalogue.describe(row["command"])[:70]
    table(found, ["product_code", "intf_code", "order_type", "position", "division", "command"])


@order_app.command("submit")
def order_submit(
    product: str,
    sa_id: str,
    intf_code: str,
    cust_id: Annotated[str | None, typer.Option(help="CUST_ID")] = None,
    wo_no: Annotated[str | None, typer.Option(help="WO_NO (generated if absent)")] = None,
    bind: Annotated[list[str] | None, typer.Option(help="NAME=VALUE bind data")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Replays return the first result.")
    ] = None,
) -> None:
    """Submit an order and provision it now (buffering what cannot be delivered)."""
    binds: dict[str, Any] = {}
    for item in bind or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"{item!r} must look like NAME=VALUE", field="--bind")
        binds[name] = value
    request = OrderRequest.parse(
        {
            "product": product,
            "sa_id": sa_id,
            "intf_code": intf_code,
            "cust_id": cust_id,
            "wo_no": wo_no,
            "bind_data": binds,
        }
    )

    async def go(rt: Runtime) -> dict[str, Any]:
        deliverer = Deliverer(rt.pool, _settings())
        try:
            return await submit(
                rt.journal,
                deliverer,
                request,
                channel="cli",
                idempotency_key=idempotency_key,
                settings=_settings(),
            )
        finally:
            await deliverer.close()

    print_json(_with(go))


@order_app.command("show")
def order_show(wo_no: str) -> None:
    """One order with where each division's command went."""

    async def go(rt: Runtime) -> dict[str, Any] | None:
        async with rt.pool.connection() as conn:
            return await (
                await conn.execute(QUERIES["order_by_wo_no"], {"wo_no": wo_no})
            ).fetchone()

    row = _with(go)
    if row is None:
        raise InvalidInput(f"no work order {wo_no}", field="wo_no")
    print_json(row)


@buffer_app.command("list")
def buffer_list(
    division: str,
    state: Annotated[
        str | None, typer.Option(help="waiting|ready|taken|parked|done|discarded")
    ] = None,
    older_than: Annotated[float | None, typer.Option(help="Seconds.")] = None,
    limit: int = 50,
    as_json: JsonOpt = False,
) -> None:
    """A division's buffer with the seed's columns, oldest first."""

    async def go(rt: Runtime) -> list[dict[str, Any]]:
        async with rt.pool.connection() as conn:
            return await (
                await conn.execute(
                    QUERIES["buffer"],
                    {
                        "lane": lane_of(division),
                        "state": state,
                        "older_than_s": older_than,
                        "limit": limit,
                    },
                )
            ).fetchall()

    rows = _with(go)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        row["command"] = catalogue.describe(row["command"])[:40]
        row["bind_data"] = json.dumps(row["bind_data"], ensure_ascii=False)[:40]
    table(
        rows,
        [
            "entry_id",
            "state",
            "division",
            "startdate",
            "enddate",
            "sa_id",
            "wo_no",
            "intf_code",
            "command",
            "bind_data",
            "errcode",
            "errmsg",
            "errdate",
        ],
    )


@buffer_app.command("show")
def buffer_show(entry_id: int) -> None:
    """One buffered command with its error history and audit."""
    print_json(_with(lambda rt: journal_ops.show(rt.pool, entry_id)))


@buffer_app.command("retry")
def buffer_retry(
    entry_id: int,
    actor: ActorOpt = "operator",
    reason: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Send a parked or backing-off command again now."""
    state = _with(lambda rt: journal_ops.retry(rt.journal, entry_id, actor=actor, reason=reason))
    out.print(f"entry {entry_id} is {state}")


@buffer_app.command("edit-binds")
def buffer_edit_binds(
    entry_id: int,
    bind: Annotated[list[str], typer.Option(help="NAME=VALUE to change")],
    actor: ActorOpt = "operator",
    reason: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Change a buffered command's bind data (to fix what made it fail)."""

    async def go(rt: Runtime) -> None:
        entry = await journal_ops.show(rt.pool, entry_id)
        payload = dict(entry["payload"])
        binds = dict(payload.get("bind_data", {}))
        for item in bind:
            name, sep, value = item.partition("=")
            if not sep or name not in binds:
                known = ", ".join(sorted(binds)) or "none"
                raise InvalidInput(
                    f"{item!r} must be NAME=VALUE for a bind the command has ({known})",
                    field="--bind",
                )
            binds[name] = value
        payload["bind_data"] = binds
        await journal_ops.edit(rt.journal, entry_id, payload, actor=actor, reason=reason)

    _with(go)
    out.print(f"entry {entry_id} bind data changed")


@buffer_app.command("park")
def buffer_park(
    entry_id: int,
    actor: ActorOpt = "operator",
    reason: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Hold a command (its contract's later commands wait too)."""
    _with(lambda rt: journal_ops.park(rt.journal, entry_id, actor=actor, reason=reason))
    out.print(f"entry {entry_id} parked")


@buffer_app.command("discard")
def buffer_discard(
    entry_id: int, reason: Annotated[str, typer.Option()], actor: ActorOpt = "operator"
) -> None:
    """Give up on a command; the contract's next command goes on."""
    _with(lambda rt: journal_ops.discard(rt.journal, entry_id, actor=actor, reason=reason))
    out.print(f"entry {entry_id} discarded")


@provisioning_app.command("log")
def log_cmd(
    sa_id: Annotated[str | None, typer.Option(help="SA_ID")] = None,
    wo_no: Annotated[str | None, typer.Option(help="WO_NO")] = None,
    limit: int = 100,
    as_json: JsonOpt = False,
) -> None:
    """P11: successful provisioning, per contract or work order."""

    async def go(rt: Runtime) -> list[dict[str, Any]]:
        async with rt.pool.connection() as conn:
            return await (
                await conn.execute(
                    QUERIES["log_for"], {"sa_id": sa_id, "wo_no": wo_no, "limit": limit}
                )
            ).fetchall()

    rows = _with(go)
    if as_json:
        print_json(rows)
        return
    table(rows, ["delivered_at", "sa_id", "wo_no", "intf_code", "division", "mode", "attempts"])


@provisioning_app.command("order-daemon")
def order_daemon(
    product: Annotated[str, typer.Option(help="The product whose receive table to fetch.")],
    once: Annotated[bool, typer.Option(help="One pass, then exit.")] = False,
) -> None:
    """Fetch a product's receive table and provision its orders (several instances are safe)."""

    async def go(rt: Runtime) -> None:
        deliverer = Deliverer(rt.pool, _settings())
        daemon = OrderDaemon(rt.journal, deliverer, product, _settings())
        loop = asyncio.get_running_loop()
        import signal

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, daemon.stop)
        try:
            await (daemon.run_once() if once else daemon.run())
        finally:
            await deliverer.close()
        out.print(f"{product}: {daemon.processed} orders processed, {daemon.rejected} rejected")

    _with(go)


@provisioning_app.command("backup-daemon")
def backup_daemon(
    division: Annotated[str, typer.Option(help="The division (DIVISION) whose buffer to send.")],
    once: Annotated[bool, typer.Option(help="Send what is waiting, then exit.")] = False,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, help="Batches in hand at once [default: BOSSA_PROVISIONING_BACKUP_CONCURRENCY]"
        ),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option(min=1, help="Commands per batch [default: BOSSA_PROVISIONING_BACKUP_BATCH]"),
    ] = None,
) -> None:
    """Deliver a division's buffer oldest first, per contract in order (P6)."""

    async def go(rt: Runtime) -> None:
        deliverer = Deliverer(rt.pool, _settings())
        daemon = BackupDaemon(
            rt.journal,
            deliverer,
            division,
            listen_url=rt.url,
            concurrency=concurrency,
            batch_size=batch,
        )
        try:
            await daemon.run(once=once, install_signal_handlers=True)
        finally:
            await deliverer.close()
        stats = daemon.worker.stats
        out.print(
            f"{division}: {stats.acked} delivered, {stats.failed} failed, {stats.parked} parked"
        )

    _with(go)
