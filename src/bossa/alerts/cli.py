"""`bossa alerts ...`: the alerts daemon, subscribers and the trial set (M5). Each command
parses its options, calls one service function and renders the result."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from bossa import config
from bossa.access import cli_principal
from bossa.alerts import lanes, service
from bossa.alerts.settings import AlertsSettings
from bossa.clitools import with_runtime
from bossa.db import DatabaseSettings
from bossa.journal import JournalSettings
from bossa.terminal import out, print_json

__all__ = ["alerts_app"]

alerts_app = typer.Typer(help="Missed-call alerts (M1-M6).", no_args_is_help=True)
trial_app = typer.Typer(
    help="The trial set: number ranges and a user quota (M5).", no_args_is_help=True
)
subscribers_app = typer.Typer(help="Subscribers of missed-call alerts.", no_args_is_help=True)
alerts_app.add_typer(trial_app, name="trial")
alerts_app.add_typer(subscribers_app, name="subscribers")


@alerts_app.command("serve")
def serve() -> None:
    """Run the SIP intake, the SMS lane and the outage mode until stopped."""

    sections = config.load_all()
    database, journal, alerts = sections["database"], sections["journal"], sections["alerts"]
    assert isinstance(database, DatabaseSettings)
    assert isinstance(journal, JournalSettings)
    assert isinstance(alerts, AlertsSettings)
    asyncio.run(lanes.serve(database, journal, alerts))


@subscribers_app.command("add")
def add_subscriber(
    msisdn: str,
    lang: Annotated[str, typer.Option(help="en, zh or ko")] = "en",
) -> None:
    """Register a subscriber (message 2 for their missed calls)."""
    actor = cli_principal().actor
    found = with_runtime(lambda rt: service.register(rt.pool, msisdn, lang, actor=actor))
    print_json(found.model_dump(mode="json"))


@subscribers_app.command("remove")
def remove_subscriber(msisdn: str) -> None:
    """Unregister a subscriber."""
    with_runtime(lambda rt: service.unregister(rt.pool, msisdn))
    out.print(f"subscriber {msisdn} removed")


@trial_app.command("show")
def show_trial() -> None:
    """The trial set: ranges, quota and members."""
    print_json(with_runtime(lambda rt: service.trial_set(rt.pool)).model_dump(mode="json"))


@trial_app.command("add-range")
def add_range(prefix: str) -> None:
    """Add a number range (a prefix of E.164 digits)."""
    actor = cli_principal().actor
    found = with_runtime(lambda rt: service.add_trial_range(rt.pool, prefix, actor=actor))
    print_json(found.model_dump(mode="json"))


@trial_app.command("remove-range")
def remove_range(prefix: str) -> None:
    """Remove a number range."""
    print_json(
        with_runtime(lambda rt: service.remove_trial_range(rt.pool, prefix)).model_dump(mode="json")
    )


@trial_app.command("quota")
def set_quota(
    quota: Annotated[
        int, typer.Argument(min=0, max=100_000_000, help="Users the trial set may hold")
    ],
) -> None:
    """Set the user quota (members beyond it stay; no new ones join)."""
    actor = cli_principal().actor
    found = with_runtime(lambda rt: service.set_trial_quota(rt.pool, quota, actor=actor))
    print_json(found.model_dump(mode="json"))


@alerts_app.command("calls")
def calls(
    callee: str,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Rows of each kind")] = 20,
) -> None:
    """A callee's latest missed calls and the notices that told them."""
    found = with_runtime(lambda rt: service.history(rt.pool, callee, limit=limit))
    print_json(found.model_dump(mode="json"))
