"""HTTP face of the partner platform.

The open interface (O2), permission `partner.use`: a partner's token (role partner) runs
and reads its own templates and runs; another partner's read as unknown (404). The
operator's routes, permission `partners.configure`: partners and their limits, templates,
legacy systems, billing policies, MDR files, corrections.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from bossa.access import Permission
from bossa.access.api import DeferredPrincipalDep, PrincipalDep, guarded, guarded_deferred
from bossa.errors import ErrorBody
from bossa.partners import service
from bossa.partners.models import (
    PartnerInfo,
    PartnerRequest,
    PolicyRequest,
    RunAccepted,
    RunMode,
    RunResult,
    SystemRequest,
    TemplateInfo,
    TemplateRequest,
)
from bossa.runtime import Runtime

__all__ = ["router"]

router = APIRouter(prefix="/partners", tags=["partners"])

_RUN_ERRORS: dict[str, dict[str, Any]] = {
    "202": {"model": RunAccepted, "description": "Queued (mode=async); read it at Location"},
    "404": {"model": ErrorBody, "description": "No such template (or not the caller's)"},
    "422": {"model": ErrorBody, "description": "The input does not fit the template"},
    "429": {"model": ErrorBody, "description": "Over the rate limit or the daily quota"},
}
_404 = {"404": {"model": ErrorBody, "description": "No such partner, template or run"}}
_409 = {"409": {"model": ErrorBody, "description": "In conflict with what exists"}}
_TEMPLATE = Path(pattern=r"^[a-z][a-z0-9-]{0,63}$", description="The template's name")


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(description="The template's inputs by name")


class PolicyInfo(PolicyRequest):
    id: int


class SystemInfo(BaseModel):
    role: str
    kind: str
    url: str
    timeout_ms: int
    statements: dict[str, str]


class FileInfo(BaseModel):
    seq: int
    name: str
    sender: str
    recipient: str
    test: bool
    records: int
    units: int
    charged: int
    fee: int
    share: int
    checksum: str
    bytes: int
    state: str
    attempts: int
    last_error: str | None


class ObjectResult(BaseModel):
    object: str
    output: dict[str, str | int | bool] = Field(description="The object's outputs by name")


class Correction(BaseModel):
    run: int
    record: int


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


# -- the open interface ------------------------------------------------------------------


@router.post("/templates/{name}/runs", **guarded_deferred(Permission.PARTNER_USE, **_RUN_ERRORS))
async def run_template(
    name: Annotated[str, _TEMPLATE],
    body: RunRequest,
    request: Request,
    response: Response,
    principal: DeferredPrincipalDep,
    mode: Annotated[RunMode, Query(description="sync: answer with the result; async: 202")] = (
        RunMode.SYNC
    ),
) -> RunResult | RunAccepted:
    """Run a template. sync answers with the result once it and its billing log are
    committed; async answers at once with the run's id, to read at its location. The
    token is confirmed by the service before the run has any effect (a deferred
    principal)."""
    runtime = _runtime(request)
    plat = service.platform(
        runtime.pool, runtime.journal, runtime.settings(service.PartnersSettings)
    )
    result = await service.run_template(plat, name, body.input, principal=principal, mode=mode)
    if isinstance(result, RunAccepted):
        response.status_code = 202
        response.headers["Location"] = result.location
    return result


@router.get("/runs/{run_id}", **guarded(Permission.PARTNER_USE, **_404))
async def get_run(
    run_id: Annotated[int, Path(ge=1, le=2**63 - 1)], request: Request, principal: PrincipalDep
) -> RunResult:
    """A run: queued, done (with its output) or failed (with its error)."""
    return await service.get_run(_runtime(request).pool, run_id, principal=principal)


@router.get("/templates", **guarded(Permission.PARTNER_USE))
async def list_templates(
    request: Request,
    principal: PrincipalDep,
    partner: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TemplateInfo]:
    """Templates at their latest version: a partner sees its own."""
    return await service.list_templates(
        _runtime(request).pool, principal=principal, partner=partner, limit=limit
    )


@router.get("/templates/{name}", **guarded(Permission.PARTNER_USE, **_404))
async def get_template(
    name: Annotated[str, _TEMPLATE],
    request: Request,
    principal: PrincipalDep,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> TemplateInfo:
    """A template at its latest version, or at `version`."""
    return await service.get_template(
        _runtime(request).pool, name, principal=principal, version=version
    )


@router.post(
    "/objects/{name}",
    **guarded(
        Permission.PARTNERS_INFRA,
        **{
            "422": {"model": ErrorBody, "description": "Unknown object or unfit input"},
            "502": {"model": ErrorBody, "description": "The legacy system did not answer"},
        },
    ),
)
async def run_object(
    name: Annotated[str, Path(pattern=r"^[a-z][a-z0-9._]{0,63}$")],
    body: RunRequest,
    request: Request,
    principal: PrincipalDep,
) -> ObjectResult:
    """The infra channel (O4): a legacy system runs one biz object; not billed."""
    runtime = _runtime(request)
    plat = service.platform(
        runtime.pool, runtime.journal, runtime.settings(service.PartnersSettings)
    )
    output = await service.run_object(plat, name, body.input, actor=principal.actor)
    return ObjectResult(object=name, output=output)


# -- the operator's ----------------------------------------------------------------------


@router.post(
    "/templates", status_code=201, **guarded(Permission.PARTNERS_CONFIGURE, **_404, **_409)
)
async def register_template(
    body: TemplateRequest, request: Request, principal: PrincipalDep
) -> TemplateInfo:
    """Check a template and store it as its next version; errors name the step."""
    return await service.register_template(_runtime(request).pool, body, actor=principal.actor)


@router.put("/partners", **guarded(Permission.PARTNERS_CONFIGURE))
async def set_partner(
    body: PartnerRequest, request: Request, principal: PrincipalDep
) -> PartnerInfo:
    """Create a partner or change its limits. Its tokens (role partner) carry its name."""
    return await service.set_partner(_runtime(request).pool, body, actor=principal.actor)


@router.get("/partners", **guarded(Permission.PARTNERS_CONFIGURE))
async def list_partners(request: Request) -> list[PartnerInfo]:
    """Every partner."""
    return await service.list_partners(_runtime(request).pool)


@router.put("/systems", **guarded(Permission.PARTNERS_CONFIGURE))
async def set_system(body: SystemRequest, request: Request, principal: PrincipalDep) -> SystemInfo:
    """Register or change the legacy system objects reach by a role (sms, location)."""
    row = await service.set_system(_runtime(request).pool, body, actor=principal.actor)
    return SystemInfo.model_validate(row)


@router.get("/systems", **guarded(Permission.PARTNERS_CONFIGURE))
async def list_systems(request: Request) -> list[SystemInfo]:
    """The legacy systems."""
    return [
        SystemInfo.model_validate(r) for r in await service.list_systems(_runtime(request).pool)
    ]


@router.post("/policies", status_code=201, **guarded(Permission.PARTNERS_CONFIGURE, **_404, **_409))
async def add_policy(body: PolicyRequest, request: Request, principal: PrincipalDep) -> PolicyInfo:
    """A billing policy version, in force from its date."""
    policy = await service.add_policy(_runtime(request).pool, body, actor=principal.actor)
    return PolicyInfo.model_validate(policy, from_attributes=True)


@router.get("/files", **guarded(Permission.PARTNERS_CONFIGURE))
async def list_files(
    request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[FileInfo]:
    """MDR files, newest first, with their transfer state."""
    rows = await service.list_files(_runtime(request).pool, limit=limit)
    return [FileInfo.model_validate(r) for r in rows]


@router.post(
    "/runs/{run_id}/correction",
    status_code=201,
    **guarded(Permission.PARTNERS_CONFIGURE, **_404, **_409),
)
async def correct(
    run_id: Annotated[int, Path(ge=1, le=2**63 - 1)], request: Request, principal: PrincipalDep
) -> Correction:
    """Reverse a billed run: a correction record in a later MDR file."""
    record = await service.correct(_runtime(request).pool, run_id, actor=principal.actor)
    return Correction(run=run_id, record=record)
