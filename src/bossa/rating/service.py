"""Rating's use cases: tariffs, the pipeline's account data, and rating a batch of usage
records into rated usage and suspense, each batch in one transaction.

A batch is rated inside one PostgreSQL transaction that holds the pipeline instance's
advisory lock: the allowances it reads are the ones the previous batch wrote, its rated
usage, suspense, allowance use and batch row commit together or not at all (a pipeline
SIGKILLed mid-batch leaves nothing, and the file is rated again whole), and its file's
checksum makes the same file dropped twice a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import psycopg.errors

from bossa import customers
from bossa.db import Conn, Pool
from bossa.errors import Conflict, InvalidInput, NotFound
from bossa.journal import Outage
from bossa.journal.worker import DB_ERRORS
from bossa.rating import metrics, store
from bossa.rating.engine import COLUMNS, EngineResult, RatingEngine
from bossa.rating.models import (
    MAX_RECYCLE,
    MAX_RERATE_DAYS,
    BatchReport,
    RatedRecord,
    RecycleReport,
    RerateReport,
    SuspendedRecord,
    SuspenseReason,
    TariffVersion,
)

__all__ = [
    "Inbox",
    "Pipeline",
    "account_changed",
    "add_tariff",
    "billing_completed",
    "billing_started",
    "hold_for_billing",
    "put_subscription",
    "rate_file",
    "rate_inbox_file",
    "rate_records",
    "rated",
    "recycle",
    "recycle_fixed",
    "recycle_requested",
    "rerate",
    "subscribe",
    "suspended",
    "unsubscribe",
    "watch_inbox",
]

log = logging.getLogger("bossa.rating")


#: A pipeline that has not looked at the change log for this long starts its memory
#: afresh (the log keeps a day: rows older may be purged).
_MEMORY_MAX_AGE_S = 3_600.0
#: The automatic recycling looks at every suspended record at least this often, even
#: when nothing rating is told of changed.
_FULL_RECYCLE_CHECK_S = 300.0


@dataclass
class Pipeline:
    """One pipeline instance: its engine (the memory) and its partition number.

    The memory (numbers' subscription histories, allowance counters, accounts being
    billed) is loaded lazily and kept across batches; before each batch, under the
    pipeline's lock, it drops what `rating.changes` names since it last looked and
    reloads the allowance counters only if another writer moved them."""

    engine: RatingEngine
    instance: int = 0
    workdir: Path | None = None
    #: The last `rating.changes` sequence applied to memory (-1: nothing loaded yet).
    seen: int = -1
    looked_at: float = 0.0
    #: When this pipeline last purged old rows of the change log.
    purged_at: float = float("-inf")
    #: The allowance version memory holds (None: no counters in memory).
    allowance_version: int | None = None
    #: The highest tariff version id memory holds (None: no tariffs loaded).
    tariff_version: int | None = None
    #: (change sequence, tariff version) at the last automatic recycling, and when.
    fixed_mark: tuple[int, int] | None = None
    fixed_at: float = 0.0

    @classmethod
    def open(cls, *, instance: int = 0, threads: int | None = None) -> Pipeline:
        return cls(RatingEngine(threads=threads), instance)

    def close(self) -> None:
        self.engine.close()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


async def add_tariff(pool: Pool, tariff: TariffVersion, *, actor: str) -> int:
    """Add a tariff version; the product's open version ends the day this one starts."""
    async with pool.connection() as conn, conn.transaction():
        if not await customers.product_exists(conn, tariff.product_code):
            raise NotFound(f"no product {tariff.product_code}", field="product_code")
        later = await store.later_tariff(conn, tariff.product_code, tariff.valid_from)
        if later is not None:
            raise InvalidInput(
                f"{tariff.product_code} has a version from {later}: a new version must "
                "start after the last one",
                field="valid_from",
            )
        current = await store.open_tariff(conn, tariff.product_code)
        if current is not None:
            await store.close_tariff(conn, current["id"], tariff.valid_from)
        return await store.add_tariff(conn, tariff, actor=actor)


async def put_subscription(
    pool: Pool, *, msisdn: str, account_id: str, product_code: str, at: datetime
) -> None:
    """A number holds a product on an account from `at` on (its previous one ends)."""
    async with pool.connection() as conn, conn.transaction():
        await subscribe(
            conn, msisdn=msisdn, account_id=account_id, product_code=product_code, at=at
        )


def _number(msisdn: str) -> None:
    if not msisdn.isdigit() or len(msisdn) > 15:
        raise InvalidInput("not 1-15 digits", field="msisdn")


async def subscribe(
    conn: Conn, *, msisdn: str, account_id: str, product_code: str, at: datetime
) -> None:
    """`put_subscription` in the caller's transaction: the sync listener applies a
    business event and acks it in one transaction."""
    _number(msisdn)
    if not await customers.product_exists(conn, product_code):
        raise NotFound(f"no product {product_code}", field="product_code")
    await store.put_subscription(
        conn, msisdn=msisdn, account_id=account_id, product_code=product_code, at=at
    )
    await store.add_changes(conn, numbers=[msisdn])


async def unsubscribe(conn: Conn, *, msisdn: str, product_code: str, at: datetime) -> bool:
    """The number's open subscription to `product_code` ends at `at` (a cancelled
    product), in the caller's transaction. False when it held no such subscription (the
    number had moved to another contract's product since): nothing changes then."""
    _number(msisdn)
    ended = await store.end_subscription_of(conn, msisdn=msisdn, product_code=product_code, at=at)
    if ended:
        await store.add_changes(conn, numbers=[msisdn])
    return ended


async def account_changed(
    conn: Conn, *, numbers: Sequence[str] = (), accounts: Sequence[str] = ()
) -> None:
    """Tell the pipelines, in the caller's transaction, that these numbers' account data
    (or these accounts') changed some other way than `subscribe`/`unsubscribe` (which
    call it themselves): each pipeline drops them from its memory before its next batch
    and loads them again on their next usage. The sync listener calls it for events
    that change what `subscriptions_of` returns (an account opened or closed). Holds the
    changes lock until the caller commits (docs/sync-and-rating.md, "Pipeline memory")."""
    for n in numbers:
        _number(n)
    await store.add_changes(conn, numbers=numbers, accounts=accounts)


async def billing_started(conn: Conn, accounts: Sequence[str], *, run: str = "") -> None:
    """S14: these accounts are being billed; their usage rated from now on waits in
    suspense as `billing_in_progress`. In the caller's transaction (the billing-started
    event's)."""
    if accounts:
        await store.add_holds(conn, accounts, run[:200])
        await store.add_changes(conn, accounts=accounts)


async def hold_for_billing(
    pool: Pool, accounts: Sequence[str], *, started: bool, run: str = ""
) -> int:
    """`billing_started` (started) or `billing_completed` in a transaction of its own,
    for an operator or a bill run without the sync events. Returns the accounts changed."""
    for account in accounts:
        if not 1 <= len(account) <= 64:
            raise InvalidInput("1-64 characters", field="account")
    async with pool.connection() as conn, conn.transaction():
        if started:
            await billing_started(conn, accounts, run=run)
            return len(set(accounts))
        return await billing_completed(conn, accounts)


async def billing_completed(conn: Conn, accounts: Sequence[str]) -> int:
    """S14: billing of these accounts is complete: the hold ends, and the pipeline
    recycles their `billing_in_progress` records at its next look (`recycle_fixed`).
    Returns the holds ended."""
    if not accounts:
        return 0
    ended = await store.remove_holds(conn, accounts)
    await store.add_changes(conn, accounts=accounts)
    return ended


async def rate_file(
    pool: Pool,
    pipeline: Pipeline,
    path: Path,
    *,
    actor: str,
    source: str | None = None,
    errors_to: Path | None = None,
) -> BatchReport:
    """Rate one CDR file (docs/sync-and-rating.md, "CDR files"). Lines that are not usage
    records go to `errors_to` (line, record key, reason) and are counted as malformed."""
    if not await asyncio.to_thread(path.is_file):
        raise NotFound(f"no file {path}", field="path")
    engine = pipeline.engine
    # The checksum and the engine's read of the file run side by side, before the lock
    # (the engine is this pipeline's alone; only the database needs the lock): a file
    # dropped twice costs a read it did not need, every other file saves the checksum.
    checksum = asyncio.ensure_future(asyncio.to_thread(_sha256, path))
    staging = asyncio.ensure_future(asyncio.to_thread(engine.stage_csv, path))
    # Both end before anything goes on (an error of one must not leave the other using
    # the engine); both errors are retrieved, the checksum's raised first.
    await asyncio.wait([checksum, staging])
    for task in (checksum, staging):
        task.exception()
    sha, bad = checksum.result(), staging.result()
    with tempfile.TemporaryDirectory(prefix="bossa-rating-", dir=pipeline.workdir) as tmp:
        work = Path(tmp)
        async with pool.connection() as conn:
            async with conn.transaction():
                await store.lock_pipeline(conn, pipeline.instance)
                done = await store.batch_by_sha(conn, sha)
                if done is not None:
                    return BatchReport.of_row(done, repeated=True)
                report, version = await _rate_staged(
                    conn, pipeline, work, bad, source or path.name, sha, actor
                )
            _committed(pipeline, version)
        if errors_to is not None:
            _write_errors(errors_to, report.errors)
    metrics.observe(report)
    return report


@dataclass
class Inbox:
    """An inbox directory of CDR files (`bossa rating inbox`, `bossa sync pipeline`):
    `*.csv` files are taken oldest first once their size has stopped changing between
    two looks; rated files move to `done/` (their error file beside them), files that
    cannot be rated at all to `failed/`."""

    folder: Path
    #: Each file's size at the last look (a file still growing is not taken).
    sizes: dict[Path, int] = field(default_factory=dict)

    @classmethod
    def open(cls, folder: Path) -> Inbox:
        for sub in ("done", "failed"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return cls(folder)

    def look(self) -> list[Path]:
        """The files ready to rate, oldest first: those whose size has not changed since
        the previous look."""
        ready: list[Path] = []
        present: set[Path] = set()
        for path in sorted(self.folder.glob("*.csv"), key=_mtime):
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # moved away between the listing and the look
                continue
            present.add(path)
            if self.sizes.get(path) == size:
                ready.append(path)
            self.sizes[path] = size
        for gone in set(self.sizes) - present:
            del self.sizes[gone]
        return ready

    @property
    def pending(self) -> bool:
        """Files seen at the last look and not rated yet (being written, or ready)."""
        return bool(self.sizes)

    def waiting(self) -> bool:
        """Any CDR file in the inbox, ready or still being written."""
        return any(True for _ in self.folder.glob("*.csv"))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


async def rate_inbox_file(
    pool: Pool, pipeline: Pipeline, inbox: Inbox, path: Path, *, actor: str
) -> BatchReport | None:
    """Rate one file of the inbox and move it to `done/` (its error file beside it when
    it had bad lines); a file that cannot be rated at all moves to `failed/` with a
    warning line, and None is returned."""
    inbox.sizes.pop(path, None)
    errors = inbox.folder / "done" / f"{path.name}.errors.csv"
    try:
        report = await rate_file(pool, pipeline, path, actor=actor, errors_to=errors)
    except InvalidInput as exc:
        log.warning("rating inbox: %s not rated: %s", path.name, exc)
        await asyncio.to_thread(shutil.move, path, inbox.folder / "failed" / path.name)
        return None
    if not report.malformed:
        errors.unlink(missing_ok=True)
    await asyncio.to_thread(shutil.move, path, inbox.folder / "done" / path.name)
    return report


async def watch_inbox(
    pool: Pool,
    pipeline: Pipeline,
    inbox: Inbox,
    *,
    actor: str,
    poll_s: float,
    outage_s: float,
    once: bool = False,
    said: Callable[[str, BatchReport | None, int], None] | None = None,
) -> None:
    """The inbox daemon (`bossa rating inbox`): at every look, rate the files that are
    ready, oldest first, then recycle the suspended records whose cause is gone; `once`,
    until no file waits. `said(file, report, recycled)` hears each file rated and each
    recycling (file '').

    A database that does not answer is waited out (the file stays in the inbox: a file
    whose transaction died is rated whole again, and one that committed is found
    `repeated` and moved on), for at most `outage_s`; past that `DatabaseLost` is raised
    for the process's supervisor to restart it."""
    outage = Outage("rating inbox", outage_s)
    while True:
        try:
            for path in await asyncio.to_thread(inbox.look):
                report = await rate_inbox_file(pool, pipeline, inbox, path, actor=actor)
                if said is not None:
                    said(path.name, report, 0)
            # Automatic recycling: suspended records whose cause is gone since (an
            # account or subscription created, a tariff added, billing completed).
            recycled = await recycle_fixed(pool, pipeline, actor=actor)
            if recycled and said is not None:
                said("", None, recycled)
            outage.answered()
        except DB_ERRORS as exc:
            wait = outage.failed(exc)
            # Stale connections of a restarted server: dropped now, not one per use.
            with contextlib.suppress(Exception):
                await pool.check()
            await asyncio.sleep(wait)
            continue
        if once and not inbox.pending:
            return
        await asyncio.sleep(poll_s)


async def rate_records(
    pool: Pool,
    pipeline: Pipeline,
    records: Sequence[tuple[str, str, str, str, str]],
    *,
    actor: str,
    source: str = "api",
) -> BatchReport:
    """Rate usage records given as text columns (record_key, msisdn, destination, start,
    duration), as the API receives them: exactly as a file with these lines, with the same
    dedupe (the same records again are `repeated`; a record key rated before is not
    charged again) and the same checks (bad records in the report's errors, by line: the
    first record is line 2, as in a file with its header)."""
    with tempfile.TemporaryDirectory(prefix="bossa-rating-", dir=pipeline.workdir) as tmp:
        path = Path(tmp) / "records.csv"
        await asyncio.to_thread(_write_records, path, records)
        return await rate_file(pool, pipeline, path, actor=actor, source=source)


def _write_records(path: Path, records: Sequence[tuple[str, str, str, str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(records)


async def _refresh_memory(conn: Conn, pipeline: Pipeline) -> None:
    """Bring the pipeline's memory up to date before a batch (under the pipeline lock):
    drop what changed since it last looked, reload the allowance counters only when
    another writer moved them. A fresh pipeline loads nothing here (S10: lazily)."""
    engine = pipeline.engine
    stale = time.monotonic() - pipeline.looked_at > _MEMORY_MAX_AGE_S
    if pipeline.seen < 0 or stale:
        engine.forget_all()
        pipeline.allowance_version = None
        pipeline.seen = await store.last_change(conn)
        engine.put_holds(await store.holds(conn))
    else:
        seq, numbers, accounts = await store.changes_since(conn, pipeline.seen)
        if numbers:
            await asyncio.to_thread(engine.forget_numbers, numbers)
        if accounts:
            engine.put_holds(await store.holds(conn))
        pipeline.seen = seq
    pipeline.looked_at = time.monotonic()
    if pipeline.looked_at - pipeline.purged_at > _MEMORY_MAX_AGE_S:
        # Rows a day old were seen by every pipeline that is not starting afresh anyway.
        await store.purge_changes(conn)
        pipeline.purged_at = pipeline.looked_at
    version = await store.allowance_version(conn, pipeline.instance)
    if version != pipeline.allowance_version:
        await asyncio.to_thread(engine.reset_usage)
        pipeline.allowance_version = version


def _committed(pipeline: Pipeline, version: int) -> None:
    """The batch committed: its allowance use and its unknown numbers update memory."""
    engine = pipeline.engine
    engine.commit_usage()
    # An unknown number is not remembered as unknown: its account may be opened at any
    # time without a change to its subscriptions.
    engine.forget_numbers(engine.unknown_numbers())
    pipeline.allowance_version = version


async def _rate_staged(
    conn: Conn,
    pipeline: Pipeline,
    work: Path,
    bad: list[tuple[int, str, str]],
    source: str,
    sha: str,
    actor: str,
) -> tuple[BatchReport, int]:
    """Rate the staged batch in the caller's transaction (which holds the pipeline
    lock). Returns the report and the allowance version it wrote; the caller calls
    `_committed` once the transaction committed."""
    engine = pipeline.engine
    clock = _Clock()
    await _refresh_memory(conn, pipeline)
    clock.lap("memory")
    # Tariffs are reloaded only when a version was added since (a new version has the
    # highest id, and versions are never edited otherwise): it applies to the next batch
    # with nothing flushed or restarted.
    tariff_version = await store.tariff_version(conn)
    if tariff_version != pipeline.tariff_version:
        engine.load_tariffs(await store.tariffs(conn))
        pipeline.tariff_version = tariff_version
    clock.lap("tariffs")
    # S10: numbers not in memory are loaded now, on their first usage; with allowance
    # counters not in memory, both by COPY (a fresh pipeline loads its whole first file's).
    numbers_csv, subs_csv = work / "numbers.csv", work / "subscriptions.csv"
    if await asyncio.to_thread(engine.write_new_numbers, numbers_csv):
        await store.copy_subscriptions(conn, numbers_csv, subs_csv)
        await asyncio.to_thread(engine.read_subscriptions, subs_csv)
    keys_csv, usage_csv = work / "allowance_keys.csv", work / "usage.csv"
    if await asyncio.to_thread(engine.write_allowance_keys, keys_csv):
        await store.copy_allowance(conn, keys_csv, usage_csv)
        await asyncio.to_thread(engine.read_usage, usage_csv)
    clock.lap("account data")
    records = await asyncio.to_thread(engine.staged)
    batch = await store.add_batch(
        conn, source=source[:200], sha256=sha, records=int(records) + len(bad), actor=actor
    )
    # The batch is rated in ranges of accounts: once the first is rated, PostgreSQL
    # takes its rows by COPY from a pipe as DuckDB writes them, while DuckDB rates the
    # next ranges (the two work side by side instead of in turn; the COPY's rows stay
    # in account order).
    parts = _parts(int(records))
    await asyncio.to_thread(engine.plan, parts)
    await asyncio.to_thread(engine.rate_part, 0)
    clock.lap("rate")
    # The ledger books the batch per account and day; a bill line traces back to the
    # batch's records through this reference (rating.rated_usage by batch, account, day).
    reference = f"rating-batch:{batch}"

    def rest() -> tuple[EngineResult, tuple[int, int]]:
        # The other ranges, then the batch's small files (suspense, allowance use,
        # daily charges) while PostgreSQL still takes the rated rows.
        result = engine.rate_rest()
        return result, engine.write_batch_files(batch, work)

    async def book(files: tuple[int, int]) -> None:
        usage_rows, daily_rows = files
        if usage_rows:
            await store.add_allowance_file(conn, work / "batch_usage.csv")
        if daily_rows:
            await store.add_usage_file(conn, work / "daily.csv", reference=reference)

    rating = asyncio.ensure_future(asyncio.to_thread(rest))
    try:
        try:
            # A savepoint: a record key rated in an earlier batch undoes the rated rows
            # and the booking, and the batch is rated again without it.
            async with conn.transaction():
                await store.copy_rated_from(conn, lambda path: engine.write_rated(batch, path))
                clock.lap("copy rated")
                result, files = await rating
                await book(files)
        finally:
            # Never leave the engine busy in a thread once this batch is over; its
            # error, if any, is the COPY's too (the writer fails with it).
            await asyncio.wait([rating])
            if not rating.cancelled():
                rating.exception()
    except psycopg.errors.UniqueViolation:
        # Some record keys were rated in an earlier batch: they are not charged again,
        # and the batch is rated without them (their allowance must not count). Its
        # files are written and booked again (what the first attempt did is undone).
        keys_csv = work / "keys.csv"
        await asyncio.to_thread(engine.write_keys, keys_csv)
        seen = await store.stage_keys(conn, keys_csv)
        lines = await asyncio.to_thread(engine.lines_of, seen)
        bad += [(line, key, "record_key: rated already in an earlier batch") for line, key in lines]
        await asyncio.to_thread(engine.drop, seen)
        result = await asyncio.to_thread(engine.rate, parts)
        files = await asyncio.to_thread(engine.write_batch_files, batch, work)
        await store.copy_rated_from(conn, lambda path: engine.write_rated(batch, path))
        clock.lap("copy rated")
        await book(files)
    clock.lap("allowances and ledger")
    # Before suspend, while suspense holds only earlier batches' records (none, often:
    # the join then ends at once), then the batch's suspended records charged before.
    await store.unsuspend_rated(conn, batch)
    if result.suspended:
        await store.suspend(conn, work / "suspended.csv")
        await store.unsuspend_rated_before(conn, batch)
    version = await store.bump_allowance_version(conn, pipeline.instance)
    clock.lap("suspense")
    await store.finish_batch(
        conn, batch, rated=result.rated, suspended=result.suspended, malformed=len(bad)
    )
    count, charge = await asyncio.to_thread(engine.totals)
    if bad:
        log.warning(
            "rating batch %s (%s): %d lines not rated as malformed or duplicate",
            batch,
            source,
            len(bad),
        )
    if result.suspended:
        log.warning("rating batch %s (%s): %d records suspended", batch, source, result.suspended)
    report = BatchReport(
        batch=batch,
        source=source,
        records=int(records) + len(bad),
        rated=count,
        suspended=result.suspended,
        malformed=len(bad),
        charge=charge,
        repeated=False,
        errors=sorted(bad),
        phases=clock.laps,
    )
    return report, version


async def recycle(
    pool: Pool,
    pipeline: Pipeline,
    *,
    actor: str,
    reason: SuspenseReason | None = None,
    account: str | None = None,
    batch: int | None = None,
    source: str | None = None,
    fixed: bool = False,
    limit: int = MAX_RECYCLE,
) -> RecycleReport:
    """Rate suspended records again (docs/sync-and-rating.md, "Recycling suspense"):
    those matching every filter given (reason, account, the batch that suspended them,
    the file they came in: a batch's source;
    `fixed`: only those whose cause is gone), at most `limit`, oldest key first, in one
    transaction under the pipeline lock. A record that rates leaves suspense and is
    charged once (a key rated meanwhile is not charged again); one that still cannot
    rate stays, with its new reason and one more attempt. Audited."""
    if not 1 <= limit <= MAX_RECYCLE:
        raise InvalidInput(f"not between 1 and {MAX_RECYCLE}", field="limit")
    if account is not None and not 1 <= len(account) <= 64:
        raise InvalidInput("1-64 characters", field="account")
    if source is not None and not 1 <= len(source) <= 200:
        raise InvalidInput("1-200 characters", field="file")
    which = _Which(reason.value if reason else None, account, batch, source, fixed)
    async with pool.connection() as conn:
        async with conn.transaction():
            out, version = await _recycle_on(conn, pipeline, actor=actor, which=which, limit=limit)
        if version is not None:
            _committed(pipeline, version)
    _recycled(out, which.what(), actor)
    return out


@dataclass(frozen=True)
class _Which:
    """The suspended records a recycle run takes (every filter given must match)."""

    reason: str | None = None
    account: str | None = None
    batch: int | None = None
    source: str | None = None
    fixed: bool = False

    def what(self) -> dict[str, object]:
        """As audited and described (`file` is the CLI's name of `source`)."""
        return {
            "reason": self.reason,
            "account": self.account,
            "batch": self.batch,
            "file": self.source,
            "fixed": self.fixed,
        }


async def _recycle_on(
    conn: Conn, pipeline: Pipeline, *, actor: str, which: _Which, limit: int
) -> tuple[RecycleReport, int | None]:
    """A recycle run in the caller's transaction (taking the pipeline lock): the report
    and the allowance version written (None: nothing was taken). The caller calls
    `_committed` once the transaction committed, then `_recycled`."""
    engine = pipeline.engine
    what = which.what()
    with tempfile.TemporaryDirectory(prefix="bossa-recycle-", dir=pipeline.workdir) as tmp:
        work = Path(tmp)
        path = work / "recycle.csv"
        await store.lock_pipeline(conn, pipeline.instance)
        await store.stage_recycle(
            conn,
            path,
            reason=which.reason,
            account=which.account,
            batch=which.batch,
            source=which.source,
            fixed=which.fixed,
            limit=limit,
        )
        bad = await asyncio.to_thread(engine.stage_csv, path)
        staged = await asyncio.to_thread(engine.staged)
        if not staged and not bad:
            return RecycleReport(taken=0, rated=0, suspended=0, charge=0, batch=None), None
        # A recycle batch is its own batch; its checksum is unique to the run.
        sha = hashlib.sha256(f"recycle:{uuid.uuid4()}".encode()).hexdigest()
        report, version = await _rate_staged(
            conn, pipeline, work, bad, f"recycle:{_describe(what)}", sha, actor
        )
        out = RecycleReport(
            taken=report.records,
            rated=report.rated,
            suspended=report.suspended,
            charge=report.charge or 0,
            batch=report.batch,
            already_rated=report.malformed,
        )
        await store.add_audit(
            conn,
            actor=actor,
            action="recycle",
            detail={**what, **out.model_dump(mode="json")},
        )
    return out, version


def _recycled(out: RecycleReport, what: Mapping[str, object], actor: str) -> None:
    """Metrics and the log line of a committed recycle run."""
    if out.taken == 0:
        return
    metrics.RECYCLED.labels("rated").inc(out.rated)
    metrics.RECYCLED.labels("suspended").inc(out.suspended)
    # A warning when records stay suspended: their cause is not gone (or is back).
    (log.warning if out.suspended else log.info)(
        "rating recycle (%s) by %s: %d taken, %d rated, %d still suspended",
        _describe(what),
        actor,
        out.taken,
        out.rated,
        out.suspended,
    )


async def recycle_requested(
    conn: Conn, *, instance: int, actor: str = "sync-listener"
) -> RecycleReport:
    """A recycle request (the sync listener's RecycleRequest), in the caller's
    transaction (the ack's: the request is processed and its records recycled together,
    or neither): the suspended records whose cause is gone, as `recycle_fixed`, batch
    after batch. It rates on a pipeline of its own that lives for this call (memory is
    loaded from PostgreSQL, S10), so that a rollback of the caller's transaction leaves
    no pipeline's memory ahead of what committed; the running pipelines see the new
    allowance use at their next batch, as after any other writer's."""
    which = _Which(fixed=True)
    pipeline = Pipeline.open(instance=instance)
    total = RecycleReport(taken=0, rated=0, suspended=0, charge=0, batch=None)
    try:
        while True:
            out, _ = await _recycle_on(conn, pipeline, actor=actor, which=which, limit=MAX_RECYCLE)
            total = RecycleReport(
                taken=total.taken + out.taken,
                rated=total.rated + out.rated,
                suspended=total.suspended + out.suspended,
                charge=total.charge + out.charge,
                batch=out.batch or total.batch,
                already_rated=total.already_rated + out.already_rated,
            )
            if out.taken < MAX_RECYCLE or out.rated == 0:
                break
    finally:
        pipeline.close()
    # Counted when processed; the caller's commit is what makes it so (a rollback
    # recycles again on the request's next delivery).
    _recycled(total, which.what(), actor)
    return total


async def recycle_fixed(
    pool: Pool, pipeline: Pipeline, *, actor: str = "pipeline", force: bool = False
) -> int:
    """Automatic recycling: the suspended records whose cause is gone (their number now
    has a known account, their product a tariff, their destination a zone, their
    account's billing completed), batch after batch until none is left. Returns the
    records rated. The inbox daemon calls it at every look; the sync listener may call it
    for a recycle request (`force`).

    Looking costs a lookup per suspended record, so it looks only when rating's account
    data or tariffs changed since its last look (the change log's sequence, the newest
    tariff version), or `_FULL_RECYCLE_CHECK_S` passed: an account opened in the ledger
    with no event to rating is found within that time."""
    async with pool.connection() as conn:
        mark = (await store.last_change(conn), await store.tariff_version(conn))
    stale = time.monotonic() - pipeline.fixed_at > _FULL_RECYCLE_CHECK_S
    if not (force or stale or mark != pipeline.fixed_mark):
        return 0
    rated = 0
    while True:
        report = await recycle(pool, pipeline, actor=actor, fixed=True)
        rated += report.rated
        # Records still suspended were found fixed yet did not rate (a hold began
        # meanwhile, say): they wait for the next look rather than loop here.
        if report.taken < MAX_RECYCLE or report.rated == 0:
            break
    pipeline.fixed_mark, pipeline.fixed_at = mark, time.monotonic()
    return rated


def _describe(what: Mapping[str, object]) -> str:
    return ",".join(f"{k}={v}" for k, v in what.items() if v not in (None, False)) or "all"


async def rerate(
    pool: Pool,
    pipeline: Pipeline,
    *,
    start: date,
    end: date,
    actor: str,
    account: str | None = None,
) -> RerateReport:
    """Rate a period's usage again (days `start` to `end`, end excluded; optionally one
    account's) with the tariffs and account data as they are now, in one transaction
    under the pipeline lock: its ledger rows are removed and booked again from the new
    charges (never both), its allowance use is given back before the records are rated
    again, and records that no longer rate go to suspense. A period with billed usage is
    refused (its bill is issued). Audited."""
    if end <= start:
        raise InvalidInput("must be after start", field="end")
    if (end - start).days > MAX_RERATE_DAYS:
        raise InvalidInput(f"a period of at most {MAX_RERATE_DAYS} days", field="end")
    if account is not None and not 1 <= len(account) <= 64:
        raise InvalidInput("1-64 characters", field="account")
    lo, hi = (
        datetime.combine(start, datetime.min.time()),
        datetime.combine(end, datetime.min.time()),
    )
    engine = pipeline.engine
    with tempfile.TemporaryDirectory(prefix="bossa-rerate-", dir=pipeline.workdir) as tmp:
        work = Path(tmp)
        path = work / "rerate.csv"
        async with pool.connection() as conn:
            async with conn.transaction():
                await store.lock_pipeline(conn, pipeline.instance)
                accounts, refs = await store.stage_rerate(
                    conn, path, start=lo, end=hi, account=account
                )
                old_charge = await store.staged_charge(conn)
                try:
                    async with conn.transaction():
                        removed = await store.rerate_release(
                            conn, accounts=accounts, references=refs, start=lo, end=hi
                        )
                except psycopg.errors.RaiseException:
                    raise Conflict(
                        f"usage from {start} to {end} is billed already: rerating it would "
                        "change an issued bill",
                        field="start",
                    ) from None
                bad = await asyncio.to_thread(engine.stage_csv, path)
                sha = hashlib.sha256(f"rerate:{uuid.uuid4()}".encode()).hexdigest()
                label = f"rerate:{start}..{end}" + (f":{account}" if account else "")
                # The allowance counters were just given back: memory reloads them.
                pipeline.allowance_version = None
                report, version = await _rate_staged(conn, pipeline, work, bad, label, sha, actor)
                out = RerateReport(
                    start=start,
                    end=end,
                    account=account,
                    records=report.records,
                    rated=report.rated,
                    suspended=report.suspended,
                    old_charge=old_charge,
                    new_charge=report.charge or 0,
                    ledger_rows_replaced=removed,
                    batch=report.batch,
                )
                await store.add_audit(
                    conn, actor=actor, action="rerate", detail=out.model_dump(mode="json")
                )
            _committed(pipeline, version)
    metrics.RERATED.inc(out.records)
    log.warning(
        "rating rerate %s..%s%s by %s: %d records, charge %d -> %d, %d suspended",
        start,
        end,
        f" of {account}" if account else "",
        actor,
        out.records,
        out.old_charge,
        out.new_charge,
        out.suspended,
    )
    return out


#: Records per range of accounts a batch is rated in (`RatingEngine.plan`): the first
#: range is rated before PostgreSQL has rows to take, the others while it takes them.
_PART_RECORDS = 200_000
_MAX_PARTS = 8


def _parts(records: int) -> int:
    return max(1, min(_MAX_PARTS, -(-records // _PART_RECORDS)))


class _Clock:
    """Seconds spent in each phase of a batch (in the report: where the time went)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now


def _write_errors(path: Path, errors: Sequence[tuple[int, str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("line", "record_key", "reason"))
        writer.writerows(errors)


async def suspended(
    pool: Pool, *, reason: str | None = None, after: str = "", limit: int = 100
) -> list[SuspendedRecord]:
    async with pool.connection() as conn:
        rows = await store.suspended(conn, reason=reason, after=after, limit=limit)
    return [SuspendedRecord(**row) for row in rows]


async def rated(pool: Pool, keys: Sequence[str]) -> list[RatedRecord]:
    """The rated usage records of these keys, by start (those not rated are absent)."""
    async with pool.connection() as conn:
        rows = await store.rated_records(conn, list(keys))
    return [RatedRecord(**row) for row in rows]


async def suspense_counts(pool: Pool) -> dict[str, int]:
    async with pool.connection() as conn:
        return await store.suspense_counts(conn)
