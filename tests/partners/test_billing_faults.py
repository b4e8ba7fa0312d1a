"""The billing processor under real faults (issue 16): the processor SIGKILLed between
writing a file and confirming its transfer, and the SFTP server killed mid-transfer.
Afterwards every billing log is in exactly one MDR record, the file sequence has no gap
and no duplicate, and no partly written file ever appeared under its final name.

The processor runs as `bossa partners billing run`, in a process of its own; the upload
speed limit makes each transfer last about a second, so the test can act mid-transfer
deterministically."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bossa.journal import NewEntry
from bossa.partners import BILLING_LANE
from bossa.partners.models import BILLING_KIND, parse_mdr
from bossa.runtime import Runtime
from tests.partners.conftest import seed_partner
from tests.partners.servers import SftpServer

pytestmark = [pytest.mark.fault, pytest.mark.slow]

LOGS = 1500
PER_FILE = 500
BOSSA = str(Path(sys.executable).with_name("bossa"))


def _processor(
    db_url: str, spool: Path, sftp: SftpServer, *, once: bool
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "BOSSA_DATABASE_URL": db_url,
        "BOSSA_PARTNERS_SPOOL_DIR": str(spool),
        "BOSSA_PARTNERS_SFTP_HOST": "127.0.0.1",
        "BOSSA_PARTNERS_SFTP_PORT": str(sftp.port),
        "BOSSA_PARTNERS_SFTP_USER": "bossa-sftp",
        "BOSSA_PARTNERS_SFTP_KEY_FILE": str(sftp.client_key),
        "BOSSA_PARTNERS_SFTP_KNOWN_HOSTS": str(sftp.known_hosts),
        "BOSSA_PARTNERS_SFTP_DIR": "in",
        "BOSSA_PARTNERS_SFTP_TIMEOUT_S": "3",
        "BOSSA_PARTNERS_RECORDS_PER_FILE": str(PER_FILE),
        # ~50 KB a file: about a second each, a window to act in.
        "BOSSA_PARTNERS_SFTP_MAX_BYTES_PER_S": "50000",
    }
    argv = [BOSSA, "partners", "billing", "run", "--interval-s", "1"]
    if once:
        argv.append("--once")
    with (spool.parent / "processor.log").open("ab") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


async def _until(what: Callable[[], bool], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what.__doc__ or what}")
        await asyncio.sleep(0.005)


def _partial(sftp: SftpServer, seq: int) -> bool:
    """the temporary upload of file `seq` is on the server, partly written"""
    path = sftp.inbox / f".MDR_BOSSA_{seq:08d}.dat.part"
    return path.exists() and path.stat().st_size > 0


def _final_names_are_complete(sftp: SftpServer) -> None:
    for name, content in sftp.files().items():
        if not name.startswith("."):
            parse_mdr(content)  # count and checksum hold: never a partial file


async def _files(runtime: Runtime) -> list[tuple[int, str]]:
    async with runtime.pool.connection() as conn:
        rows = await (
            await conn.execute("select seq, state from partners.mdr_files order by seq")
        ).fetchall()
    return [(int(r["seq"]), str(r["state"])) for r in rows]


async def test_processor_killed_and_sftp_server_killed_mid_transfer(
    runtime: Runtime, db_url: str, sftp: SftpServer, spool: Path
) -> None:
    await seed_partner(runtime, "acme", template="check")
    now = datetime.now(UTC).isoformat()
    run_ids = list(range(1, LOGS + 1))
    await runtime.journal.enqueue(
        [
            NewEntry(
                BILLING_LANE,
                BILLING_KIND,
                {
                    "run_id": run_id,
                    "partner": "acme",
                    "template": "check",
                    "version": 1,
                    "used_at": now,
                    "units": run_id % 3,
                    "charged": 0,
                    "currency": None,
                },
            )
            for run_id in run_ids
        ]
    )
    first = _processor(db_url, spool, sftp, once=False)
    try:
        # 1. The SFTP server dies while file 1 is half uploaded.
        await _until(lambda: _partial(sftp, 1))
        sftp.kill()
        _final_names_are_complete(sftp)
        assert not (sftp.inbox / "MDR_BOSSA_00000001.dat").exists()
        # 2. The processor dies with every file written and none confirmed.
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    written = await _files(runtime)
    assert written == [(1, "written"), (2, "written"), (3, "written")]

    sftp.start()
    second = _processor(db_url, spool, sftp, once=False)
    try:
        # 3. A new processor sends file 1, and is killed halfway through file 2.
        await _until(lambda: _partial(sftp, 2))
        second.send_signal(signal.SIGKILL)
        second.wait(10)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)
    _final_names_are_complete(sftp)
    assert not (sftp.inbox / "MDR_BOSSA_00000002.dat").exists()

    # 4. One more round finishes the job.
    third = _processor(db_url, spool, sftp, once=True)
    assert third.wait(300) == 0, (spool.parent / "processor.log").read_text()[-3000:]

    assert await _files(runtime) == [(1, "sent"), (2, "sent"), (3, "sent")]
    files = sftp.files()
    assert sorted(files) == [f"MDR_BOSSA_{seq:08d}.dat" for seq in (1, 2, 3)]  # no .part left
    billed: list[int] = []
    for seq, (_name, content) in enumerate(sorted(files.items()), 1):
        header, records, trailer = parse_mdr(content)
        assert header[5] == f"{seq:08d}"
        assert int(trailer[1]) == len(records) == PER_FILE
        billed += [int(r[3]) for r in records]
    assert sorted(billed) == run_ids  # each billing log in exactly one record
    async with runtime.pool.connection() as conn:
        left = await (
            await conn.execute(
                "select count(*) as n from journal.lane_entries"
                " where lane = 'partners.billing' and state <> 'done'"
            )
        ).fetchone()
    assert left is not None
    assert left["n"] == 0
