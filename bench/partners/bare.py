"""The open API's peer bound: the same work as a run of the bench's template, written with
nothing but a bare ASGI function and psycopg, served by the same uvicorn.

Per request: the JSON body parsed and its two inputs checked; the token's row read (live,
not expired, role partner; the secret compared with a SHA-256 remembered per token, as
bossa's authenticator does once it has verified the argon2 hash); an in-memory token
bucket and daily counter (no quota row in PostgreSQL); the subscriber's contracts read;
then the run's row and its billing log (a journal entry on `partners.billing`) written by
one statement and committed (fsync) before the answer. No framework, no validation
models, no group commit: what a hand-written service of the same durability costs.

Run by bench/partners/run.py as `uvicorn bench.partners.bare:app`, with
BOSSA_DATABASE_URL set.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

_TOKEN_ROW = (
    "select name, role, secret_hash from access.tokens where id = %s and revoked_at is null"
    " and (expires_at is null or expires_at > now())"
)
_STATUS = "select status from customers.contracts where customer_id = %s"
_WRITE = """
with run as (
    insert into partners.runs (partner, template, version, mode, state, input, output, actor,
                               finished_at)
    values (%(partner)s, 'status', 1, 'sync', 'done', %(input)s, %(output)s, %(actor)s, now())
    returning id, created_at, finished_at
), log as (
    insert into journal.entries (lane, kind, payload, state, created_by)
    select 'partners.billing', 'billing-log',
           jsonb_build_object('run_id', run.id, 'partner', %(partner)s, 'template', 'status',
                              'version', 1, 'used_at', run.finished_at, 'units', 0,
                              'charged', 0, 'currency', null),
           'ready', 'bare'
    from run
)
select id, created_at, finished_at from run
"""

_pool: AsyncConnectionPool | None = None
_verified: dict[str, bytes] = {}
_bucket = [100_000.0, time.monotonic()]
_used = [0]
_HASHER = PasswordHasher()


async def _send(send: Any, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body, default=str).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _pool
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _pool = AsyncConnectionPool(
                    os.environ["BOSSA_DATABASE_URL"],
                    min_size=10,
                    max_size=10,
                    kwargs={"autocommit": True, "row_factory": dict_row},
                    open=False,
                )
                await _pool.open(wait=True)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _pool is not None:
                    await _pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    credential = headers.get(b"authorization", b"").decode().removeprefix("Bearer ")
    token_id, _, secret = credential.removeprefix("bossa_").partition("_")
    if len(token_id) != 16 or not secret:
        await _send(send, 401, {"error": "unauthenticated"})
        return
    try:
        run_input = json.loads(body)["input"]
        subscriber, amount = run_input["subscriber"], run_input["amount"]
        if not isinstance(subscriber, str) or not isinstance(amount, int):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        await _send(send, 422, {"error": "bad input"})
        return
    assert _pool is not None
    async with _pool.connection() as conn:
        row: Any = await (await conn.execute(_TOKEN_ROW, (token_id,), prepare=True)).fetchone()
        if row is None or row["role"] != "partner":
            await _send(send, 401, {"error": "unauthenticated"})
            return
        digest = hashlib.sha256(secret.encode()).digest()
        known = _verified.get(token_id)
        if known is None or not hmac.compare_digest(known, digest):
            try:
                _HASHER.verify(row["secret_hash"], secret)
            except VerificationError:
                await _send(send, 401, {"error": "unauthenticated"})
                return
            _verified[token_id] = digest
        now = time.monotonic()
        _bucket[0] = min(100_000.0, _bucket[0] + (now - _bucket[1]) * 100_000)
        _bucket[1] = now
        if _bucket[0] < 1 or _used[0] >= 10**9:
            await _send(send, 429, {"error": "rate"})
            return
        _bucket[0] -= 1
        _used[0] += 1
        contracts: list[Any] = await (
            await conn.execute(_STATUS, (subscriber,), prepare=True)
        ).fetchall()
        states = {c["status"] for c in contracts}
        status = next((s for s in ("active", "suspended", "terminated") if s in states), "unknown")
        written: Any = await (
            await conn.execute(
                _WRITE,
                {
                    "partner": row["name"],
                    "input": json.dumps(run_input),
                    "output": json.dumps({"status": status}),
                    "actor": f"token:{row['name']}",
                },
                prepare=True,
            )
        ).fetchone()
    assert written is not None
    await _send(
        send,
        200,
        {
            "id": written["id"],
            "template": "status",
            "version": 1,
            "partner": row["name"],
            "state": "done",
            "output": {"status": status},
            "error": None,
            "created_at": written["created_at"].isoformat(),
            "finished_at": written["finished_at"].isoformat(),
        },
    )
