"""The command line: one sub-command group per domain module.

Thin by design: parse, call a domain function, render. A user error prints one line
and exits 2; only bugs show a traceback.
"""

# ruff: noqa: E402  (the SIGTERM handler goes in before the imports, which take seconds)

from __future__ import annotations

import signal
import sys


def _stopped_before_start(signum: int, frame: object) -> None:
    """SIGTERM while the command line is still loading (seconds on a busy machine):
    nothing is held yet, so end at once and cleanly. A worker asked to stop exits 0
    whenever the signal comes (`bossa journal work`); any other command 143, as if
    terminated. Commands that run long install their own handling once started."""
    args = sys.argv[1:]
    worker = any(args[i : i + 2] == ["journal", "work"] for i in range(len(args)))
    raise SystemExit(0 if worker else 128 + signum)


if __name__ == "__main__" or sys.argv[0].endswith(("/bossa", "bossa")):
    signal.signal(signal.SIGTERM, _stopped_before_start)

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from bossa import __version__, config
from bossa.errors import UserError
from bossa.terminal import err, out, print_json, table

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    name="bossa",
    help="bossa: a telecom BSS core on one PostgreSQL journal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The PostgreSQL bossa runs on: embedded, or yours.", no_args_is_help=True)
config_app = typer.Typer(help="Effective settings.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    from bossa import logs

    if version:
        out.print(f"bossa {__version__}")
        raise typer.Exit
    logs.configure(config.load(logs.LogSettings))


# -- db -------------------------------------------------------------------------------


def _db_settings() -> Any:
    from bossa.db import DatabaseSettings

    return config.load(DatabaseSettings)


def _embedded_only(action: str) -> Any:
    from bossa.db import embedded_from

    settings = _db_settings()
    if settings.database_url is not None:
        raise UserError(
            f"BOSSA_DATABASE_URL is set: bossa uses that server and does not {action} it",
            field="BOSSA_DATABASE_URL",
        )
    return embedded_from(settings)


@db_app.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL and keep it running until `bossa db stop`."""
    server = _embedded_only("start")
    server.start(pin=True)
    out.print(f"embedded PostgreSQL running in {server.data_dir}\n{server.url()}")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL."""
    server = _embedded_only("stop")
    server.stop()
    out.print(f"embedded PostgreSQL in {server.data_dir} stopped")


@db_app.command("status")
def db_status() -> None:
    """Which PostgreSQL bossa uses, and whether it runs."""
    settings = _db_settings()
    if settings.database_url is not None:
        shown = config.masked(settings)["database_url"]
        out.print(f"external PostgreSQL (BOSSA_DATABASE_URL): {shown}")
        return
    from bossa.db import embedded_from

    status = embedded_from(settings).status()
    state = f"running (pid {status.pid})" if status.running else "stopped"
    out.print(f"embedded PostgreSQL in {status.data_dir}: {state}")
    if status.running:
        out.print(
            f"url: {status.url}\npinned by `bossa db start`: {status.pinned}; "
            f"bossa processes using it: {status.holders}"
        )


@db_app.command("url")
def db_url(
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Print the password too (for psql and scripts).")
    ] = False,
) -> None:
    """Print the database URL (starting nothing), its password masked unless --reveal."""
    from bossa.db import masked_url

    settings = _db_settings()
    if settings.database_url is not None:
        url = settings.database_url.get_secret_value()
        out.print(url if reveal else masked_url(url), soft_wrap=True, markup=False)
        return
    from bossa.db import embedded_from

    out.print(embedded_from(settings).url(), soft_wrap=True)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending schema migrations (safe to run from several places at once)."""
    from bossa.db import database
    from bossa.db.migrations import migrate

    with database(_db_settings()) as url:
        applied = migrate(url, progress=lambda m: out.print(f"applying {m.label}"))
    out.print(f"{len(applied)} migration(s) applied; schema is current")


# -- config ---------------------------------------------------------------------------


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Print the effective settings, secrets masked."""
    sections = {name: config.masked(s) for name, s in config.load_all().items()}
    if as_json:
        print_json(sections)
        return
    source = config.config_file()
    out.print(f"config file: {source or '(none; set BOSSA_CONFIG)'}")
    for name, values in sections.items():
        cls = config.SECTIONS[name]
        table(
            [{"setting": k, "env": cls.env_name(k), "value": v} for k, v in values.items()],
            ["setting", "env", "value"],
            title=escape(f"[{name}]"),
        )


# -- serve, demo ----------------------------------------------------------------------


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [BOSSA_API_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [BOSSA_API_PORT].")] = None,
) -> None:
    """Run the HTTP API (OpenAPI at /docs, /healthz, /readyz, /metrics)."""
    import uvicorn

    from bossa.api import create_app
    from bossa.api.settings import ApiSettings

    config.load_all()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = config.load(ApiSettings, **overrides)
    tls = {}
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        tls = {
            "ssl_certfile": str(settings.tls_cert_file),
            "ssl_keyfile": str(settings.tls_key_file),
        }
    uvicorn.run(
        create_app(settings=settings, settle_heap=True),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        **tls,  # type: ignore[arg-type]
    )


@app.command("demo")
def demo(
    serve: Annotated[bool, typer.Option("--serve", help="Keep running with the API up.")] = False,
) -> None:
    """A scripted tour of bossa on its embedded PostgreSQL."""
    from bossa.demo import tour

    run(tour(out, serve=serve))


def _add_domain_groups() -> None:
    from bossa.access.cli import access_app
    from bossa.alerts.cli import alerts_app
    from bossa.billing.cli import billing_app, ledger_app
    from bossa.customers.cli import (
        accounts_app,
        catalogue_app,
        contracts_app,
        customers_app,
        sample_app,
    )
    from bossa.imports.cli import export_app, import_app
    from bossa.journal.cli import journal_app
    from bossa.partners.cli import partners_app
    from bossa.provisioning.cli import provisioning_app
    from bossa.rating.cli import rating_app
    from bossa.sync.cli import sync_app

    app.add_typer(access_app, name="access")
    app.add_typer(journal_app, name="journal")
    app.add_typer(provisioning_app, name="provisioning")
    app.add_typer(ledger_app, name="ledger")
    app.add_typer(billing_app, name="billing")
    app.add_typer(rating_app, name="rating")
    app.add_typer(sync_app, name="sync")
    app.add_typer(catalogue_app, name="catalogue")
    app.add_typer(customers_app, name="customers")
    app.add_typer(accounts_app, name="accounts")
    app.add_typer(contracts_app, name="contracts")
    app.add_typer(sample_app, name="sample")
    app.add_typer(import_app, name="import")
    app.add_typer(export_app, name="export")
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(partners_app, name="partners")


_add_domain_groups()


def main() -> None:
    try:
        app()
    except UserError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
