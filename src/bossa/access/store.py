"""Access control's named queries: tokens created, read for authentication, listed, revoked."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bossa.access.models import TokenInfo
from bossa.db import Conn
from bossa.sql import load_queries

__all__ = [
    "create_token",
    "live_tokens",
    "revoke_token",
    "token_for_auth",
    "tokens",
    "touch_token",
]

QUERIES = load_queries("bossa.access", "sql/queries.sql")


async def create_token(
    conn: Conn,
    *,
    token_id: str,
    name: str,
    role: str,
    secret_hash: str,
    created_by: str,
    expires_at: datetime | None,
) -> TokenInfo:
    row = await (
        await conn.execute(
            QUERIES["create_token"],
            {
                "id": token_id,
                "name": name,
                "role": role,
                "secret_hash": secret_hash,
                "created_by": created_by,
                "expires_at": expires_at,
            },
        )
    ).fetchone()
    assert row is not None
    return TokenInfo.model_validate(row)


async def token_for_auth(conn: Conn, token_id: str) -> dict[str, Any] | None:
    return await (await conn.execute(QUERIES["token_for_auth"], {"id": token_id})).fetchone()


async def live_tokens(conn: Conn, token_ids: list[str]) -> set[str]:
    rows = await (
        await conn.execute(QUERIES["live_tokens"], {"ids": token_ids}, prepare=True)
    ).fetchall()
    return {str(row["id"]) for row in rows}


async def touch_token(conn: Conn, token_id: str) -> None:
    await conn.execute(QUERIES["touch_token"], {"id": token_id})


async def tokens(conn: Conn, *, include_revoked: bool, limit: int) -> list[TokenInfo]:
    rows = await (
        await conn.execute(QUERIES["tokens"], {"include_revoked": include_revoked, "limit": limit})
    ).fetchall()
    return [TokenInfo.model_validate(row) for row in rows]


async def revoke_token(conn: Conn, ref: str, *, actor: str) -> TokenInfo | None:
    row = await (
        await conn.execute(QUERIES["revoke_token"], {"ref": ref, "actor": actor})
    ).fetchone()
    return None if row is None else TokenInfo.model_validate(row)
