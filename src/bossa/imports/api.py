"""HTTP routes of bulk import: the jobs (status, rejected rows), and the upload of a small
file (bounded by `imports.upload_max_bytes`; a big one goes through `bossa import`).

Each route declares its permission (`imports.read` to look, `imports.run` to import) and
calls one function of `service`; the job's actor is the caller's credential, never a name
from the body.
"""

from __future__ import annotations

import tempfile
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from bossa.access import Permission
from bossa.access.api import PrincipalDep, guarded
from bossa.db import Pool
from bossa.errors import InvalidInput
from bossa.imports import service
from bossa.imports.models import FileFormat, ImportJob, JobStatus, KindName, RowError
from bossa.imports.settings import ImportSettings

__all__ = ["router"]

router = APIRouter(prefix="/imports", tags=["imports"])

MAX_JOB_ID = 2**63 - 1
#: The most an upload's content may hold whatever the setting (the API's body bound).
MAX_UPLOAD_CHARS = 64 * 1024 * 1024

JobId = Annotated[int, Path(ge=1, le=MAX_JOB_ID, description="The job's id")]


def _pool(request: Request) -> Pool:
    pool: Pool = request.app.state.runtime.pool
    return pool


def _settings(request: Request) -> ImportSettings:
    settings: ImportSettings = request.app.state.runtime.settings(ImportSettings)
    return settings


def _plain_name(value: str | None) -> str | None:
    if value is not None and any(ord(c) < 32 or c in "/\\\x7f" for c in value):
        raise PydanticCustomError("name", "a file name without folders or control characters")
    return value


class RowErrorReply(BaseModel):
    line: int = Field(description="The line of the file (the CSV header is line 1)")
    field: str = Field(description="The column at fault, or `row` for the whole row")
    reason: str
    raw: str = Field(description="The row as read (cut at 4096 characters)")

    @classmethod
    def of(cls, error: RowError) -> RowErrorReply:
        return cls(line=error.line, field=error.field, reason=error.reason, raw=error.raw)


class UploadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(
        max_length=MAX_UPLOAD_CHARS,
        description="The file's text (CSV with a header, or JSON lines), at most "
        "imports.upload_max_bytes bytes as UTF-8",
    )
    format: FileFormat = Field(default=FileFormat.CSV, description="csv or jsonl")
    file_name: Annotated[str | None, AfterValidator(_plain_name)] = Field(
        default=None, min_length=1, max_length=255, description="Recorded with the job"
    )
    all_or_nothing: bool = Field(default=False, description="Apply nothing if any row is bad")


class UploadReply(BaseModel):
    job: ImportJob
    already_done: bool = Field(description="The same file was imported before: nothing done")
    applied_now: int
    errors: list[RowErrorReply] = Field(
        description="The first rejected rows (imports.upload_errors_listed); all of them "
        "at /imports/jobs/{id}/errors"
    )


@router.post("/{kind}", **guarded(Permission.IMPORTS_RUN))
async def upload(
    kind: Annotated[KindName, Path(description="What the file holds")],
    body: UploadBody,
    request: Request,
    principal: PrincipalDep,
) -> UploadReply:
    """Import a small file sent in the body; answers when it is applied (or rejected)."""
    settings = _settings(request)
    data = body.content.encode("utf-8", errors="surrogatepass")
    if len(data) > settings.upload_max_bytes:
        raise InvalidInput(
            f"is {len(data)} bytes; uploads take at most {settings.upload_max_bytes} "
            "(import bigger files with `bossa import`)",
            field="content",
        )
    suffix = ".csv" if body.format is FileFormat.CSV else ".jsonl"
    with tempfile.TemporaryDirectory(prefix="bossa-upload-") as folder:
        path = FilePath(folder) / f"upload{suffix}"
        path.write_bytes(data)
        outcome = await service.import_file(
            _pool(request),
            service.ImportRequest(
                kind.value,
                path,
                format=body.format.value,
                all_or_nothing=body.all_or_nothing,
                write_error_file=False,
                file_name=body.file_name or f"upload{suffix}",
            ),
            actor=principal.actor,
            settings=settings,
        )
    return UploadReply(
        job=outcome.job,
        already_done=outcome.already_done,
        applied_now=outcome.applied_now,
        errors=[RowErrorReply.of(e) for e in outcome.errors[: settings.upload_errors_listed]],
    )


@router.get("/jobs", **guarded(Permission.IMPORTS_READ))
async def list_jobs(
    request: Request,
    kind: KindName | None = None,
    status: JobStatus | None = None,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_JOB_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[ImportJob]:
    """Import jobs, newest first; page with `before_id`."""
    return await service.jobs(
        _pool(request),
        kind=kind.value if kind else None,
        status=status.value if status else None,
        before_id=before_id,
        limit=limit,
    )


@router.get("/jobs/{job_id}", **guarded(Permission.IMPORTS_READ))
async def show_job(job_id: JobId, request: Request) -> ImportJob:
    """One import job: its status, rows, position (resumes after it), applied, rejected."""
    return await service.job(_pool(request), job_id)


@router.get("/jobs/{job_id}/errors", **guarded(Permission.IMPORTS_READ))
async def show_job_errors(
    job_id: JobId,
    request: Request,
    after_line: Annotated[int, Query(ge=0, le=MAX_JOB_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
) -> list[RowErrorReply]:
    """A job's rejected rows, by line; page with `after_line`."""
    errors = await service.job_errors(_pool(request), job_id, after_line=after_line, limit=limit)
    return [RowErrorReply.of(e) for e in errors]
