"""HTTP routes of missed-call alerts: the HTTP intake (M6's request receiver for networks
that do not divert to SIP), the trial set (M5), subscribers and a callee's history.

Each route declares its permission, parses a typed body, calls one service function and
returns a typed model. The actor of every change is the caller's credential.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from bossa.access import Permission
from bossa.access.api import PrincipalDep, guarded
from bossa.alerts import service
from bossa.alerts.models import (
    History,
    MissedCallRequest,
    QuotaRequest,
    Recorded,
    SubscriberRequest,
    SubscriberView,
    TrialRangeRequest,
    TrialSet,
)
from bossa.alerts.settings import AlertsSettings
from bossa.db import Pool
from bossa.runtime import Runtime

__all__ = ["router"]

router = APIRouter(prefix="/alerts", tags=["alerts"])


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
Number = Annotated[str, Path(min_length=1, max_length=64)]
Prefix = Annotated[str, Path(pattern=r"^[1-9][0-9]{0,14}$")]


def _pool(runtime: Runtime) -> Pool:
    return runtime.pool


@router.post("/missed-calls", status_code=202, **guarded(Permission.ALERTS_INTAKE))
async def report_call(
    body: MissedCallRequest, runtime: RuntimeDep, principal: PrincipalDep
) -> Recorded:
    """Record a missed call; the alerts daemon decides and sends its SMS when its window
    closes. The same `reference` twice records one call (`recorded: false`)."""
    window_s = runtime.settings(AlertsSettings).window_s
    return await service.report_call(_pool(runtime), body, window_s=window_s)


@router.get("/trial", **guarded(Permission.ALERTS_READ))
async def trial(runtime: RuntimeDep) -> TrialSet:
    """The trial set: its number ranges, user quota and members."""
    return await service.trial_set(_pool(runtime))


@router.post("/trial/ranges", **guarded(Permission.ALERTS_CONFIGURE))
async def add_range(
    body: TrialRangeRequest, runtime: RuntimeDep, principal: PrincipalDep
) -> TrialSet:
    """Add a number range (a prefix of E.164 digits) to the trial set."""
    return await service.add_trial_range(_pool(runtime), body.prefix, actor=principal.name)


@router.delete("/trial/ranges/{prefix}", **guarded(Permission.ALERTS_CONFIGURE))
async def remove_range(prefix: Prefix, runtime: RuntimeDep, principal: PrincipalDep) -> TrialSet:
    """Remove a number range; 404 when it is not in the set."""
    return await service.remove_trial_range(_pool(runtime), prefix)


@router.put("/trial/quota", **guarded(Permission.ALERTS_CONFIGURE))
async def set_quota(body: QuotaRequest, runtime: RuntimeDep, principal: PrincipalDep) -> TrialSet:
    """Set the user quota: members beyond it stay, no new ones join."""
    return await service.set_trial_quota(_pool(runtime), body.quota, actor=principal.name)


@router.put("/subscribers/{msisdn}", **guarded(Permission.ALERTS_CONFIGURE))
async def register(
    msisdn: Number, body: SubscriberRequest, runtime: RuntimeDep, principal: PrincipalDep
) -> SubscriberView:
    """Register a subscriber (or change their language): message 2 for their calls."""
    return await service.register(_pool(runtime), msisdn, body.lang.value, actor=principal.name)


@router.delete("/subscribers/{msisdn}", status_code=204, **guarded(Permission.ALERTS_CONFIGURE))
async def unregister(msisdn: Number, runtime: RuntimeDep, principal: PrincipalDep) -> None:
    """Unregister a subscriber; 404 when not registered."""
    await service.unregister(_pool(runtime), msisdn)


@router.get("/calls/{callee}", **guarded(Permission.ALERTS_READ))
async def calls(
    callee: Number,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> History:
    """A callee's latest missed calls and the notices that told them."""
    return await service.history(_pool(runtime), callee, limit=limit)
