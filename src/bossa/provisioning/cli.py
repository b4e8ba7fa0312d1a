"""`bossa provisioning ...`: divisions, plans, orders, buffers, daemons, the log.

Each command parses its options, calls one service function against the runtime (whose
deliverer and settings it uses) and renders the answer. The CLI holds the database's
credentials and acts as an admin; its changes are audited as the operating-system user
(or BOSSA_ACCESS_CLI_ACTOR), never as a name typed on the command line.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated, Any

import typer

from bossa.access import cli_principal
from bossa.clitools import JsonOpt, ReasonOpt, json_arg, with_runtime
from bossa.errors import InvalidInput
from bossa.journal import BulkAction
from bossa.journal.models import MAX_BULK
from bossa.provisioning import service
from bossa.provisioning.models import BufferRow, OrderRequest, describe
from bossa.provisioning.settings import ProvisioningSettings
from bossa.runtime import Runtime
from bossa.terminal import out, print_json, table

__all__ = ["provisioning_app"]

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
bulk_app = typer.Typer(
    help="Retry, park or discard many buffered commands at once, by ERRCODE, age and "
    "contract (--dry-run counts them).",
    no_args_is_help=True,
)
buffer_app.add_typer(bulk_app, name="bulk")

# A daemon holds a connection per batch in hand, plus its listener and direct calls.
_DAEMON_POOL = 8


def _actor() -> str:
    """Who acts, for the audit: the CLI's principal."""
    return cli_principal().actor


def _binds(items: list[str], option: str = "--bind") -> dict[str, str]:
    binds: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InvalidInput(f"{item!r} must look like NAME=VALUE", field=option)
        binds[name] = value
    return binds


def _template(text: str) -> Any:
    """A plan command as typed: JSON for memstore, SOAP and REST, else SQL text."""
    try:
        return json_arg(text, "command")
    except InvalidInput:
        return text


def _division_values(
    server_type: str | None,
    url: str | None,
    ip: str | None,
    port: int | None,
    name: str | None,
    user: str | None,
    password: str | None,
    timeout_ms: int | None,
    used: bool | None,
) -> dict[str, Any]:
    credentials = {k: v for k, v in (("username", user), ("password", password)) if v is not None}
    values: dict[str, Any] = {
        "server_type": server_type,
        "server_url": url,
        "server_ip": ip,
        "server_port": port,
        "server_name": name,
        "timeout_ms": timeout_ms,
        "server_used": used,
        "credentials": credentials or None,
    }
    return {k: v for k, v in values.items() if v is not None}


TypeOpt = Annotated[str | None, typer.Option("--type", help="SERVER_TYPE: sql|memstore|soap|rest")]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="SERVER_URL: postgresql[+psycopg]://, mysql+pymysql://, mariadb+pymysql:// (sql), "
        "redis[s]:// (memstore), http[s]:// (soap WSDL, rest base URL); no password in it",
    ),
]
IpOpt = Annotated[str | None, typer.Option("--ip", help="SERVER_IP")]
PortOpt = Annotated[int | None, typer.Option("--port", help="SERVER_PORT")]
NameOpt = Annotated[str | None, typer.Option("--name", help="SERVER_NAME")]
UserOpt = Annotated[
    str | None, typer.Option("--user", help="The user bossa logs in as (credentials.username).")
]
PasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--password",
        envvar="BOSSA_DIVISION_PASSWORD",
        help="credentials.password; kept out of logs and listings (shown as ***).",
    ),
]
TimeoutOpt = Annotated[
    int | None, typer.Option("--timeout-ms", help="Call timeout, 10 to 600000 ms.")
]
DIVISION_COLUMNS = [
    "division",
    "server_type",
    "server_url",
    "server_ip",
    "server_port",
    "server_name",
    "server_used",
    "down_until",
]


@division_app.command("add")
def division_add(
    division: str,
    server_type: TypeOpt = None,
    url: UrlOpt = None,
    ip: IpOpt = None,
    port: PortOpt = None,
    name: NameOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
    timeout_ms: TimeoutOpt = None,
) -> None:
    """Add a division (its type and URL are required)."""
    values = _division_values(server_type, url, ip, port, name, user, password, timeout_ms, None)
    with_runtime(lambda rt: service.add_division(rt.pool, division, values, actor=_actor()))
    out.print(f"division {division} added")


@division_app.command("set")
def division_set(
    division: str,
    server_type: TypeOpt = None,
    url: UrlOpt = None,
    ip: IpOpt = None,
    port: PortOpt = None,
    name: NameOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
    timeout_ms: TimeoutOpt = None,
    used: Annotated[bool | None, typer.Option("--used/--unused", help="SERVER_USED")] = None,
) -> None:
    """Change a division (SERVER_USED off: orders buffer its commands, nothing is sent)."""
    values = _division_values(server_type, url, ip, port, name, user, password, timeout_ms, used)
    with_runtime(lambda rt: service.update_division(rt.pool, division, values, actor=_actor()))
    out.print(f"division {division} updated")


@division_app.command("list")
def division_list(as_json: JsonOpt = False) -> None:
    """The division table, credentials masked."""
    rows = [
        d.model_dump(mode="json") for d in with_runtime(lambda rt: service.list_divisions(rt.pool))
    ]
    if as_json:
        print_json(rows)
        return
    table(rows, DIVISION_COLUMNS)


@division_app.command("show")
def division_show(division: str) -> None:
    """One division with its known state, credentials masked."""
    found = with_runtime(lambda rt: service.show_division(rt.pool, division))
    print_json(found.model_dump(mode="json"))


@provisioning_app.command("pause")
def pause(division: str) -> None:
    """Stop the division's backup daemon from sending (its buffer keeps filling)."""
    with_runtime(lambda rt: service.pause(rt.journal, division, actor=_actor()))
    out.print(f"division {division} paused")


@provisioning_app.command("resume")
def resume(division: str) -> None:
    """Let the division's backup daemon send again."""
    with_runtime(lambda rt: service.resume(rt.journal, division, actor=_actor()))
    out.print(f"division {division} resumed")


@plan_app.command("add")
def plan_add(
    product: str,
    intf_code: str,
    division: str,
    command: Annotated[str, typer.Argument(help="SQL text, or the template as JSON")],
    position: Annotated[
        int, typer.Option(help="Order of the division in the plan, 0 to 1000.")
    ] = 0,
) -> None:
    """Add (or change) a division's command in a product's plan. A new command makes a
    new version; commands already buffered keep the version they were accepted under."""
    template = _template(command)
    plan = with_runtime(
        lambda rt: service.add_plan_command(
            rt.pool, product, intf_code, division, template, position=position, actor=_actor()
        )
    )
    out.print(f"plan {product}/{intf_code}: {division} set (version {plan.version})")


@plan_app.command("list")
def plan_list(as_json: JsonOpt = False) -> None:
    """Every plan command."""
    rows = [p.model_dump(mode="json") for p in with_runtime(lambda rt: service.list_plans(rt.pool))]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        row["command"] = describe(row["command"])[:70]
    table(
        rows,
        ["product_code", "intf_code", "order_type", "position", "division", "version", "command"],
    )


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
    request = OrderRequest.parse(
        {
            "product": product,
            "sa_id": sa_id,
            "intf_code": intf_code,
            "cust_id": cust_id,
            "wo_no": wo_no,
            "bind_data": _binds(bind or []),
        }
    )

    async def go(rt: Runtime) -> dict[str, Any]:
        return await service.submit(
            rt.journal,
            rt.deliverer,
            request,
            channel="cli",
            idempotency_key=idempotency_key,
            settings=rt.settings(ProvisioningSettings),
            actor=_actor(),
        )

    print_json(with_runtime(go))


@order_app.command("show")
def order_show(wo_no: str) -> None:
    """One order with where each division's command went."""
    print_json(with_runtime(lambda rt: service.order(rt.pool, wo_no)).model_dump(mode="json"))


ErrcodeOpt = Annotated[
    str | None, typer.Option("--errcode", help="ERRCODE of the latest failure (23505, CONNECT...)")
]
SaIdOpt = Annotated[str | None, typer.Option("--sa-id", help="SA_ID: one contract's commands")]
OlderOpt = Annotated[
    float | None, typer.Option("--older-than", help="Buffered more than this many seconds ago.")
]


@buffer_app.command("list")
def buffer_list(
    division: str,
    state: Annotated[
        str | None, typer.Option(help="waiting|ready|taken|parked|done|discarded")
    ] = None,
    older_than: OlderOpt = None,
    errcode: ErrcodeOpt = None,
    sa_id: SaIdOpt = None,
    limit: int = 50,
    as_json: JsonOpt = False,
) -> None:
    """A division's buffer with every column of the seed's buffers (P8, P9), oldest
    first (as the API shows it)."""
    found = with_runtime(
        lambda rt: service.buffer(
            rt.pool,
            division,
            state=state,
            older_than_s=older_than,
            errcode=errcode,
            sa_id=sa_id,
            limit=limit,
        )
    )
    rows = [row.model_dump(mode="json") for row in found]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        row["command"] = describe(row["command"])[:40]
        row["bind_data"] = describe(row["bind_data"])[:40]
    table(rows, list(BufferRow.model_fields))


@buffer_app.command("show")
def buffer_show(entry_id: int) -> None:
    """One buffered command with its error history and audit."""
    found = with_runtime(lambda rt: service.buffered_command(rt.journal, entry_id))
    print_json(found.model_dump(mode="json"))


@buffer_app.command("retry")
def buffer_retry(entry_id: int, reason: ReasonOpt = None) -> None:
    """Send a parked or backing-off command again now."""
    state = with_runtime(
        lambda rt: service.retry(rt.journal, entry_id, actor=_actor(), reason=reason)
    )
    out.print(f"entry {entry_id} is {state}")


@buffer_app.command("edit-binds")
def buffer_edit_binds(
    entry_id: int,
    bind: Annotated[list[str], typer.Option(help="NAME=VALUE to change")],
    reason: ReasonOpt = None,
    retry: Annotated[
        bool, typer.Option("--retry", help="Also send it again now (parked stays parked else).")
    ] = False,
) -> None:
    """Change a buffered command's bind data (to fix what made it fail); its command is
    its plan version's and cannot be edited. A parked command stays parked unless
    --retry is given."""
    changes = _binds(bind)
    edited = with_runtime(
        lambda rt: service.edit_binds(
            rt.journal, entry_id, changes, actor=_actor(), reason=reason, retry=retry
        )
    )
    out.print(f"entry {entry_id} bind data changed; it is {edited.state}")
    if edited.state == "parked":
        out.print(f"still parked: send it with `bossa provisioning buffer retry {entry_id}`")
        out.print("(or edit with --retry)")


@buffer_app.command("park")
def buffer_park(entry_id: int, reason: ReasonOpt = None) -> None:
    """Hold a command (its contract's later commands wait too)."""
    with_runtime(lambda rt: service.park(rt.journal, entry_id, actor=_actor(), reason=reason))
    out.print(f"entry {entry_id} parked")


@buffer_app.command("discard")
def buffer_discard(entry_id: int, reason: Annotated[str, typer.Option()]) -> None:
    """Give up on a command; the contract's next command goes on."""
    with_runtime(lambda rt: service.discard(rt.journal, entry_id, actor=_actor(), reason=reason))
    out.print(f"entry {entry_id} discarded")


def _bulk(
    action: BulkAction,
    division: str,
    errcode: str | None,
    older_than: float | None,
    sa_id: str | None,
    limit: int,
    dry_run: bool,
    reason: str | None,
    as_json: bool,
) -> None:
    outcome = with_runtime(
        lambda rt: service.bulk(
            rt.journal,
            action,
            division,
            errcode=errcode,
            older_than_s=older_than,
            sa_id=sa_id,
            limit=limit,
            dry_run=dry_run,
            actor=_actor(),
            reason=reason,
        )
    )
    if as_json:
        print_json(outcome.model_dump(mode="json"))
    elif dry_run:
        out.print(f"dry run: {outcome.matched} commands of {division} would {action.value}")
    else:
        out.print(f"{division}: {outcome.changed} commands {action.to_state.value}")
        if outcome.matched > outcome.changed:
            out.print(f"{outcome.matched - outcome.changed} more match: run it again")


BulkLimitOpt = Annotated[
    int, typer.Option("--limit", min=1, max=MAX_BULK, help="At most this many, oldest first.")
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Count them; change nothing.")]
BulkReasonOpt = Annotated[
    str | None, typer.Option("--reason", help="Why (required unless --dry-run; audited).")
]


def _bulk_command(action: BulkAction, summary: str) -> None:
    """One `bulk` subcommand per action: the same selection and output, another verb."""

    @bulk_app.command(action.value, help=summary)
    def command(
        division: str,
        errcode: ErrcodeOpt = None,
        older_than: OlderOpt = None,
        sa_id: SaIdOpt = None,
        limit: BulkLimitOpt = MAX_BULK,
        dry_run: DryRunOpt = False,
        reason: BulkReasonOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        _bulk(action, division, errcode, older_than, sa_id, limit, dry_run, reason, as_json)


_bulk_command(
    BulkAction.RETRY,
    "Send again now every parked or backing-off command selected, with fresh attempts.",
)
_bulk_command(
    BulkAction.PARK, "Hold every waiting or ready command selected (their contracts wait too)."
)
_bulk_command(
    BulkAction.DISCARD,
    "Give up on every command selected (not in flight); each contract's next goes on.",
)


@provisioning_app.command("log")
def log_cmd(
    sa_id: Annotated[str | None, typer.Option(help="SA_ID")] = None,
    wo_no: Annotated[str | None, typer.Option(help="WO_NO")] = None,
    limit: int = 100,
    as_json: JsonOpt = False,
) -> None:
    """P11: successful provisioning, per contract or work order."""
    found = with_runtime(
        lambda rt: service.delivery_log(rt.pool, sa_id=sa_id, wo_no=wo_no, limit=limit)
    )
    rows = [row.model_dump(mode="json") for row in found]
    if as_json:
        print_json(rows)
        return
    table(rows, ["delivered_at", "sa_id", "wo_no", "intf_code", "division", "mode", "attempts"])


def _stop_on_signals(stop: Any) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)


@provisioning_app.command("order-daemon")
def order_daemon(
    product: Annotated[str, typer.Option(help="The product whose receive table to fetch.")],
    once: Annotated[bool, typer.Option(help="One pass, then exit.")] = False,
) -> None:
    """Fetch a product's receive table and provision its orders (several instances are safe)."""

    async def go(rt: Runtime) -> None:
        daemon = await service.order_daemon(
            rt.journal, rt.deliverer, product, rt.settings(ProvisioningSettings)
        )
        _stop_on_signals(daemon.stop)
        await (daemon.run_once() if once else daemon.run())
        out.print(f"{product}: {daemon.processed} orders processed, {daemon.rejected} rejected")

    with_runtime(go, pool_max=_DAEMON_POOL)


@provisioning_app.command("backup-daemon")
def backup_daemon(
    division: Annotated[str, typer.Option(help="The division (DIVISION) whose buffer to send.")],
    once: Annotated[bool, typer.Option(help="Send what is waiting, then exit.")] = False,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Batches in hand at once, 1-64 [default: BOSSA_PROVISIONING_BACKUP_CONCURRENCY]",
        ),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=10_000,
            help="Commands per batch, 1-10000 [default: BOSSA_PROVISIONING_BACKUP_BATCH]",
        ),
    ] = None,
) -> None:
    """Deliver a division's buffer oldest first, per contract in order (P6)."""

    async def go(rt: Runtime) -> None:
        daemon = await service.backup_daemon(
            rt.journal,
            rt.deliverer,
            division,
            listen_url=rt.url,
            concurrency=concurrency,
            batch_size=batch,
        )
        await daemon.run(once=once, install_signal_handlers=True)
        stats = daemon.worker.stats
        down = f", down (probed {daemon.probes} times)" if daemon.down else ""
        out.print(
            f"{division}: {stats.acked} delivered, {stats.failed} failed, {stats.parked} parked"
            + down
        )

    with_runtime(go, pool_max=_DAEMON_POOL)
