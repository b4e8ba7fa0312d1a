"""The billing processor (O5) against a real OpenSSH SFTP server: each run's billing log
becomes one MDR record; files carry a header, records and a checked trailer; sequence
numbers have no gap; malformed logs go to an error file with their reason; corrections
are new records in a later file."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bossa.access import Principal, Role
from bossa.journal import NewEntry
from bossa.partners import (
    BILLING_LANE,
    PartnersSettings,
    correct,
    platform,
    run_template,
    store,
)
from bossa.partners.lanes import BillingProcessor, collector
from bossa.partners.models import BILLING_KIND, MdrHeader, RunResult, parse_mdr, render_mdr
from bossa.partners.service import transmit, write_files
from bossa.runtime import Runtime
from tests.partners.conftest import (
    seed_legacy,
    seed_partner,
    seed_subscriber,
    sftp_settings,
)
from tests.partners.servers import LegacyServer, SftpServer

ACME = Principal("acme", Role.PARTNER, "token")

#: Charges a subscriber, then texts them: units (segments) and money both billed.
CHARGE_AND_TEXT = """
inputs:
  account: {type: string}
  msisdn: {type: string}
  amount: {type: integer, minimum: 1, maximum: 100000}
  text: {type: string}
steps:
  - id: charge
    object: balance.charge
    with: {account: $input.account, amount: $input.amount}
  - id: paid
    object: branch
    with: {condition: $steps.charge.charged}
    then: sms
    else: end
  - id: sms
    object: sms.send
    with: {to: $input.msisdn, text: $input.text}
outputs:
  charged: $steps.charge.charged
  available: $steps.charge.available
"""


def _dat(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dat"))


async def _run(runtime: Runtime, template: str, data: dict[str, Any]) -> RunResult:
    plat = platform(runtime.pool, runtime.journal)
    result = await run_template(plat, template, data, principal=ACME)
    assert isinstance(result, RunResult)
    return result


async def test_runs_become_mdr_records_on_the_sftp_server(
    runtime: Runtime, legacy: LegacyServer, sftp: SftpServer, spool: Path
) -> None:
    await seed_partner(runtime, "acme", template="charge", definition=CHARGE_AND_TEXT)
    await seed_legacy(runtime, legacy)
    account = await seed_subscriber(runtime, "c1", funds=1000)
    runs = [
        await _run(
            runtime,
            "charge",
            {"account": account, "msisdn": "+4912345", "amount": 300, "text": "x" * 200},
        )
        for _ in range(4)
    ]
    assert [r.output for r in runs] == [
        {"charged": True, "available": 700},
        {"charged": True, "available": 400},
        {"charged": True, "available": 100},
        {"charged": False, "available": 100},
    ]
    assert all(r.state == "done" for r in runs)
    settings = sftp_settings(spool, sftp, sender="OPCO", recipient="KTBILL", test_files=True)
    written, sent = await BillingProcessor(runtime.journal, settings).round()
    assert (written, sent) == ([1], [1])
    files = sftp.files()
    assert list(files) == ["MDR_OPCO_00000001.dat"]
    header, records, trailer = parse_mdr(files["MDR_OPCO_00000001.dat"])
    assert header[:6] == ["H", "MDR", "1", "OPCO", "KTBILL", "00000001"]
    assert header[7] == "T"
    assert [int(r[3]) for r in records] == [r.id for r in runs]
    # Two SMS segments per paid run; fee = 5 per use + 2 per unit; share = 15 % of charges.
    assert [(int(r[8]), int(r[9]), int(r[10]), int(r[11])) for r in records] == [
        (2, 300, 9, 45),
        (2, 300, 9, 45),
        (2, 300, 9, 45),
        (0, 0, 5, 0),
    ]
    assert trailer[1:6] == ["4", "6", "900", "32", "135"]
    # The server renders the record lines; the Python reference renders the same bytes.
    async with runtime.pool.connection() as conn:
        row = await store.file(conn, 1)
        assert row is not None
        reference = render_mdr(
            MdrHeader(row["sender"], row["recipient"], 1, row["created_at"], row["test"]),
            await store.file_records(conn, 1),
        )
    assert reference.content == files["MDR_OPCO_00000001.dat"]
    assert [c["to"] for c in legacy.calls() if c["kind"] == "sms"].count("+4912345") >= 3
    # Nothing new: no file, and no sequence number spent.
    assert await BillingProcessor(runtime.journal, settings).round() == ([], [])
    await _run(
        runtime, "charge", {"account": account, "msisdn": "+4912345", "amount": 50, "text": "hi"}
    )
    assert await BillingProcessor(runtime.journal, settings).round() == ([2], [2])
    assert list(sftp.files()) == ["MDR_OPCO_00000001.dat", "MDR_OPCO_00000002.dat"]
    assert not _dat(spool)  # confirmed files leave the spool for sent/
    assert sorted(p.name for p in (spool / "sent").iterdir()) == list(sftp.files())


async def test_a_failed_run_is_not_billed_and_its_charge_is_undone(
    runtime: Runtime, legacy: LegacyServer, sftp: SftpServer, spool: Path
) -> None:
    await seed_partner(runtime, "acme", template="charge", definition=CHARGE_AND_TEXT)
    await seed_legacy(runtime, legacy)
    account = await seed_subscriber(runtime, "c1", funds=1000)
    failed = await _run(
        runtime, "charge", {"account": account, "msisdn": "+491", "amount": 300, "text": "FAIL"}
    )
    assert failed.state == "failed"
    assert failed.error is not None
    assert failed.error["field"] == "steps.sms"
    assert failed.error["error"] == "LegacyUnavailable"
    ok = await _run(
        runtime, "charge", {"account": account, "msisdn": "+491", "amount": 300, "text": "ok"}
    )
    assert ok.output == {"charged": True, "available": 700}  # the failed run's 300 came back
    settings = sftp_settings(spool, sftp)
    await BillingProcessor(runtime.journal, settings).round()
    _, records, _ = parse_mdr(sftp.files()["MDR_BOSSA_00000001.dat"])
    assert [int(r[3]) for r in records] == [ok.id]


async def test_malformed_logs_go_to_an_error_file_and_the_rest_are_billed(
    runtime: Runtime, sftp: SftpServer, spool: Path
) -> None:
    await seed_partner(runtime, "acme", template="check")
    good = await _run(runtime, "check", {"subscriber": "c1", "amount": 5})
    now = datetime.now(UTC)
    log = {
        "run_id": good.id,
        "partner": "acme",
        "template": "check",
        "version": 1,
        "used_at": now.isoformat(),
        "units": 0,
        "charged": 0,
        "currency": None,
    }
    bad = [
        {k: v for k, v in log.items() if k != "run_id"},  # schema
        {**log, "run_id": 10_001, "units": -1},  # schema
        {**log, "run_id": 10_002, "used_at": (now + timedelta(hours=2)).isoformat()},  # clock
        {**log, "run_id": 10_003, "used_at": (now - timedelta(days=90)).isoformat()},  # clock
        {**log, "run_id": 10_004, "partner": "nobody"},  # no policy
        log,  # a second log of the good run: duplicate
        "not even an object",
    ]
    await runtime.journal.enqueue([NewEntry(BILLING_LANE, BILLING_KIND, p) for p in bad])
    fine = {**log, "run_id": 10_005}
    await runtime.journal.enqueue([NewEntry(BILLING_LANE, BILLING_KIND, fine)])
    settings = sftp_settings(spool, sftp)
    assert await BillingProcessor(runtime.journal, settings).round() == ([1], [1])
    _, records, _ = parse_mdr(sftp.files()["MDR_BOSSA_00000001.dat"])
    assert sorted(int(r[3]) for r in records) == [good.id, 10_005]
    [error_file] = list((spool / "errors").iterdir())
    lines = error_file.read_text().splitlines()
    reasons = [line.split("\t")[1] for line in lines]
    assert len(lines) == len(bad)
    assert reasons[0].startswith("schema: run_id")
    assert reasons[1].startswith("schema: units")
    assert reasons[2].startswith("clock:")
    assert "in the future" in reasons[2]
    assert reasons[3].startswith("clock:")
    assert reasons[4].startswith("policy: none for nobody/check")
    assert reasons[5] == f"duplicate: a second billing log of run {good.id}"
    assert reasons[6].startswith("schema:")
    # A duplicate arriving in a later batch, after its run was billed.
    await runtime.journal.enqueue([NewEntry(BILLING_LANE, BILLING_KIND, log)])
    assert await BillingProcessor(runtime.journal, settings).round() == ([], [])
    later = sorted((spool / "errors").iterdir())[-1].read_text().splitlines()
    assert [line.split("\t")[1] for line in later] == [
        f"duplicate: run {good.id} is already billed"
    ]


async def test_a_correction_is_a_new_record_in_a_later_file(
    runtime: Runtime, sftp: SftpServer, spool: Path
) -> None:
    await seed_partner(runtime, "acme", template="check")
    run = await _run(runtime, "check", {"subscriber": "c1", "amount": 5})
    settings = sftp_settings(spool, sftp)
    await BillingProcessor(runtime.journal, settings).round()
    first = sftp.files()["MDR_BOSSA_00000001.dat"]
    await correct(runtime.pool, run.id, actor="test")
    assert await BillingProcessor(runtime.journal, settings).round() == ([2], [2])
    files = sftp.files()
    assert files["MDR_BOSSA_00000001.dat"] == first  # a sent file never changes
    _, records, trailer = parse_mdr(files["MDR_BOSSA_00000002.dat"])
    assert [(int(r[3]), r[10], r[13]) for r in records] == [(run.id, "-5", "C")]
    assert trailer[4] == "-5"


async def test_a_retried_rename_is_checked_not_repeated(
    runtime: Runtime, sftp: SftpServer, spool: Path
) -> None:
    """The rename landed but the confirmation was lost (the processor died in between):
    the next round finds the file under its final name, reads it back, and confirms."""
    await seed_partner(runtime, "acme", template="check")
    await _run(runtime, "check", {"subscriber": "c1", "amount": 5})
    settings = sftp_settings(spool, sftp)
    await BillingProcessor(runtime.journal, settings.model_copy(update={"sftp_host": None})).round()
    [local] = _dat(spool)
    (sftp.inbox / local.name).write_bytes(local.read_bytes())
    assert await transmit(runtime.pool, settings) == [1]
    assert sftp.files() == {local.name: (spool / "sent" / local.name).read_bytes()}
    # A different file under that name is never overwritten: the transfer stops there.
    await _run(runtime, "check", {"subscriber": "c1", "amount": 6})
    await collector(runtime.journal, settings).run(until_idle=True)
    assert await write_files(runtime.pool, settings) == [2]
    (sftp.inbox / "MDR_BOSSA_00000002.dat").write_bytes(b"someone else's\n")
    assert await transmit(runtime.pool, settings) == []
    async with runtime.pool.connection() as conn:
        row = await (
            await conn.execute("select state, last_error from partners.mdr_files where seq = 2")
        ).fetchone()
    assert row is not None
    assert row["state"] == "written"
    assert "differs" in row["last_error"]


async def test_a_file_waits_for_records_still_being_added_below_its_range(
    runtime: Runtime, spool: Path
) -> None:
    # A file takes a range of record ids; a record whose transaction is still open when
    # the file is written may hold a lower id than a committed one. The writer waits for
    # it (SHARE on the records), so it lands in this file, not skipped below the range.
    await seed_partner(runtime, "acme", template="check")
    async with runtime.pool.connection() as conn:
        policy = await (await conn.execute("select id from partners.policies")).fetchone()
    assert policy is not None

    def record(run_id: int) -> dict[str, list[Any]]:
        return {
            "entry_ids": [run_id],
            "run_ids": [run_id],
            "kinds": ["U"],
            "partners": ["acme"],
            "templates": ["check"],
            "versions": [1],
            "used_ats": [datetime.now(UTC)],
            "units": [1],
            "charged": [0],
            "fees": [7],
            "shares": [0],
            "currencies": ["EUR"],
            "policy_ids": [policy["id"]],
        }

    settings = PartnersSettings(spool_dir=spool)
    async with runtime.pool.connection() as slow, slow.transaction():
        await store.add_records(slow, record(1))  # the lower id, not yet committed
        async with runtime.pool.connection() as fast:
            await store.add_records(fast, record(2))
        writer = asyncio.create_task(write_files(runtime.pool, settings))
        await asyncio.sleep(0.5)
        assert not writer.done()  # waiting for the open transaction, not skipping it
    assert await writer == [1]
    _, records, _ = parse_mdr((spool / "MDR_BOSSA_00000001.dat").read_bytes())
    assert [int(r[3]) for r in records] == [1, 2]
    assert await write_files(runtime.pool, settings) == []  # nothing left, no number spent
    async with runtime.pool.connection() as conn:
        await store.add_records(conn, record(3))
    assert await write_files(runtime.pool, settings) == [2]
    _, records, _ = parse_mdr((spool / "MDR_BOSSA_00000002.dat").read_bytes())
    assert [int(r[3]) for r in records] == [3]
