"""schemathesis against a running `bossa serve`, as the product owners run it: every
operation of `/openapi.json`, positive and negative cases, as an admin (so that access
control does not hide the routes' own handling). Checks: no 5xx, and no status code the
document does not list. Bounded by examples per operation (BOSSA_FUZZ_EXAMPLES) so it
takes a minute or two. One worker: with two, hypothesis's code generation raced inside
schemathesis ("AST constructor recursion depth mismatch"), an error of the tool, not of
bossa."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from bossa.customers import load_sample
from tests.foundation.test_serve import status, wait_for
from tests.support import free_port

EXAMPLES = int(os.environ.get("BOSSA_FUZZ_EXAMPLES", "50"))


@pytest.mark.slow
# Every route of every module, fuzzed: minutes on a loaded machine, past the suite's
# default timeout, and bounded by the subprocess's own.
@pytest.mark.timeout(1000)
def test_no_server_error_and_no_undocumented_status(db_url: str, tmp_path: Path) -> None:
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    env = {**os.environ, "BOSSA_DATABASE_URL": db_url, "BOSSA_API_PORT": str(free_port())}
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "bossa.cli",
            "access",
            "token",
            "create",
            "--name",
            "fuzzer",
            "--role",
            "admin",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    token = json.loads(created.stdout)["token"]
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "bossa.cli", "serve"], env=env, stdout=sink, stderr=sink
        )
    base = f"http://127.0.0.1:{env['BOSSA_API_PORT']}"
    try:
        # A loaded machine builds the app slowly (an idle one in seconds).
        wait_for(lambda: status(f"{base}/healthz") == 200, 180)
        # The fuzzer's token works, or every case would only exercise the 401 path.
        whoami = httpx.get(f"{base}/access/whoami", headers={"Authorization": f"Bearer {token}"})
        assert whoami.json()["role"] == "admin"
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                "run",
                f"{base}/openapi.json",
                "--checks",
                "not_a_server_error,status_code_conformance",
                "--header",
                f"Authorization: Bearer {token}",
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                "1",
                "--phases",
                "examples,coverage,fuzzing",
                "--workers",
                "1",
                "--no-color",
                "--request-timeout",
                "30",
                "--generation-database",
                "none",
                "--output-truncate",
                "true",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
            cwd=tmp_path,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    server_log = log.read_text()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Traceback" not in server_log, server_log[-4000:]
    assert token not in server_log
