"""`bossa sync ...`: the listener that keeps the rating pipeline's account data current
from business events (S6), and the queue report (S6). Each command parses its options,
calls one service function and renders the result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bossa.access import cli_principal
from bossa.clitools import JsonOpt, ReasonOpt, with_runtime
from bossa.runtime import Runtime
from bossa.sync import service
from bossa.sync.models import DEFAULT_EVENTS_YAML, LaneReport, ListenerState, PublisherState
from bossa.sync.settings import SyncSettings
from bossa.terminal import out, print_json, table

__all__ = ["sync_app"]

sync_app = typer.Typer(
    help="Business events to the rating pipeline (S, issue 14).", no_args_is_help=True
)


@sync_app.command("listen")
def listen(
    once: Annotated[
        bool, typer.Option(help="Apply what is READY, then stop (also when an event is held)")
    ] = False,
) -> None:
    """Apply business events to the pipeline's account data, in per-account order, until
    SIGTERM (a daemon: run it under a supervisor)."""

    async def go(rt: Runtime) -> None:
        stats = await service.listen(
            rt.journal,
            rt.settings(SyncSettings),
            listen_url=rt.url,
            once=once,
            install_signal_handlers=True,
        )
        out.print(
            f"{stats.acked} events applied, {stats.failed} held or given back,"
            f" {stats.released} given back unstarted"
        )

    with_runtime(go)


@sync_app.command("pipeline")
def pipeline(
    inbox: Annotated[Path, typer.Argument(help="Where CDR files (*.csv) are dropped")],
    poll: Annotated[
        float, typer.Option(min=0.1, max=3600, help="Seconds between looks at the inbox")
    ] = 2.0,
    once: Annotated[
        bool,
        typer.Option(
            help="Drain, then stop: no file waits and no event is READY (or one is held);"
            " events are taken whenever no file waits, below the minimum too"
        ),
    ] = False,
) -> None:
    """S13: rate the CDR files of INBOX and apply business events in turn, in one process,
    switching on BOSSA_SYNC_MAX_EVENTS, _MIN_EVENTS, _MAX_CDR_TIME_S, _MAX_EVENT_TIME_S and
    _EVENTS_WHEN_NO_CDRS (a daemon: run it under a supervisor, instead of `bossa sync
    listen` and `bossa rating inbox`)."""

    async def go(rt: Runtime) -> None:
        stats = await service.pipeline(
            rt.journal,
            rt.settings(SyncSettings),
            inbox,
            listen_url=rt.url,
            once=once,
            poll_s=poll,
            install_signal_handlers=True,
        )
        out.print(
            f"{stats.events} events applied, {stats.files} files rated ({stats.rated} records"
            f" rated, {stats.suspended} suspended, {stats.malformed} malformed),"
            f" {stats.recycled} recycled, {len(stats.switches)} switches"
        )

    with_runtime(go)


@sync_app.command("report")
def report(
    window: Annotated[
        float, typer.Option(min=1, max=86_400, help="Seconds the events/s figure covers")
    ] = 60.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The pipeline's queue: events by state (READY, PROCESSED, held...), the oldest
    READY event's age, events processed per second, and the held events with why."""
    found: LaneReport = with_runtime(
        lambda rt: service.report(rt.pool, rt.settings(SyncSettings), window_s=window)
    )
    if as_json:
        print_json(found.model_dump(mode="json"))
        return
    table(
        [{"state": state.value.upper(), "events": n} for state, n in found.by_state.items()],
        ["state", "events"],
        title=f"lane {found.lane}",
    )
    out.print(
        f"oldest READY: {found.oldest_ready_s:.1f} s; processed: {found.processed_per_s:.1f}"
        f" events/s over {found.window_s:g} s"
    )
    if found.publisher is not None:
        _show_publisher(found.publisher, False)
    if found.listener is not None:
        _show_listener(found.listener, False)
    if found.held:
        out.print("held (processing waits until each is retried or discarded):")
        table([h.model_dump() for h in found.held], ["entry_id", "key", "code", "message"])


def _actor() -> str:
    return cli_principal().actor


def _show_publisher(state: PublisherState, as_json: bool) -> None:
    if as_json:
        print_json(state.model_dump(mode="json"))
        return
    out.print(
        f"publisher {'connected' if state.connected else 'DISCONNECTED'} (by"
        f" {state.changed_by} at {state.changed_at:%Y-%m-%d %H:%M:%S}); outbox:"
        f" {state.outbox} events, oldest {state.oldest_outbox_s:.1f} s"
    )


def _show_listener(state: ListenerState, as_json: bool) -> None:
    if as_json:
        print_json(state.model_dump(mode="json"))
        return
    out.print(
        f"listener of instance {state.instance}: {state.state}; wanted"
        f" {'connected' if state.connected else 'disconnected'} (by {state.changed_by})"
    )


publisher_app = typer.Typer(
    help="The publisher's connection to the queues (S4): disconnect for database work on"
    " the lanes; events wait in the outbox meanwhile.",
    no_args_is_help=True,
)
sync_app.add_typer(publisher_app, name="publisher")


@publisher_app.command("disconnect")
def publisher_disconnect(reason: ReasonOpt = None, as_json: JsonOpt = False) -> None:
    """Stop enqueuing on the lanes: changes keep committing, their events wait in the
    outbox (nothing is lost)."""
    actor = _actor()
    _show_publisher(
        with_runtime(
            lambda rt: service.switch_publisher(
                rt.pool, rt.journal, connected=False, actor=actor, reason=reason
            )
        ),
        as_json,
    )


@publisher_app.command("connect")
def publisher_connect(reason: ReasonOpt = None, as_json: JsonOpt = False) -> None:
    """Move the outbox's events to their lanes, oldest first, and enqueue directly again."""
    actor = _actor()
    _show_publisher(
        with_runtime(
            lambda rt: service.switch_publisher(
                rt.pool, rt.journal, connected=True, actor=actor, reason=reason
            )
        ),
        as_json,
    )


@publisher_app.command("show")
def publisher_show(as_json: JsonOpt = False) -> None:
    """Connected or not, and the events waiting in the outbox."""
    _show_publisher(with_runtime(lambda rt: service.publisher(rt.pool)), as_json)


listener_app = typer.Typer(
    help="An instance's listener (S9): disconnect waits for its threads to finish their"
    " current event; connect reactivates them. Nothing is lost.",
    no_args_is_help=True,
)
sync_app.add_typer(listener_app, name="listener")

InstanceOpt = Annotated[
    int | None,
    typer.Option(min=0, max=7, help="Pipeline instance (default BOSSA_SYNC_INSTANCE)"),
]
WaitOpt = Annotated[float, typer.Option(min=0, max=3600, help="Seconds to wait for the listener")]


def _switch_listener(
    instance: int | None, connected: bool, reason: str | None, wait: float, as_json: bool
) -> None:
    actor = _actor()

    async def go(rt: Runtime) -> ListenerState:
        chosen = rt.settings(SyncSettings).instance if instance is None else instance
        return await service.switch_listener(
            rt.pool, chosen, connected=connected, actor=actor, reason=reason, wait_s=wait
        )

    _show_listener(with_runtime(go), as_json)


@listener_app.command("disconnect")
def listener_disconnect(
    instance: InstanceOpt = None,
    reason: ReasonOpt = None,
    wait: WaitOpt = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Deactivate the listener: returns when its threads have finished their events."""
    _switch_listener(instance, False, reason, wait, as_json)


@listener_app.command("connect")
def listener_connect(
    instance: InstanceOpt = None,
    reason: ReasonOpt = None,
    wait: WaitOpt = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Reactivate the listener: it takes the waiting events again."""
    _switch_listener(instance, True, reason, wait, as_json)


@listener_app.command("show")
def listener_show(instance: InstanceOpt = None, as_json: JsonOpt = False) -> None:
    async def go(rt: Runtime) -> ListenerState:
        chosen = rt.settings(SyncSettings).instance if instance is None else instance
        return await service.listener_state(rt.pool, chosen)

    _show_listener(with_runtime(go), as_json)


@sync_app.command("route")
def route(
    customer: Annotated[str, typer.Argument(help="Customer id")],
    instance: Annotated[int, typer.Argument(min=0, max=7, help="Pipeline instance")],
) -> None:
    """Assign a customer to a pipeline instance (S12, the account router) for its
    future events."""
    actor = _actor()
    chosen = with_runtime(
        lambda rt: service.set_route(
            rt.pool, customer, instance, rt.settings(SyncSettings), actor=actor
        )
    )
    out.print(f"customer {customer}: instance {chosen}")


@sync_app.command("recycle")
def recycle(reason: ReasonOpt = None) -> None:
    """Publish a RecycleRequest: the pipeline recycles its suspended records."""
    actor = _actor()
    found = with_runtime(
        lambda rt: service.request_recycle(
            rt.pool, rt.journal, actor=actor, reason=reason, settings=rt.settings(SyncSettings)
        )
    )
    out.print(f"{len(found)} recycle request(s) published")


@sync_app.command("check-events")
def check_events(
    path: Annotated[
        Path | None, typer.Argument(help="A business-event file (default BOSSA_SYNC_EVENTS)")
    ] = None,
    default: Annotated[
        bool, typer.Option("--default", help="Print the packaged default file to copy")
    ] = False,
) -> None:
    """Check a business-event file: exits 2 naming the field of the first mistake."""
    from bossa import config as bossa_config

    if default:
        typer.echo(DEFAULT_EVENTS_YAML, nl=False)  # as is: no wrapping, for a copy
        return
    chosen = path or bossa_config.load(SyncSettings).events
    checked = service.check_event_file(chosen)
    out.print(
        f"{chosen or 'the default'}: {len(checked.notify)} internal events notified,"
        f" {len(checked.business_events)} business events, threads {checked.threads or '{}'}"
    )
