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
import csv
import hashlib
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg.errors

from bossa import customers
from bossa.db import Conn, Pool
from bossa.errors import InvalidInput, NotFound
from bossa.rating import metrics, store
from bossa.rating.engine import RatingEngine
from bossa.rating.models import BatchReport, SuspendedRecord, TariffVersion

__all__ = [
    "Pipeline",
    "add_tariff",
    "put_subscription",
    "rate_file",
    "subscribe",
    "suspended",
    "unsubscribe",
]

log = logging.getLogger("bossa.rating")


@dataclass
class Pipeline:
    """One pipeline instance: its engine (the memory) and its partition number."""

    engine: RatingEngine
    instance: int = 0
    workdir: Path | None = None

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


async def unsubscribe(conn: Conn, *, msisdn: str, product_code: str, at: datetime) -> bool:
    """The number's open subscription to `product_code` ends at `at` (a cancelled
    product), in the caller's transaction. False when it held no such subscription (the
    number had moved to another contract's product since): nothing changes then."""
    _number(msisdn)
    return await store.end_subscription_of(conn, msisdn=msisdn, product_code=product_code, at=at)


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
    sha = await asyncio.to_thread(_sha256, path)
    engine = pipeline.engine
    with tempfile.TemporaryDirectory(prefix="bossa-rating-", dir=pipeline.workdir) as tmp:
        work = Path(tmp)
        async with pool.connection() as conn, conn.transaction():
            await store.lock_pipeline(conn, pipeline.instance)
            done = await store.batch_by_sha(conn, sha)
            if done is not None:
                return BatchReport.of_row(done, repeated=True)
            bad = await asyncio.to_thread(engine.stage_csv, path)
            report = await _rate_staged(conn, engine, work, bad, source or path.name, sha, actor)
        if errors_to is not None:
            _write_errors(errors_to, report.errors)
    metrics.observe(report)
    return report


async def _rate_staged(
    conn: Conn,
    engine: RatingEngine,
    work: Path,
    bad: list[tuple[int, str, str]],
    source: str,
    sha: str,
    actor: str,
) -> BatchReport:
    clock = _Clock()
    # Tariffs are a few hundred rows: read at every batch, a change applies to the next
    # batch with nothing flushed or restarted.
    engine.load_tariffs(await store.tariffs(conn))
    numbers = await asyncio.to_thread(engine.numbers)
    engine.put_subscriptions(await store.subscriptions_of(conn, numbers))
    await asyncio.to_thread(engine.reset_usage)
    keys = await asyncio.to_thread(engine.allowance_keys)
    engine.put_usage(await store.allowance_of(conn, keys))
    clock.lap("account data")
    records = await asyncio.to_thread(engine.staged)
    batch = await store.add_batch(
        conn, source=source[:200], sha256=sha, records=int(records) + len(bad), actor=actor
    )
    result = await asyncio.to_thread(engine.rate)
    clock.lap("rate")
    rated_csv, suspended_csv = work / "rated.csv", work / "suspended.csv"
    await asyncio.to_thread(engine.write_rated, batch, rated_csv)
    clock.lap("write")
    try:
        async with conn.transaction():  # a savepoint: a duplicate key undoes only this copy
            await store.copy_rated(conn, rated_csv)
    except psycopg.errors.UniqueViolation:
        # Some record keys were rated in an earlier batch: they are not charged again,
        # and the batch is rated without them (their allowance must not count).
        keys_csv = work / "keys.csv"
        await asyncio.to_thread(engine.write_keys, keys_csv)
        seen = await store.stage_keys(conn, keys_csv)
        lines = await asyncio.to_thread(engine.lines_of, seen)
        bad += [(line, key, "record_key: rated already in an earlier batch") for line, key in lines]
        await asyncio.to_thread(engine.drop, seen)
        result = await asyncio.to_thread(engine.rate)
        await asyncio.to_thread(engine.write_rated, batch, rated_csv)
        await store.copy_rated(conn, rated_csv)
    clock.lap("copy rated")
    await asyncio.to_thread(engine.write_suspended, batch, suspended_csv)
    if result.suspended:
        await store.suspend(conn, suspended_csv)
    await store.add_allowance(conn, await asyncio.to_thread(engine.batch_usage))
    # The ledger books the batch per account and day; a bill line traces back to the
    # batch's records through this reference (rating.rated_usage by batch, account, day).
    await store.add_usage(
        conn, await asyncio.to_thread(engine.daily_charges), reference=f"rating-batch:{batch}"
    )
    await store.finish_batch(
        conn, batch, rated=result.rated, suspended=result.suspended, malformed=len(bad)
    )
    clock.lap("suspense, allowances, ledger")
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
    return BatchReport(
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


async def suspense_counts(pool: Pool) -> dict[str, int]:
    async with pool.connection() as conn:
        return await store.suspense_counts(conn)
