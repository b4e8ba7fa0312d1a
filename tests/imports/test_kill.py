"""A real kill: `bossa import contracts FILE` in a child process, SIGKILLed half-way
through applying; run again with the same file, it resumes after the last committed
chunk, rejects nothing as "exists already" and imports every row exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bossa.db import Pool
from bossa.imports import ImportRequest, ImportSettings, import_file
from tests.imports.files import CONTRACT_COLUMNS, contract, load_operator, write_csv

CUSTOMERS = 100
CONTRACTS = 30_000
CHUNK = 100


async def job_state(pool: Pool) -> tuple[str, int, int] | None:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "select status, position, applied from imports.jobs where kind = 'contracts'"
            )
        ).fetchone()
    return None if row is None else (row["status"], row["position"], row["applied"])


async def count(pool: Pool) -> int:
    async with pool.connection() as conn:
        row = await (
            await conn.execute("select count(*) as n from customers.contract_rows")
        ).fetchone()
    assert row is not None
    return int(row["n"])


async def test_sigkill_half_way_then_again_imports_each_row_once(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    await load_operator(pool, tmp_path, CUSTOMERS)
    path = write_csv(
        tmp_path / "contracts.csv",
        CONTRACT_COLUMNS,
        (contract(i, CUSTOMERS) for i in range(CONTRACTS)),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOSSA_")}
    env.update(
        BOSSA_DATABASE_URL=db_url,
        BOSSA_ACCESS_CLI_ACTOR="ops-kim",
        BOSSA_IMPORTS_CHUNK_ROWS=str(CHUNK),
    )
    child = subprocess.Popen(  # noqa: ASYNC220 (started once; polled without blocking)
        [sys.executable, "-m", "bossa.cli", "import", "contracts", str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        state = None
        # Half-way: some chunks committed, many to go.
        while time.monotonic() < deadline:
            state = await job_state(pool)
            if state is not None and state[1] >= CONTRACTS // 4:
                break
            assert child.poll() is None, (
                f"the import ended (exit {child.returncode}) before it could be killed"
            )
            await asyncio.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    await asyncio.sleep(0.2)  # the server ends the killed session's transaction
    killed = await job_state(pool)
    assert killed is not None
    status, position, applied = killed
    assert status == "running"
    assert 0 < position < CONTRACTS + 1, killed
    # What the job says is applied is what is in: the position moved with its chunk.
    assert await count(pool) == applied
    assert applied == position - 1  # lines 2..position, no row rejected

    outcome = await import_file(
        pool,
        ImportRequest("contracts", path),
        actor="ops",
        settings=ImportSettings(chunk_rows=5_000),
    )
    assert outcome.job.status == "done"
    assert outcome.job.rejected == 0  # no row of the first run came back "exists already"
    assert outcome.applied_now == CONTRACTS - applied
    assert outcome.job.applied == CONTRACTS
    assert await count(pool) == CONTRACTS
    again = await import_file(
        pool, ImportRequest("contracts", path), actor="ops", settings=ImportSettings()
    )
    assert (again.already_done, again.applied_now) == (True, 0)
    assert await count(pool) == CONTRACTS
