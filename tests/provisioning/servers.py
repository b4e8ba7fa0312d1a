"""Real downstream divisions for the adapter tests, each in its own process on a free port.

Every server offers `url`, `stop()` and `start()` (same port, same data) so a test can
take a division down and bring it back. The machine's shared services are never touched.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import redis

from tests.support import free_port, own_postgres

__all__ = [
    "MariaDbServer",
    "PostgresTarget",
    "ServerProcess",
    "mariadb_server",
    "postgres_target",
    "redis_server",
    "rest_server",
    "soap_server",
]

HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 30.0


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


class ServerProcess:
    """One server process on a fixed port; start() waits until `ready()` holds."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        port: int,
        workdir: Path,
        url: str,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.workdir = workdir
        self.url = url
        self._ready = ready or (lambda: _port_open(port))
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self._log_tail()}")
            if self._ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not ready in {START_TIMEOUT_S}s:\n{self._log_tail()}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait until its port is closed."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""


class _Recording(ServerProcess):
    """A SOAP or REST test server that records applied calls in a SQLite file."""

    db_path: Path

    def applied(self) -> list[dict[str, Any]]:
        with contextlib.closing(sqlite3.connect(self.db_path)) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("select * from applied order by seq").fetchall()
        return [dict(row) for row in rows]


class SoapServer(_Recording):
    def applied(self) -> list[dict[str, Any]]:
        """Applied calls in order: message_id, operation, params (a dict)."""
        return [{**row, "params": json.loads(row["params"])} for row in super().applied()]


class RestServer(_Recording):
    def applied(self) -> list[dict[str, Any]]:
        """Applied calls in order: idempotency_key, message_id, method, path, body."""
        rows = super().applied()
        return [{**row, "body": json.loads(row["body"]) if row["body"] else None} for row in rows]


@contextlib.contextmanager
def _workdir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _running(server: ServerProcess) -> Iterator[Any]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def soap_server() -> Iterator[SoapServer]:
    """The spyne division; `url` is its WSDL (http://127.0.0.1:N/?wsdl)."""
    with _workdir("bossa-soap-") as work:
        port = free_port()
        db = work / "applied.sqlite"
        argv = [sys.executable, str(HERE / "soap_server.py"), "--port", str(port), "--db", str(db)]
        server = SoapServer(
            "soap", argv, port=port, workdir=work, url=f"http://127.0.0.1:{port}/?wsdl"
        )
        server.db_path = db
        with _running(server) as running:
            yield running


@contextlib.contextmanager
def rest_server() -> Iterator[RestServer]:
    """The HTTP division; `url` is its base URL (http://127.0.0.1:N)."""
    with _workdir("bossa-rest-") as work:
        port = free_port()
        db = work / "applied.sqlite"
        argv = [sys.executable, str(HERE / "rest_server.py"), "--port", str(port), "--db", str(db)]
        server = RestServer("rest", argv, port=port, workdir=work, url=f"http://127.0.0.1:{port}")
        server.db_path = db
        with _running(server) as running:
            yield running


@contextlib.contextmanager
def redis_server() -> Iterator[ServerProcess]:
    """A Redis of the test's own, no persistence; `url` is redis://127.0.0.1:N/0."""
    with _workdir("bossa-redis-") as work:
        port = free_port()
        argv = [
            "/usr/bin/redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(work),
        ]
        url = f"redis://127.0.0.1:{port}/0"

        def ready() -> bool:
            try:
                with redis.Redis.from_url(url, socket_connect_timeout=0.2) as client:
                    return bool(client.ping())
            except redis.RedisError:
                return False

        with _running(
            ServerProcess("redis", argv, port=port, workdir=work, url=url, ready=ready)
        ) as s:
            yield s


class MariaDbServer(ServerProcess):
    """mariadbd with its own datadir and socket; `url` is mysql+pymysql://root@...:N/test."""

    def connect(self, database: str | None = "test") -> pymysql.connections.Connection[Any]:
        return pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", database=database, autocommit=True
        )


@contextlib.contextmanager
def mariadb_server() -> Iterator[MariaDbServer]:
    with _workdir("bossa-mariadb-") as work:
        port = free_port()
        data = work / "data"
        install = subprocess.run(
            [
                "/usr/bin/mariadb-install-db",
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if install.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{install.stdout}\n{install.stderr}")
        argv = [
            "/usr/sbin/mariadbd",
            "--no-defaults",
            f"--datadir={data}",
            f"--socket={work / 'mysqld.sock'}",
            f"--pid-file={work / 'mysqld.pid'}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            "--user=root",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
        ]
        server = MariaDbServer(
            "mariadb",
            argv,
            port=port,
            workdir=work,
            url=f"mysql+pymysql://root@127.0.0.1:{port}/test",
        )

        def ready() -> bool:
            try:
                server.connect(None).close()
            except pymysql.MySQLError:
                return False
            return True

        server._ready = ready
        with _running(server):
            with contextlib.closing(server.connect(None)) as conn, conn.cursor() as cur:
                cur.execute("create database if not exists test")
            yield server


class PostgresTarget:
    """A PostgreSQL division of the test's own; `url` is postgresql+psycopg://...:N/bossa."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self.url = server.url().replace("postgresql://", "postgresql+psycopg://", 1)
        self.dsn = server.url()  # for psycopg.connect in the tests

    def stop(self) -> None:
        self._server.stop()

    def start(self) -> None:
        self._server.start()


@contextlib.contextmanager
def postgres_target() -> Iterator[PostgresTarget]:
    with own_postgres(durable=False) as server:
        yield PostgresTarget(server)
