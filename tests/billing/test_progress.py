"""A bill run's progress has one shape (RunProgress) on both edges: the API's
GET /billing/runs/{run}/progress, the CLI's `run progress` (JSON, or `--follow`: a bar
on a terminal, plain lines otherwise) and `run bill`'s bar; phase, accounts total and
billed, rate and time left follow the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from bossa.billing import bill, settle
from bossa.billing.models import RunPhase, RunProgress, RunStatus, run_progress
from bossa.billing.service import run_progress_of
from bossa.journal import Journal
from bossa.runtime import Runtime
from tests.billing.conftest import month, open_run
from tests.support import api_client


def bossa(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bossa.cli", *args],
        env={**os.environ, "BOSSA_DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_progress_follows_a_run_on_both_edges(
    journal: Journal, accounts: list[str], db_url: str
) -> None:
    run = await open_run(journal.pool, month(1))
    waiting = await run_progress_of(journal.pool, run)
    assert (waiting.phase, waiting.accounts_total, waiting.accounts_billed) == (
        RunPhase.WAITING,
        4,
        0,
    )
    assert (waiting.rate_per_s, waiting.eta_s, waiting.ratio) == (None, None, 0.0)

    seen: list[RunProgress] = []
    assert await bill(journal.pool, run, chunk=1, progress=seen.append) == 4
    # One report per chunk, counting up; while billing, a rate and the time left.
    assert [p.accounts_billed for p in seen] == [1, 2, 3, 4]
    assert all(p.accounts_total == 4 for p in seen)
    assert seen[0].phase is RunPhase.BILLING
    assert seen[0].rate_per_s is not None
    assert seen[0].rate_per_s > 0
    assert seen[0].eta_s is not None
    assert seen[0].eta_s > 0
    billed = await run_progress_of(journal.pool, run)
    assert (billed.phase, billed.status, billed.ratio, billed.eta_s) == (
        RunPhase.SETTLING,
        RunStatus.SETTLING,
        1.0,
        0.0,
    )
    await settle(journal.pool, run)
    done = await run_progress_of(journal.pool, run)
    assert done.phase is RunPhase.SETTLED
    assert done.rate_per_s is not None

    runtime = Runtime.around(db_url, journal, embedded=False)
    async with api_client(runtime, role="read-only") as http:
        answer = await http.get(f"/billing/runs/{run}/progress")
        missing = await http.get("/billing/runs/424242/progress")
    await runtime.deliverer.close()
    assert answer.status_code == 200, answer.text
    assert RunProgress.model_validate(answer.json()) == done
    assert missing.status_code == 404
    assert missing.json()["field"] == "run"

    cli = bossa(db_url, "billing", "run", "progress", str(run))
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == answer.json()
    # Not a terminal: --follow prints plain lines and ends once billing is over.
    followed = bossa(db_url, "billing", "run", "progress", str(run), "--follow")
    assert followed.returncode == 0, followed.stderr
    assert (
        followed.stdout.strip()
        .splitlines()[-1]
        .startswith(f"bill run {run}: settled 4/4 accounts (100.0%)")
    )
    assert "\x1b[" not in followed.stdout  # no bar, no colour codes in a pipe
    gone = bossa(db_url, "billing", "run", "progress", "424242")
    assert gone.returncode == 2
    assert gone.stderr.strip() == "error: run: no bill run 424242"


def test_a_stalled_run_has_a_zero_rate_and_no_eta() -> None:
    now = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    row = {
        "id": 7,
        "status": "running",
        "accounts_total": 1000,
        "billed": 400,
        "recent_billed": 0,
        "recent_since": None,
        "first_started": now - timedelta(minutes=10),
        "last_finished": now - timedelta(minutes=5),
        "now": now,
        "staged_unsettled": 3,
        "started_at": now - timedelta(minutes=11),
        "billed_at": None,
        "settled_at": None,
    }
    stalled = run_progress(row)
    assert (stalled.phase, stalled.rate_per_s, stalled.eta_s) == (RunPhase.BILLING, 0.0, None)
    moving = run_progress(
        {**row, "recent_billed": 200, "recent_since": now - timedelta(seconds=40)}
    )
    assert moving.rate_per_s == 5.0  # 200 accounts in the last 40 s
    assert moving.eta_s == 120.0  # 600 left
    assert moving.ratio == 0.4
