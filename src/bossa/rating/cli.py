"""`bossa rating ...`: tariffs, the pipeline's subscriptions, rating CDR files (once, or
as a daemon watching an inbox directory) and suspense. Each command parses its options,
calls one service function and renders the result."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer
import yaml

from bossa.access import cli_principal
from bossa.clitools import with_runtime
from bossa.errors import InvalidInput
from bossa.rating import service
from bossa.rating.models import (
    MAX_RECYCLE,
    BatchReport,
    RecycleReport,
    RerateReport,
    SuspenseReason,
    TariffRequest,
)
from bossa.runtime import Runtime
from bossa.terminal import out, print_json, table

__all__ = ["rating_app"]

rating_app = typer.Typer(
    help="Rating usage records with tariffs (S, issue 14).", no_args_is_help=True
)

#: A tariff file larger than this is not a tariff.
MAX_TARIFF_BYTES = 4 << 20


def _actor() -> str:
    return cli_principal().actor


def _read_tariff(path: Path) -> TariffRequest:
    if not path.is_file():
        raise InvalidInput(f"no file {path}", field="file")
    if path.stat().st_size > MAX_TARIFF_BYTES:
        raise InvalidInput(f"larger than {MAX_TARIFF_BYTES} bytes", field="file")
    text = path.read_text(encoding="utf-8", errors="strict")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"is not JSON or YAML: {str(exc)[:200]}", field="file") from None
    return TariffRequest.parse(data)


@rating_app.command("tariff-add")
def tariff_add(
    file: Annotated[Path, typer.Argument(help="A tariff version (YAML or JSON)")],
) -> None:
    """Add a tariff version; the product's open version ends the day this one starts."""
    version = _read_tariff(file).version()
    tid = with_runtime(lambda rt: service.add_tariff(rt.pool, version, actor=_actor()))
    out.print(f"tariff {tid}: {version.product_code} from {version.valid_from}")


@rating_app.command("subscribe")
def subscribe(
    msisdn: str,
    account: str,
    product: str,
    at: Annotated[str, typer.Option(help="From when (YYYY-MM-DD HH:MM:SS, local time)")],
) -> None:
    """A number holds a product on an account from a moment on."""
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise InvalidInput(f"{at!r} is not a time (YYYY-MM-DD HH:MM:SS)", field="at") from None
    with_runtime(
        lambda rt: service.put_subscription(
            rt.pool, msisdn=msisdn, account_id=account, product_code=product, at=when
        )
    )
    out.print(f"{msisdn}: {product} on {account} from {when}")


@rating_app.command("rate")
def rate(
    files: Annotated[list[Path], typer.Argument(help="CDR files (CSV with a header)")],
    errors: Annotated[
        Path | None, typer.Option(help="Folder for each file's error file (FILE.errors.csv)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rate CDR files, each in one transaction; a file rated before is skipped."""

    async def go(rt: Runtime) -> list[dict[str, object]]:
        pipeline = service.Pipeline.open()
        try:
            reports = []
            for path in files:
                target = (errors / f"{path.name}.errors.csv") if errors else None
                report = await service.rate_file(
                    rt.pool, pipeline, path, actor=_actor(), errors_to=target
                )
                reports.append(report.model_dump(exclude={"errors"}))
            return reports
        finally:
            pipeline.close()

    reports = with_runtime(go)
    if as_json:
        print_json(reports)
        return
    table(
        reports,
        ["batch", "source", "records", "rated", "suspended", "malformed", "charge", "repeated"],
    )
    if any(r["malformed"] for r in reports):
        raise typer.Exit(1)


@rating_app.command("inbox")
def inbox(
    folder: Annotated[Path, typer.Argument(help="Where CDR files (*.csv) are dropped")],
    poll: Annotated[float, typer.Option(min=0.1, max=3600, help="Seconds between looks")] = 2.0,
    once: Annotated[bool, typer.Option(help="Rate what is there, then stop")] = False,
) -> None:
    """Rate every *.csv dropped in FOLDER, oldest first; a rated file moves to done/ (its
    error file beside it), one that cannot be read to failed/. A file is taken only once
    it has stopped growing; the same content dropped twice is rated once. At every look,
    suspended records whose cause is gone are recycled."""
    inbox_dir = service.Inbox.open(folder)

    def said(name: str, report: BatchReport | None, recycled: int) -> None:
        if recycled:
            out.print(f"recycled from suspense: {recycled} rated")
        elif report is not None:
            out.print(
                f"{name}: batch {report.batch}, {report.rated} rated, "
                f"{report.suspended} suspended, {report.malformed} malformed"
                + (" (rated before)" if report.repeated else "")
            )

    async def go(rt: Runtime) -> None:
        pipeline = service.Pipeline.open()
        try:
            await service.watch_inbox(
                rt.pool,
                pipeline,
                inbox_dir,
                actor=_actor(),
                poll_s=poll,
                outage_s=rt.journal.settings.database_outage_s,
                once=once,
                said=said,
            )
        finally:
            pipeline.close()

    with_runtime(go)


@rating_app.command("suspense")
def suspense(
    reason: Annotated[SuspenseReason | None, typer.Option(help="Only this reason")] = None,
    after: Annotated[str, typer.Option(help="Page after this record key")] = "",
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """Usage records waiting in suspense, with why."""
    records = with_runtime(
        lambda rt: service.suspended(
            rt.pool, reason=reason.value if reason else None, after=after, limit=limit
        )
    )
    table(
        [r.model_dump(mode="json") for r in records],
        ["record_key", "msisdn", "destination", "started_at", "duration", "reason", "attempts"],
    )


@rating_app.command("recycle")
def recycle(
    reason: Annotated[SuspenseReason | None, typer.Option(help="Only this reason")] = None,
    account: Annotated[str | None, typer.Option(help="Only this account's records")] = None,
    batch: Annotated[
        int | None, typer.Option(min=1, help="Only records suspended by this batch")
    ] = None,
    file: Annotated[
        str | None, typer.Option(help="Only records of the file of this name (its batches)")
    ] = None,
    fixed: Annotated[
        bool, typer.Option(help="Only records whose cause is gone (what the inbox does)")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=MAX_RECYCLE)] = MAX_RECYCLE,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rate suspended records again, in one transaction: those that rate leave suspense
    and are charged once; the others stay with their (new) reason. Audited."""

    async def go(rt: Runtime) -> RecycleReport:
        pipeline = service.Pipeline.open()
        try:
            return await service.recycle(
                rt.pool,
                pipeline,
                actor=_actor(),
                reason=reason,
                account=account,
                batch=batch,
                source=file,
                fixed=fixed,
                limit=limit,
            )
        finally:
            pipeline.close()

    report = with_runtime(go)
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    out.print(
        f"recycled {report.taken}: {report.rated} rated (charge {report.charge}), "
        f"{report.suspended} still suspended, {report.already_rated} rated before"
        + (f"; batch {report.batch}" if report.batch else "")
    )


def _day(text: str, field: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not a day (YYYY-MM-DD)", field=field) from None


@rating_app.command("rerate")
def rerate(
    start: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD)")],
    end: Annotated[str, typer.Option("--to", help="Day after the last (YYYY-MM-DD)")],
    account: Annotated[str | None, typer.Option(help="Only this account's usage")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rate a period's usage again with today's tariffs and account data, replacing its
    rated usage and its ledger rows in one transaction (refused if any is billed)."""
    first, after = _day(start, "from"), _day(end, "to")

    async def go(rt: Runtime) -> RerateReport:
        pipeline = service.Pipeline.open()
        try:
            return await service.rerate(
                rt.pool, pipeline, start=first, end=after, account=account, actor=_actor()
            )
        finally:
            pipeline.close()

    report = with_runtime(go)
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    out.print(
        f"rerated {report.records} records from {report.start} to {report.end}: charge "
        f"{report.old_charge} -> {report.new_charge}, {report.suspended} to suspense, "
        f"{report.ledger_rows_replaced} ledger rows replaced; batch {report.batch}"
    )


@rating_app.command("billing-start")
def billing_start(
    accounts: Annotated[list[str], typer.Argument(help="Accounts being billed")],
    run: Annotated[str, typer.Option(help="The bill run, for the record")] = "",
) -> None:
    """S14: the accounts' new usage waits in suspense (billing_in_progress) until
    `billing-complete`."""
    n = with_runtime(lambda rt: service.hold_for_billing(rt.pool, accounts, started=True, run=run))
    out.print(f"{n} accounts held while billed")


@rating_app.command("billing-complete")
def billing_complete(
    accounts: Annotated[list[str], typer.Argument(help="Accounts billed")],
) -> None:
    """S14: billing of the accounts is complete; their suspended usage is recycled at
    the pipeline's next look (or by `bossa rating recycle --fixed`)."""
    n = with_runtime(lambda rt: service.hold_for_billing(rt.pool, accounts, started=False))
    out.print(f"{n} accounts released")
