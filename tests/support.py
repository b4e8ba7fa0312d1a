"""Helpers the tests share: free ports, scratch databases, a PostgreSQL of a test's own."""

from __future__ import annotations

import contextlib
import os
import re
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
    "drop_database",
    "free_port",
    "own_postgres",
    "scratch_database",
    "sweep_orphans",
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
    # The creating process's pid in the name: a run killed before its clean-up leaves a
    # database that the next run's `sweep_orphans` recognises as nobody's.
    name = f"t_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        statement = sql.SQL("create database {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" template {}").format(sql.Identifier(template))
        conn.execute(statement)
    try:
        yield with_database(admin_url, name)
    finally:
        drop_database(admin_url, name)


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


#: The databases the test fixtures create: `bossa_tpl_<worker>_<pid>` and `t_<pid>_<hex>`.
_OURS = re.compile(r"^(?:bossa_tpl_[A-Za-z0-9]+_(\d{1,9})_?|t_(\d{1,9})_[0-9a-f]{12})$")


def sweep_orphans(admin_url: str) -> list[str]:
    """Drop the test databases whose creating process is gone (a run killed before its
    clean-up), on this host's test server; one still in use is left alone (no force).
    Returns the names dropped."""
    dropped: list[str] = []
    with psycopg.connect(admin_url, autocommit=True) as conn:
        names = [str(r[0]) for r in conn.execute("select datname from pg_database").fetchall()]
        for name in names:
            found = _OURS.match(name)
            if found is None or _alive(int(found.group(1) or found.group(2))):
                continue
            with contextlib.suppress(psycopg.Error):
                conn.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(name)))
                dropped.append(name)
    return dropped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_database(admin_url: str, name: str) -> None:
    statement = sql.SQL("drop database if exists {} with (force)")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement.format(sql.Identifier(name)))


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
