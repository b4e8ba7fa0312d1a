"""HTTP face of access control: who the caller is, what each route needs, and the token
routes.

Every route of every module declares its permission with `**guarded(Permission.X)`: the
check runs as a FastAPI dependency, and the permission is written into `/openapi.json`
as `x-bossa-permission`, where the role-matrix test finds it (a route without one fails
that test). `PrincipalDep` gives a route the authenticated caller, whose `actor` is what
audits record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from bossa.access import service
from bossa.access.models import (
    ROLE_PERMISSIONS,
    Permission,
    Principal,
    TokenCreated,
    TokenInfo,
    TokenRequest,
    WhoAmI,
)
from bossa.access.service import Authenticator
from bossa.db import Pool
from bossa.errors import ErrorBody
from bossa.runtime import Runtime

__all__ = [
    "PERMISSION_KEY",
    "DeferredPrincipalDep",
    "PrincipalDep",
    "guarded",
    "guarded_deferred",
    "router",
]

PERMISSION_KEY = "x-bossa-permission"

router = APIRouter(prefix="/access", tags=["access"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorBody,
        "description": "No credential, or an unknown, expired or revoked one",
    },
    403: {"model": ErrorBody, "description": "The credential's role may not do this"},
}


async def current_principal(request: Request) -> Principal:
    """The caller, authenticated once per request."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    runtime: Runtime = request.app.state.runtime
    authenticator: Authenticator = runtime.authenticator
    principal = await authenticator.authenticate(request.headers.get("authorization"))
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def deferred_principal(request: Request) -> Principal:
    """The caller, maybe unconfirmed (`Principal.confirmed`): for a route that confirms
    the token itself before any effect, in the transaction that makes its change."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    runtime: Runtime = request.app.state.runtime
    authenticator: Authenticator = runtime.authenticator
    principal = await authenticator.authenticate(
        request.headers.get("authorization"), deferred=True
    )
    request.state.principal = principal
    return principal


DeferredPrincipalDep = Annotated[Principal, Depends(deferred_principal)]


def _needs(permission: Permission) -> Callable[[Principal], Awaitable[None]]:
    async def check(principal: PrincipalDep) -> None:
        service.require(principal, permission)

    return check


def _needs_deferred(permission: Permission) -> Callable[[Principal], Awaitable[None]]:
    async def check(principal: DeferredPrincipalDep) -> None:
        service.require(principal, permission)

    return check


def guarded(permission: Permission, **responses: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for a route decorator: the permission it needs, enforced and
    documented, with the 401 and 403 answers in its OpenAPI responses."""
    return _guarded(_needs(permission), permission, responses)


def guarded_deferred(permission: Permission, **responses: dict[str, Any]) -> dict[str, Any]:
    """`guarded` for a route that takes `DeferredPrincipalDep` and confirms the token
    itself before any effect."""
    return _guarded(_needs_deferred(permission), permission, responses)


def _guarded(
    check: Callable[[Principal], Awaitable[None]],
    permission: Permission,
    responses: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    return {
        "dependencies": [Depends(check)],
        "openapi_extra": {PERMISSION_KEY: permission.value},
        "responses": {**_ERRORS, **{int(k): v for k, v in responses.items()}},
    }


def _pool(request: Request) -> Pool:
    runtime: Runtime = request.app.state.runtime
    return runtime.pool


@router.post("/tokens", status_code=201, **guarded(Permission.ACCESS_ADMIN))
async def create_token(
    body: TokenRequest, request: Request, principal: PrincipalDep
) -> TokenCreated:
    """Create an API token; its text is in this answer only, never again."""
    return await service.create_token(_pool(request), body, actor=principal.actor)


@router.get("/tokens", **guarded(Permission.ACCESS_ADMIN))
async def list_tokens(
    request: Request,
    include_revoked: Annotated[bool, Query(description="Revoked tokens too")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TokenInfo]:
    """Tokens, newest first, never their secrets."""
    return await service.list_tokens(_pool(request), include_revoked=include_revoked, limit=limit)


@router.delete("/tokens/{ref}", **guarded(Permission.ACCESS_ADMIN))
async def revoke_token(ref: str, request: Request, principal: PrincipalDep) -> TokenInfo:
    """Revoke a token by id or name; its next request is refused."""
    return await service.revoke_token(_pool(request), ref, actor=principal.actor)


@router.get("/whoami", **guarded(Permission.SELF_READ))
async def whoami(principal: PrincipalDep) -> WhoAmI:
    """The caller as bossa sees it: name, role, and what the role may do."""
    return WhoAmI(
        name=principal.name,
        role=principal.role,
        via=principal.via,
        permissions=sorted(ROLE_PERMISSIONS[principal.role]),
    )
