"""`bossa journal ...`: enqueue, look, act on entries, tune lanes, run workers.

Each command parses its options, calls one function of `service` and renders the
result with `bossa.terminal`. Changes are audited as the CLI's principal (the OS user,
or BOSSA_ACCESS_CLI_ACTOR), never a name typed on the command line.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from bossa.access import cli_principal
from bossa.clitools import JsonOpt, ReasonOpt, json_arg, with_runtime
from bossa.errors import InvalidInput
from bossa.journal import service
from bossa.journal.models import MAX_ID, MAX_PAGE, EntryError, EntryFilter, NewEntry
from bossa.terminal import out, print_json, table

__all__ = ["journal_app"]

journal_app = typer.Typer(help="The durable queue under every system.", no_args_is_help=True)


PageOpt = Annotated[int, typer.Option(min=1, max=MAX_PAGE, help="At most this many.")]


def _actor() -> str:
    return cli_principal().actor


def _error_cell(last: EntryError | None) -> str:
    return f"{last.code}: {last.message}"[:60] if last else ""


@journal_app.command("enqueue")
def enqueue(
    lane: Annotated[str, typer.Argument(help="Lane (who consumes); declared if new.")],
    kind: Annotated[str, typer.Argument(help="Kind (which handler).")],
    payload: Annotated[str, typer.Argument(help="Payload as JSON.")],
    key: Annotated[str | None, typer.Option(help="Ordering key (e.g. a contract's SA_ID).")] = None,
    dedup_key: Annotated[str | None, typer.Option(help="Idempotency key.")] = None,
) -> None:
    """Enqueue one entry on a lane of your own (not on another module's lane)."""
    entry = NewEntry(lane, kind, json_arg(payload, "payload"), key=key, dedup_key=dedup_key)
    actor = _actor()
    result = with_runtime(lambda rt: service.enqueue(rt.journal, entry, actor=actor))
    out.print(f"entry {result.id} {'enqueued' if result.created else 'already pending (dedup)'}")


@journal_app.command("list")
def list_entries(
    lane: Annotated[str | None, typer.Option(help="Only this lane.")] = None,
    state: Annotated[
        str | None, typer.Option(help="waiting|ready|taken|parked|done|discarded")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Only this key.")] = None,
    older_than: Annotated[
        float | None, typer.Option(min=0, help="Only entries older (seconds).")
    ] = None,
    error_code: Annotated[str | None, typer.Option(help="Only with this last error code.")] = None,
    after_id: Annotated[
        int, typer.Option(min=0, max=MAX_ID, help="Page: entries after this id.")
    ] = 0,
    limit: PageOpt = 50,
    as_json: JsonOpt = False,
) -> None:
    """List entries, oldest first."""
    where = EntryFilter(lane, state, key, older_than, error_code, after_id, limit)
    rows = with_runtime(lambda rt: service.list_entries(rt.journal, where))
    if as_json:
        print_json([row.model_dump(mode="json") for row in rows])
        return
    table(
        [{**row.model_dump(), "error": _error_cell(row.last_error)} for row in rows],
        ["id", "lane", "key", "kind", "state", "attempts", "created_at", "error"],
    )


@journal_app.command("show")
def show(entry_id: int, as_json: JsonOpt = False) -> None:
    """One entry with its error history and audit."""
    entry = with_runtime(lambda rt: service.show(rt.journal, entry_id))
    if as_json:
        print_json(entry.model_dump(mode="json"))
    else:
        out.print(entry.model_dump())


@journal_app.command("retry")
def retry(entry_id: int, reason: ReasonOpt = None) -> None:
    """Make a parked or backing-off entry due now, with fresh attempts."""
    actor = _actor()
    state = with_runtime(lambda rt: service.retry(rt.journal, entry_id, actor=actor, reason=reason))
    out.print(f"entry {entry_id} is {state}")


@journal_app.command("park")
def park(entry_id: int, reason: ReasonOpt = None) -> None:
    """Park an entry; it keeps blocking its key."""
    actor = _actor()
    with_runtime(lambda rt: service.park(rt.journal, entry_id, actor=actor, reason=reason))
    out.print(f"entry {entry_id} parked")


@journal_app.command("discard")
def discard(
    entry_id: int,
    reason: Annotated[str, typer.Option("--reason", help="Why (required, audited).")],
) -> None:
    """Give up on an entry; its key moves on."""
    actor = _actor()
    with_runtime(lambda rt: service.discard(rt.journal, entry_id, actor=actor, reason=reason))
    out.print(f"entry {entry_id} discarded")


@journal_app.command("edit")
def edit(
    entry_id: int,
    payload: Annotated[str, typer.Argument(help="The new payload as JSON.")],
    reason: ReasonOpt = None,
) -> None:
    """Replace an entry's payload (not while it is in flight; not on another module's lane)."""
    actor = _actor()
    value = json_arg(payload, "payload")
    with_runtime(lambda rt: service.edit(rt.journal, entry_id, value, actor=actor, reason=reason))
    out.print(f"entry {entry_id} edited")


@journal_app.command("blocked")
def blocked(
    lane: Annotated[str | None, typer.Option(help="Only this lane.")] = None,
    limit: PageOpt = 100,
    as_json: JsonOpt = False,
) -> None:
    """Keys whose head is parked or failing."""
    rows = with_runtime(lambda rt: service.blocked_keys(rt.journal, lane, limit))
    if as_json:
        print_json([row.model_dump(mode="json") for row in rows])
        return
    table(
        [{**row.model_dump(), "error": _error_cell(row.last_error)} for row in rows],
        ["lane", "key", "unfinished", "head_id", "state", "attempts", "error"],
    )


@journal_app.command("stats")
def stats(as_json: JsonOpt = False) -> None:
    """Entries by lane and state, oldest age, recent throughput."""
    report = with_runtime(lambda rt: service.counts(rt.journal))
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    table(
        [row.model_dump() for row in report.by_state],
        ["lane", "state", "entries", "oldest_age_s"],
    )
    for lane, rate in report.throughput_per_s.items():
        out.print(f"{lane}: {rate:.1f} finished/s over the last minute")


@journal_app.command("lanes")
def lanes(
    after: Annotated[str, typer.Option(help="Page: lanes named after this one.")] = "",
    limit: PageOpt = MAX_PAGE,
    as_json: JsonOpt = False,
) -> None:
    """Declared lanes by name, with the module that owns each and its stored overrides."""
    rows = with_runtime(lambda rt: service.lanes(rt.journal, after=after, limit=limit))
    if as_json:
        print_json([row.model_dump(mode="json") for row in rows])
        return
    table(
        [{**row.model_dump(), "settings": json.dumps(row.settings)} for row in rows],
        ["lane", "owner", "settings", "created_at", "created_by", "updated_by"],
    )


def _settings(items: list[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for item in items:
        setting, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"{item!r} must look like NAME=VALUE", field="--set")
        try:
            changes[setting.strip()] = json.loads(value)
        except json.JSONDecodeError:
            changes[setting.strip()] = value
        except RecursionError:
            raise InvalidInput("nests too deep to be a setting", field="--set") from None
    return changes


@journal_app.command("lane")
def lane(
    name: str,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="NAME=VALUE, e.g. max_attempts=5.")
    ] = None,
) -> None:
    """Show a declared lane's policy, or change it with --set (each setting within its
    range: see docs/journal.md)."""
    changes = _settings(set_ or [])
    if changes:
        actor = _actor()
        policy = with_runtime(
            lambda rt: service.set_lane_policy(rt.journal, name, changes, actor=actor)
        )
    else:
        policy = with_runtime(lambda rt: service.lane_policy(rt.journal, name))
    print_json(policy.model_dump())


@journal_app.command("purge")
def purge(lane: Annotated[str | None, typer.Option(help="Only this lane.")] = None) -> None:
    """Delete finished entries past their lane's retention."""
    deleted = with_runtime(lambda rt: service.purge(rt.journal, lane))
    out.print(f"{deleted} finished entries purged")


@journal_app.command("work")
def work(
    lane: Annotated[str, typer.Option(help="The lane to consume (a declared one).")],
    handler: Annotated[
        str | None, typer.Option(help="module:function run for every kind (an integrator's own).")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=256, help="Concurrent takers.")
    ] = None,
    batch: Annotated[int | None, typer.Option(min=1, max=10_000, help="Entries per take.")] = None,
    once: Annotated[
        bool, typer.Option(help="Stop when nothing is due (an operator's pass).")
    ] = False,
    metrics_port: Annotated[
        int | None, typer.Option(min=1, max=65_535, help="Serve Prometheus metrics here.")
    ] = None,
) -> None:
    """Run a worker on a lane until SIGTERM (or until idle with --once).

    SIGTERM or SIGINT at any moment stops it and exits 0: during start-up at once,
    afterwards once the entries in hand are finished and the rest given back. A database
    that is not there yet is waited for. Exits non-zero with one error line when the
    database cannot be reached for longer than BOSSA_JOURNAL_DATABASE_OUTAGE_S (or its
    pool is closed), for a supervisor to restart it."""
    from bossa.journal.handlers import REGISTRY, load_handler

    handlers = dict(REGISTRY)
    if handler:
        handlers["*"] = load_handler(handler)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1")

    worker = asyncio.run(
        service.serve(lane, handlers, concurrency=concurrency, batch_size=batch, until_idle=once)
    )
    if worker is None:
        out.print(f"{lane}: stopped before it started; nothing taken")
        return
    out.print(
        f"{lane}: {worker.stats.acked} done, {worker.stats.failed} failed, "
        f"{worker.stats.parked} parked, {worker.stats.released} given back"
    )
