"""Helpers the tests share: free ports, scratch databases, a PostgreSQL of a test's own."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bossa.access import Role, create_token
from bossa.access.models import TokenRequest
from bossa.api import create_app
from bossa.api.settings import ApiSettings
from bossa.db import EmbeddedPostgres, Pool
from bossa.runtime import Runtime

__all__ = [
    "TEST_PASSWORDS",
    "api_client",
    "bearer",
    "free_port",
    "own_postgres",
    "scratch_database",
    "with_database",
]

#: Passwords the tests give divisions and database URLs. tests/conftest.py fails the run
#: when one appears in any test's captured output, log or failure text (issue 11, point 5).
TEST_PASSWORDS = ("pw-TEST-9f3c1e",)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def with_database(url: str, name: str) -> str:
    return make_conninfo(url, dbname=name)


@contextlib.contextmanager
def scratch_database(admin_url: str, *, template: str | None = None) -> Iterator[str]:
    """A new database (copied from `template` if given), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        statement = sql.SQL("create database {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" template {}").format(sql.Identifier(template))
        conn.execute(statement)
    try:
        yield with_database(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def own_postgres(*, durable: bool = False) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of the test's own on a free TCP port: for tests that stop or kill it."""
    base = Path(tempfile.mkdtemp(prefix="bossa-pg-"))
    # mkdtemp makes it private (0700); run as root, the server's own user must enter it,
    # or its cluster would move to /var/lib/bossa/clusters. The folder is the test's own.
    base.chmod(0o755)
    server = EmbeddedPostgres(base, port=free_port(), database="bossa", durable=durable)
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def xdist_worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


async def bearer(pool: Pool, role: Role = Role.ADMIN, *, name: str | None = None) -> dict[str, str]:
    """An Authorization header with a fresh API token of `role` (one argon2 hash: ~50 ms)."""
    request = TokenRequest(name=name or f"test-{role}-{uuid.uuid4().hex[:8]}", role=role)
    created = await create_token(pool, request, actor="test")
    return {"Authorization": f"Bearer {created.token}"}


@contextlib.asynccontextmanager
async def api_client(
    runtime: Runtime, *, role: Role | None = Role.ADMIN, settings: ApiSettings | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app in-process, around `runtime` (see `Runtime.around`), sending
    a token of `role` on every request (`role=None`: no credential)."""
    app = create_app(settings=settings)
    app.state.runtime = runtime
    headers = {} if role is None else await bearer(runtime.pool, role)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://bossa", headers=headers
    ) as http:
        yield http
