"""`bossa sync ...`: the listener that keeps the rating pipeline's account data current
from business events (S6), and the queue report (S6). Each command parses its options,
calls one service function and renders the result."""

from __future__ import annotations

from typing import Annotated

import typer

from bossa.clitools import with_runtime
from bossa.runtime import Runtime
from bossa.sync import service
from bossa.sync.models import LaneReport
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
    if found.held:
        out.print("held (processing waits until each is retried or discarded):")
        table([h.model_dump() for h in found.held], ["entry_id", "key", "code", "message"])
