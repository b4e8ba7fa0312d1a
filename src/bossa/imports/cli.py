"""`bossa import KIND FILE` and `bossa export KIND FILE`, and the import jobs.

Each command parses its options, calls one function of `service` and renders the result.
Progress goes to stderr: a bar on a terminal, a plain line every few seconds otherwise
(a log, a CI job). Exit codes: 0 every row applied (or the file was imported before),
1 some rows were rejected (the error file names them; with --all-or-nothing nothing was
applied), 2 a usage error (unknown kind or column, unreadable file: nothing was done).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bossa.access import cli_principal
from bossa.clitools import JsonOpt, with_runtime
from bossa.imports import service
from bossa.imports.models import (
    KINDS,
    ExportResult,
    ImportJob,
    ImportOutcome,
    KindName,
    RowError,
)
from bossa.imports.models import Progress as Step
from bossa.imports.settings import ImportSettings
from bossa.runtime import Runtime
from bossa.terminal import err, out, print_json, table

__all__ = ["export_app", "import_app"]

import_app = typer.Typer(
    help="Import customers, accounts, contracts or products from a CSV or JSON-lines file "
    "(docs/import.md).",
    no_args_is_help=True,
)
export_app = typer.Typer(
    help="Export customers, accounts, contracts or products in the shape import reads.",
    no_args_is_help=True,
)

#: Exit code when some rows were rejected.
REJECTED_EXIT = 1
#: Seconds between plain progress lines when stderr is not a terminal.
PLAIN_EVERY_S = 5.0

FileArg = Annotated[
    Path, typer.Argument(help="The file (.csv with a header, or .jsonl).", show_default=False)
]
FormatOpt = Annotated[
    str | None, typer.Option("--format", help="csv or jsonl (default: from the extension).")
]


class _Bar:
    """Progress on stderr: rich's bar on a terminal, a plain line now and then otherwise."""

    def __init__(self) -> None:
        self.fancy = err.is_terminal
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.last_phase = ""
        self.last_print = 0.0

    def __enter__(self) -> _Bar:
        if self.fancy:
            self.progress = Progress(
                TextColumn("{task.description:<9}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=False,
            )
            self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, step: Step) -> None:
        if self.progress is not None:
            task = self.tasks.get(step.phase)
            if task is None:
                task = self.tasks[step.phase] = self.progress.add_task(
                    step.phase, total=max(step.total, 1)
                )
            self.progress.update(task, completed=step.done, total=max(step.total, 1))
            return
        now = time.monotonic()
        finished = step.done >= step.total
        if (
            step.phase == self.last_phase
            and now - self.last_print < PLAIN_EVERY_S
            and not (finished and step.phase == "applying")
        ):
            return
        self.last_phase, self.last_print = step.phase, now
        share = 100.0 * step.done / step.total if step.total else 100.0
        err.print(
            f"{step.phase}: {step.done:,} of {step.total:,} {step.unit} ({share:.0f}%)",
            markup=False,
            soft_wrap=True,
            highlight=False,
        )


def _job_row(job: ImportJob) -> dict[str, object]:
    return {
        **job.model_dump(),
        "kind": job.kind.value,
        "status": job.status.value,
        "format": job.format.value,
    }


_JOB_COLUMNS = [
    "id",
    "kind",
    "status",
    "file_name",
    "rows",
    "applied",
    "rejected",
    "position",
    "created_by",
    "updated_at",
]


def _render(outcome: ImportOutcome, errors_path: Path, as_json: bool) -> None:
    job = outcome.job
    if as_json:
        print_json(
            {
                **outcome.job.model_dump(mode="json"),
                "already_done": outcome.already_done,
                "applied_now": outcome.applied_now,
                "error_file": str(errors_path) if job.rejected else None,
                "seconds": round(outcome.seconds, 3),
            }
        )
    elif outcome.already_done:
        out.print(
            f"job {job.id}: this file was imported before ({job.applied:,} applied, "
            f"{job.rejected:,} rejected); nothing was done",
            markup=False,
            soft_wrap=True,
        )
    else:
        rate = outcome.applied_now / outcome.seconds if outcome.seconds > 0 else 0.0
        verb = "rejected: nothing applied" if job.status.value == "rejected" else "done"
        out.print(
            f"job {job.id} {verb}: {job.rows:,} rows, {outcome.applied_now:,} applied now "
            f"({job.applied:,} in all), {job.rejected:,} rejected, in {outcome.seconds:.1f} s "
            f"({rate:,.0f} rows/s)",
            markup=False,
            soft_wrap=True,
        )
    if job.rejected and not as_json:
        out.print(
            f"rejected rows, with line and reason: {errors_path}", markup=False, soft_wrap=True
        )


def _import_command(kind: KindName) -> None:
    description = KINDS[kind]

    def command(
        file: FileArg,
        format: FormatOpt = None,
        errors: Annotated[
            Path | None,
            typer.Option("--errors", help="The error file (default: FILE.errors.csv)."),
        ] = None,
        all_or_nothing: Annotated[
            bool,
            typer.Option("--all-or-nothing", help="Apply nothing if any row is rejected."),
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        request = service.ImportRequest(
            kind.value, file, format=format, all_or_nothing=all_or_nothing, errors_path=errors
        )
        actor = cli_principal().actor

        async def run(runtime: Runtime) -> ImportOutcome:
            with _Bar() as bar:
                return await service.import_file(
                    runtime.pool,
                    request,
                    actor=actor,
                    settings=runtime.settings(ImportSettings),
                    progress=bar,
                )

        outcome = with_runtime(run)
        _render(outcome, errors or file.with_name(file.name + ".errors.csv"), as_json)
        if outcome.job.rejected:
            raise typer.Exit(REJECTED_EXIT)

    columns = ", ".join(c.name + ("*" if c.required else "") for c in description.columns)
    command.__doc__ = f"Import {kind.value}. {description.doc} Columns (* required): {columns}."
    import_app.command(kind.value)(command)


def _export_command(kind: KindName) -> None:
    def command(
        file: FileArg,
        format: FormatOpt = None,
        spreadsheet_safe: Annotated[
            bool,
            typer.Option(
                "--spreadsheet-safe",
                help="Prefix text a spreadsheet would run as a formula (= + - @) with '. "
                "For people: such a file no longer round-trips through import.",
            ),
        ] = False,
    ) -> None:
        result: ExportResult = with_runtime(
            lambda rt: service.export_file(
                rt.pool, kind.value, file, format=format, spreadsheet_safe=spreadsheet_safe
            )
        )
        out.print(
            f"{result.rows:,} {kind.value} written to {file} in {result.seconds:.1f} s",
            markup=False,
            soft_wrap=True,
        )

    command.__doc__ = f"Export every one of the {kind.value} to FILE (.csv or .jsonl)."
    export_app.command(kind.value)(command)


for _kind in KindName:
    _import_command(_kind)
    _export_command(_kind)


@import_app.command("jobs")
def list_jobs(
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    status: Annotated[str | None, typer.Option(help="running|done|rejected|failed")] = None,
    before_id: Annotated[int | None, typer.Option(min=1, help="Page: jobs before this id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List import jobs, newest first."""
    rows = with_runtime(
        lambda rt: service.jobs(rt.pool, kind=kind, status=status, before_id=before_id, limit=limit)
    )
    if as_json:
        print_json([row.model_dump(mode="json") for row in rows])
        return
    table([_job_row(row) for row in rows], _JOB_COLUMNS)


@import_app.command("job")
def show_job(
    job_id: Annotated[int, typer.Argument(min=1, max=2**63 - 1, help="The job's id.")],
    errors: Annotated[int, typer.Option(min=0, max=10_000, help="Rejected rows shown.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """One import job, and its first rejected rows."""

    async def fetch(runtime: Runtime) -> tuple[ImportJob, list[RowError]]:
        found = await service.job(runtime.pool, job_id)
        return found, await service.job_errors(runtime.pool, job_id, limit=errors)

    found, rejected = with_runtime(fetch)
    if as_json:
        print_json(
            {
                **found.model_dump(mode="json"),
                "errors": [e.__dict__ for e in rejected],
            }
        )
        return
    table([_job_row(found)], [*_JOB_COLUMNS, "last_error"])
    if rejected:
        table([e.__dict__ for e in rejected], ["line", "field", "reason", "raw"])
