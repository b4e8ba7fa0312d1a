"""`bossa access ...`: API tokens and the role matrix."""

from __future__ import annotations

from typing import Annotated

import typer

from bossa.access import service
from bossa.access.models import ROLE_PERMISSIONS, Permission, Role, TokenRequest
from bossa.access.settings import AccessSettings
from bossa.clitools import JsonOpt, with_runtime
from bossa.terminal import out, print_json, table

__all__ = ["access_app"]

access_app = typer.Typer(help="Who may use the API: tokens and roles.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (stored hashed; shown once).", no_args_is_help=True)
access_app.add_typer(token_app, name="token")

_COLUMNS = [
    "id",
    "name",
    "role",
    "created_at",
    "created_by",
    "expires_at",
    "revoked_at",
    "last_used_at",
]


def _actor() -> str:
    return service.cli_principal(AccessSettings()).actor


@token_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="Who or what holds it; recorded as the actor.")],
    role: Annotated[Role, typer.Option(help="What it may do (see `bossa access roles`).")],
    expires_days: Annotated[
        int | None, typer.Option(help="Days until it stops working (1-3650).")
    ] = 90,
    no_expiry: Annotated[bool, typer.Option("--no-expiry", help="Never expires.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a token and print it: this is the only time it is shown."""
    request = TokenRequest(name=name, role=role, expires_days=None if no_expiry else expires_days)
    actor = _actor()
    created = with_runtime(lambda rt: service.create_token(rt.pool, request, actor=actor))
    if as_json:
        print_json(created.model_dump(mode="json"))
        return
    expires = created.expires_at or "never"
    out.print(f"token {created.id} for {created.name} ({created.role}), expires {expires}")
    out.print("store it now; bossa keeps only its hash:", highlight=False)
    out.print(created.token, markup=False, highlight=False, soft_wrap=True)


@token_app.command("list")
def list_(
    include_revoked: Annotated[bool, typer.Option("--all", help="Revoked tokens too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Tokens, newest first (never their secrets)."""
    tokens = with_runtime(lambda rt: service.list_tokens(rt.pool, include_revoked=include_revoked))
    rows = [t.model_dump(mode="json") for t in tokens]
    if as_json:
        print_json(rows)
        return
    table(rows, _COLUMNS)


@token_app.command("revoke")
def revoke(ref: Annotated[str, typer.Argument(help="The token's id or name.")]) -> None:
    """Revoke a token: its next request is refused."""
    actor = _actor()
    info = with_runtime(lambda rt: service.revoke_token(rt.pool, ref, actor=actor))
    out.print(f"token {info.id} ({info.name}) revoked")


@access_app.command("roles")
def roles(as_json: JsonOpt = False) -> None:
    """What each role may do."""
    matrix = {role.value: sorted(p.value for p in ROLE_PERMISSIONS[role]) for role in Role}
    if as_json:
        print_json(matrix)
        return
    table(
        [
            {
                "permission": p.value,
                **{r.value: "yes" if p in ROLE_PERMISSIONS[r] else "" for r in Role},
            }
            for p in Permission
        ],
        ["permission", *(r.value for r in Role)],
    )
