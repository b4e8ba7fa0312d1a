"""`bossa demo`: a scripted tour of every system that exists so far, on the embedded
PostgreSQL, printing what happens as it happens. Each system adds its chapter.

The tour runs in its own database (`bossa_demo`), recreated on every run, so it never
touches an operator's data and a second run shows the same story.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
from psycopg import sql
from rich.console import Console
from rich.rule import Rule

from bossa import config, logs
from bossa.alerts import demo as alerts_demo
from bossa.billing import demo as billing_demo
from bossa.customers import load_sample
from bossa.customers.sample import load_sample_operator
from bossa.db import DatabaseSettings, EmbeddedPostgres, open_pool
from bossa.db.migrations import migrate
from bossa.journal import Entry, HandlerError, Journal, JournalSettings, NewEntry, Worker
from bossa.journal import service as journal_service
from bossa.partners import demo as partners_demo
from bossa.provisioning import demo as provisioning_demo
from bossa.runtime import Runtime
from bossa.sync import demo as sync_demo
from bossa.terminal import table

__all__ = ["tour"]

DEMO_DATABASE = "bossa_demo"


async def tour(out: Console, *, serve: bool = False) -> None:
    settings = config.load(DatabaseSettings)
    config.load_all()
    # The tour speaks for itself; the workers' logs would only interleave with it.
    logs.configure(config.load(logs.LogSettings, level="warning"))
    started = time.monotonic()
    chapter = _chapters(out)

    next(chapter)
    if settings.database_url is not None:
        out.print("BOSSA_DATABASE_URL is set; the demo still runs on its own embedded server.")
    server = EmbeddedPostgres(
        settings.data_dir, port=settings.embedded_port, database=DEMO_DATABASE
    )
    with server.held() as url:
        _recreate(server)
        with psycopg.connect(url) as conn:
            version = conn.execute("show server_version").fetchone()
        out.print(f"embedded PostgreSQL {version[0] if version else '?'} in {server.data_dir}")
        where = f"127.0.0.1:{server.port}" if server.port else "its own Unix socket"
        out.print(f"listening on {where} ({url})")

        next(chapter)
        for migration in migrate(url):
            out.print(f"applied {migration.label}")

        next(chapter)
        # The whole sample operator: its contracts billed to its accounts since long ago,
        # so the billing chapter's runs bill them; then the listing.
        async with open_pool(url, min_size=1, max_size=1) as pool:
            await load_sample_operator(pool, actor="demo")
        with psycopg.connect(url) as conn:
            sample = load_sample(conn)
        rows = sample.listing
        out.print(
            f"{sample.products} products, {sample.customers} customers, "
            f"{sample.contracts} contracts"
        )
        table(
            [
                dict(zip(["SA_ID", "CUST_ID", "customer", "product", "name"], r, strict=True))
                for r in rows
            ],
            ["SA_ID", "CUST_ID", "customer", "product", "name"],
        )

        async with _runtime(url) as runtime:
            next(chapter)
            await _journal_chapter(out, runtime)
            next(chapter)

            async def billing_chapter() -> None:
                next(chapter)
                await billing_demo.chapter(out, runtime)
                next(chapter)
                await partners_demo.chapter(out, runtime)

            await provisioning_demo.chapter(out, runtime, server, then=billing_chapter)
            next(chapter)
            await sync_demo.chapter(out, runtime)
            # Last: it stops and restarts the server under every chapter's pool.
            next(chapter)
            await alerts_demo.chapter(out, runtime, server)
            out.print(Rule())
            out.print(f"tour finished in {time.monotonic() - started:.1f}s")
            if serve:
                await _serve(out, runtime)


def _chapters(out: Console) -> Any:
    titles = [
        "1. The database: an embedded PostgreSQL, no setup",
        "2. The schema: versioned migrations, applied under a lock",
        "3. A sample operator: products, customers, contracts (SA_ID)",
        "4. The journal: per-contract order, retries, parking, an operator's hand",
        "5. Provisioning: an order completes while a server is down (P4, P5, P6)",
        "6. Billing: a bill run that never stops business (B1-B6)",
        "7. Partners: a template run through the open API, its MDR file over SFTP (O1-O5)",
        "8. Sync and rating: a product bought while the pipeline is down rates the next call"
        " (S1-S13)",
        "9. Missed-call alerts: SMS sent while PostgreSQL is stopped, reconciled after (M1-M6)",
    ]
    for title in titles:
        out.print(Rule(title, align="left"))
        yield


def _recreate(server: EmbeddedPostgres) -> None:
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(DEMO_DATABASE))
        )
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(DEMO_DATABASE)))


@contextlib.asynccontextmanager
async def _runtime(url: str) -> AsyncIterator[Runtime]:
    settings = config.load(JournalSettings, backoff_base_ms=200, backoff_max_ms=400, max_attempts=3)
    async with open_pool(url, max_size=6) as pool:
        runtime = Runtime.around(url, Journal(pool, settings, actor="demo"), embedded=True)
        try:
            yield runtime
        finally:
            await runtime.deliverer.close()


async def _journal_chapter(out: Console, runtime: Runtime) -> None:
    journal = runtime.journal
    lane = "demo.aaa"
    out.print(f"Six commands for the network-access server (lane {lane}), keyed by contract.")
    out.print("SA-5003's first command is malformed; the server will reject it.")
    commands = [
        ("SA-5001", "4201", "new"),
        ("SA-5003", "4201", "new (malformed)"),
        ("SA-5001", "4202", "change"),
        ("SA-5003", "4202", "change"),
        ("SA-5004", "4201", "new"),
        ("SA-5001", "4203", "terminate"),
    ]
    entries = [
        NewEntry(
            lane,
            "aaa.command",
            {"sa_id": sa, "intf_code": code, "what": what, "bad": "malformed" in what},
            key=sa,
        )
        for sa, code, what in commands
    ]
    await journal.declare_lane(lane, owner="journal")
    ids = [result.id for result in await journal.enqueue(entries)]
    out.print(f"enqueued entries {ids[0]}..{ids[-1]} in one transaction")

    async def deliver(entry: Entry) -> None:
        payload = entry.payload
        if payload["bad"]:
            out.print(
                f"  [red]x[/red] {entry.key} {payload['intf_code']} {payload['what']}: "
                f"rejected (attempt {entry.attempts})"
            )
            raise HandlerError("ORA-01400", "cannot insert NULL into NOT NULL column")
        out.print(f"  [green]+[/green] {entry.key} {payload['intf_code']} {payload['what']}")

    worker = Worker(journal, lane, {"aaa.command": deliver}, concurrency=1, batch_size=10)
    await worker.run(until_idle=True)
    out.print(
        f"worker idle: {worker.stats.acked} delivered, {worker.stats.failed} failures, "
        f"{worker.stats.parked} parked after {(await journal.policy(lane)).max_attempts} attempts"
    )
    blocked = await journal_service.blocked_keys(journal, lane)
    for row in blocked:
        code = row.last_error.code if row.last_error else "-"
        out.print(
            f"blocked key {row.key}: entry {row.head_id} {row.state}, "
            f"{row.unfinished} unfinished, last error {code}"
        )
    out.print("SA-5003's change waits behind it: per-contract order holds even on failure.")

    head = blocked[0].head_id
    fixed = {
        **(await journal_service.show(journal, head)).payload,
        "bad": False,
        "what": "new (fixed by the operator)",
    }
    await journal_service.edit(
        journal, head, fixed, actor="demo-operator", reason="added the NAS id"
    )
    state = await journal_service.retry(
        journal, head, actor="demo-operator", reason="fixed by hand"
    )
    out.print(f"operator edits entry {head} and retries it: now {state}")
    await Worker(journal, lane, {"aaa.command": deliver}, concurrency=1).run(until_idle=True)
    report = await journal_service.counts(journal)
    table([r.model_dump() for r in report.by_state if r.lane == lane], ["lane", "state", "entries"])


async def _serve(out: Console, runtime: Runtime) -> None:
    import uvicorn

    from bossa.api import create_app
    from bossa.api.settings import ApiSettings

    api = config.load(ApiSettings)

    @contextlib.asynccontextmanager
    async def same_runtime() -> AsyncIterator[Runtime]:
        yield runtime

    class Server(uvicorn.Server):
        # uvicorn re-raises SIGINT/SIGTERM once it has shut down, which would end the
        # process before the tour's embedded PostgreSQL is stopped: stop it gently.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    app = create_app(same_runtime, api)
    out.print(f"API on http://{api.host}:{api.port}/docs  (Ctrl-C to stop)")
    server = Server(uvicorn.Config(app, host=api.host, port=api.port, log_config=None))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda: setattr(server, "should_exit", True))
    await server.serve()
