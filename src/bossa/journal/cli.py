"""`bossa journal ...`: enqueue, look, act on entries, run workers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from bossa.errors import InvalidInput
from bossa.journal import operator
from bossa.journal.models import NewEntry
from bossa.runtime import Runtime, running
from bossa.terminal import out, print_json, table

__all__ = ["journal_app"]

T = TypeVar("T")
journal_app = typer.Typer(help="The durable queue under every system.", no_args_is_help=True)

ActorOpt = Annotated[str, typer.Option("--actor", envvar="USER", help="Who acts (audited).")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (audited).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON output.")]


def _with(action: Callable[[Runtime], Awaitable[T]]) -> T:
    async def go() -> T:
        async with running(actor="cli", pool_max=4) as runtime:
            return await action(runtime)

    return asyncio.run(go())


def _json_arg(text: str, field: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"is not JSON: {exc.msg} at character {exc.pos}", field=field) from exc


@journal_app.command("enqueue")
def enqueue(
    lane: Annotated[str, typer.Argument(help="Lane (who consumes).")],
    kind: Annotated[str, typer.Argument(help="Kind (which handler).")],
    payload: Annotated[str, typer.Argument(help="Payload as JSON.")],
    key: Annotated[str | None, typer.Option(help="Ordering key (e.g. a contract's SA_ID).")] = None,
    dedup_key: Annotated[str | None, typer.Option(help="Idempotency key.")] = None,
) -> None:
    """Enqueue one entry."""
    entry = NewEntry(lane, kind, _json_arg(payload, "payload"), key=key, dedup_key=dedup_key)
    result = _with(lambda rt: rt.journal.enqueue_one(entry))
    out.print(f"entry {result.id} {'enqueued' if result.created else 'already pending (dedup)'}")


@journal_app.command("list")
def list_entries(
    lane: Annotated[str | None, typer.Option(help="Only this lane.")] = None,
    state: Annotated[
        str | None, typer.Option(help="waiting|ready|taken|parked|done|discarded")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Only this key.")] = None,
    older_than: Annotated[float | None, typer.Option(help="Only entries older (seconds).")] = None,
    error_code: Annotated[str | None, typer.Option(help="Only with this last error code.")] = None,
    after_id: Annotated[int, typer.Option(help="Page: entries after this id.")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List entries, oldest first."""
    where = operator.EntryFilter(lane, state, key, older_than, error_code, after_id, limit)
    rows = _with(lambda rt: operator.list_entries(rt.pool, where))
    if as_json:
        print_json(rows)
        return
    for row in rows:
        last = row["last_error"] or {}
        row["error"] = f"{last.get('code')}: {last.get('message')}"[:60] if last else ""
    table(rows, ["id", "lane", "key", "kind", "state", "attempts", "created_at", "error"])


@journal_app.command("show")
def show(entry_id: int, as_json: JsonOpt = False) -> None:
    """One entry with its error history and audit."""
    entry = _with(lambda rt: operator.show(rt.pool, entry_id))
    print_json(entry) if as_json else out.print(entry)


@journal_app.command("retry")
def retry(entry_id: int, actor: ActorOpt = "operator", reason: ReasonOpt = None) -> None:
    """Make a parked or backing-off entry due now, with fresh attempts."""
    state = _with(lambda rt: operator.retry(rt.journal, entry_id, actor=actor, reason=reason))
    out.print(f"entry {entry_id} is {state}")


@journal_app.command("park")
def park(entry_id: int, actor: ActorOpt = "operator", reason: ReasonOpt = None) -> None:
    """Park an entry; it keeps blocking its key."""
    _with(lambda rt: operator.park(rt.journal, entry_id, actor=actor, reason=reason))
    out.print(f"entry {entry_id} parked")


@journal_app.command("discard")
def discard(
    entry_id: int,
    reason: Annotated[str, typer.Option("--reason", help="Why (required, audited).")],
    actor: ActorOpt = "operator",
) -> None:
    """Give up on an entry; its key moves on."""
    _with(lambda rt: operator.discard(rt.journal, entry_id, actor=actor, reason=reason))
    out.print(f"entry {entry_id} discarded")


@journal_app.command("edit")
def edit(
    entry_id: int,
    payload: Annotated[str, typer.Argument(help="The new payload as JSON.")],
    actor: ActorOpt = "operator",
    reason: ReasonOpt = None,
) -> None:
    """Replace an entry's payload (not while it is in flight)."""
    value = _json_arg(payload, "payload")
    _with(lambda rt: operator.edit(rt.journal, entry_id, value, actor=actor, reason=reason))
    out.print(f"entry {entry_id} edited")


@journal_app.command("blocked")
def blocked(lane: Annotated[str | None, typer.Option()] = None, as_json: JsonOpt = False) -> None:
    """Keys whose head is parked or failing."""
    rows = _with(lambda rt: operator.blocked_keys(rt.pool, lane))
    if as_json:
        print_json(rows)
        return
    for row in rows:
        last = row["last_error"] or {}
        row["error"] = f"{last.get('code')}: {last.get('message')}"[:60] if last else ""
    table(rows, ["lane", "key", "unfinished", "head_id", "state", "attempts", "error"])


@journal_app.command("stats")
def stats(as_json: JsonOpt = False) -> None:
    """Entries by lane and state, oldest age, recent throughput."""
    report = _with(lambda rt: operator.counts(rt.pool))
    if as_json:
        print_json(report)
        return
    table(report["by_state"], ["lane", "state", "entries", "oldest_age_s"])
    for lane, rate in report["throughput_per_s"].items():
        out.print(f"{lane}: {rate:.1f} finished/s over the last minute")


@journal_app.command("lane")
def lane(
    name: str,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="NAME=VALUE, e.g. max_attempts=5.")
    ] = None,
    actor: ActorOpt = "operator",
) -> None:
    """Show a lane's policy, or change it with --set."""
    changes: dict[str, Any] = {}
    for item in set_ or []:
        setting, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"{item!r} must look like NAME=VALUE", field="--set")
        try:
            changes[setting.strip()] = json.loads(value)
        except json.JSONDecodeError:
            changes[setting.strip()] = value
    if changes:
        policy = _with(lambda rt: rt.journal.set_policy(name, changes, actor=actor))
    else:
        policy = _with(lambda rt: rt.journal.policy(name, fresh=True))
    print_json(policy.model_dump())


@journal_app.command("purge")
def purge(lane: Annotated[str | None, typer.Option()] = None) -> None:
    """Delete finished entries past their lane's retention."""
    deleted = _with(lambda rt: operator.purge(rt.journal, lane))
    out.print(f"{deleted} finished entries purged")


@journal_app.command("work")
def work(
    lane: Annotated[str, typer.Option(help="The lane to consume.")],
    handler: Annotated[
        str | None, typer.Option(help="module:function run for every kind (an integrator's own).")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Concurrent takers.")] = None,
    batch: Annotated[int | None, typer.Option(help="Entries per take.")] = None,
    once: Annotated[
        bool, typer.Option(help="Stop when nothing is due (an operator's pass).")
    ] = False,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics here.")] = None,
) -> None:
    """Run a worker on a lane until SIGTERM (or until idle with --once)."""
    from bossa.journal.handlers import REGISTRY, load_handler
    from bossa.journal.worker import Worker

    handlers = dict(REGISTRY)
    if handler:
        handlers["*"] = load_handler(handler)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1")

    async def go(rt: Runtime) -> None:
        worker = Worker(
            rt.journal, lane, handlers, listen_url=rt.url, concurrency=concurrency, batch_size=batch
        )
        await worker.run(install_signal_handlers=True, until_idle=once)
        out.print(
            f"{lane}: {worker.stats.acked} done, {worker.stats.failed} failed, "
            f"{worker.stats.parked} parked, {worker.stats.released} given back"
        )

    _with(go)
