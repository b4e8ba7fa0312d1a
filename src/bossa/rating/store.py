"""The named queries of rating (sql/queries.sql), as functions that take a connection."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg.errors
from psycopg.types.json import Jsonb

from bossa.db import Conn
from bossa.rating.models import Band, TariffVersion
from bossa.sql import load_queries

__all__ = ["QUERIES"]

QUERIES = load_queries("bossa.rating", "sql/queries.sql")

#: Bytes per write when a file is copied into PostgreSQL.
_COPY_BLOCK = 1 << 20


async def lock_pipeline(conn: Conn, instance: int) -> None:
    await conn.execute(QUERIES["lock_pipeline"], {"instance": instance})


async def batch_by_sha(conn: Conn, sha256: str) -> dict[str, Any] | None:
    return await (await conn.execute(QUERIES["batch_by_sha"], {"sha256": sha256})).fetchone()


async def add_batch(conn: Conn, *, source: str, sha256: str, records: int, actor: str) -> int:
    row = await (
        await conn.execute(
            QUERIES["add_batch"],
            {"source": source, "sha256": sha256, "records": records, "actor": actor},
        )
    ).fetchone()
    assert row is not None
    return int(row["id"])


async def finish_batch(
    conn: Conn, batch: int, *, rated: int, suspended: int, malformed: int
) -> None:
    await conn.execute(
        QUERIES["finish_batch"],
        {"id": batch, "rated": rated, "suspended": suspended, "malformed": malformed},
    )


async def tariffs(conn: Conn) -> list[TariffVersion]:
    rows = await (await conn.execute(QUERIES["tariffs"])).fetchall()
    return [
        TariffVersion(
            product_code=row["product_code"],
            valid_from=row["valid_from"],
            valid_to=row["valid_to"],
            increment=row["increment_s"],
            min_charge=row["min_charge"],
            discount_percent=row["discount_percent"],
            allowance_seconds=row["allowance_seconds"],
            zones={prefix: zone for prefix, zone, _ in row["zones"]},
            rates={(zone, Band(band)): rate for zone, band, rate in row["rates"]},
            included_zones=frozenset(zone for _, zone, included in row["zones"] if included),
        )
        for row in rows
    ]


async def tariff_version(conn: Conn) -> int:
    row = await (await conn.execute(QUERIES["tariff_version"])).fetchone()
    return int(row["version"]) if row else 0


async def open_tariff(conn: Conn, product: str) -> dict[str, Any] | None:
    return await (await conn.execute(QUERIES["open_tariff"], {"product": product})).fetchone()


async def later_tariff(conn: Conn, product: str, valid_from: date) -> date | None:
    row = await (
        await conn.execute(QUERIES["later_tariff"], {"product": product, "valid_from": valid_from})
    ).fetchone()
    return row["valid_from"] if row else None


async def close_tariff(conn: Conn, tariff: int, valid_to: date) -> None:
    await conn.execute(QUERIES["close_tariff"], {"id": tariff, "valid_to": valid_to})


async def add_tariff(conn: Conn, tariff: TariffVersion, *, actor: str) -> int:
    row = await (
        await conn.execute(
            QUERIES["add_tariff"],
            {
                "product_code": tariff.product_code,
                "valid_from": tariff.valid_from,
                "valid_to": tariff.valid_to,
                "increment": tariff.increment,
                "min_charge": tariff.min_charge,
                "discount_percent": tariff.discount_percent,
                "allowance_seconds": tariff.allowance_seconds,
                "actor": actor,
            },
        )
    ).fetchone()
    assert row is not None
    tid = int(row["id"])
    async with conn.cursor() as cur:
        await cur.executemany(
            QUERIES["add_zone"],
            [
                (tid, prefix, zone, zone in tariff.included_zones)
                for prefix, zone in tariff.zones.items()
            ],
        )
        await cur.executemany(
            QUERIES["add_rate"],
            [(tid, zone, band.value, rate) for (zone, band), rate in tariff.rates.items()],
        )
    return tid


async def subscriptions_of(
    conn: Conn, numbers: Sequence[str]
) -> list[tuple[str, str, str, datetime, datetime | None]]:
    rows = await (
        await conn.execute(QUERIES["subscriptions_of"], {"numbers": list(numbers)})
    ).fetchall()
    return [
        (r["msisdn"], r["account_id"], r["product_code"], r["valid_from"], r["valid_to"])
        for r in rows
    ]


async def copy_subscriptions(conn: Conn, numbers: Path, out: Path) -> None:
    """The histories of the numbers in `numbers` (one per line), of accounts the ledger
    has, into `out` as CSV: both ways by COPY, no row through Python (a cold pipeline
    loads every number of its first file)."""
    await conn.execute(QUERIES["numbers_table"])
    await copy_file(conn, "copy rating_numbers (msisdn) from stdin (format csv)", numbers)
    await _copy_to(conn, _COPY_SUBSCRIPTIONS, out)


async def copy_allowance(conn: Conn, keys: Path, out: Path) -> None:
    """The allowance counters of the (account, month) pairs in `keys` into `out` (0
    where there is none yet), both ways by COPY."""
    await conn.execute(QUERIES["keys_table"])
    await copy_file(conn, "copy rating_keys (account_id, month) from stdin (format csv)", keys)
    await _copy_to(conn, _COPY_ALLOWANCE, out)


async def _copy_to(conn: Conn, statement: str, path: Path) -> None:
    with path.open("wb") as f:
        async with conn.cursor() as cur, cur.copy(statement) as copy:
            async for block in copy:
                f.write(block)


async def put_subscription(
    conn: Conn, *, msisdn: str, account_id: str, product_code: str, at: datetime
) -> None:
    await conn.execute(QUERIES["end_subscription"], {"msisdn": msisdn, "at": at})
    await conn.execute(
        QUERIES["put_subscription"],
        {"msisdn": msisdn, "account_id": account_id, "product_code": product_code, "at": at},
    )


async def end_subscription_of(conn: Conn, *, msisdn: str, product_code: str, at: datetime) -> bool:
    cursor = await conn.execute(
        QUERIES["end_subscription_of"], {"msisdn": msisdn, "product_code": product_code, "at": at}
    )
    return bool(await cursor.fetchall())


async def allowance_of(conn: Conn, keys: Sequence[tuple[str, str]]) -> list[tuple[str, str, int]]:
    rows = await (
        await conn.execute(
            QUERIES["allowance_of"],
            {"accounts": [a for a, _ in keys], "months": [m for _, m in keys]},
        )
    ).fetchall()
    return [(r["account_id"], r["month"], int(r["seconds"])) for r in rows]


async def copy_file(conn: Conn, statement: str, path: Path) -> None:
    """COPY a CSV file the engine wrote into PostgreSQL, without parsing it in Python."""
    async with conn.cursor() as cur, cur.copy(statement) as copy:
        with path.open("rb") as f:
            while block := f.read(_COPY_BLOCK):
                await copy.write(block)


async def copy_rated_from(conn: Conn, write: Callable[[Path], object]) -> None:
    """COPY the rated rows `write` writes as CSV to the path it is given (a pipe), while
    it writes them: the engine formats rows on its threads as PostgreSQL takes them,
    instead of PostgreSQL waiting for a whole file."""
    await copy_from_writer(conn, _COPY_RATED, write)


async def copy_from_writer(conn: Conn, statement: str, write: Callable[[Path], object]) -> None:
    """COPY what `write` (run in a thread) writes to the path it is given: an anonymous
    pipe's write end, which only this call reads. If `write` fails the COPY fails too
    (no partial rows); if the COPY fails the pipe is drained to its end, so the writer
    never blocks on a pipe no one reads."""
    read_fd, write_fd = os.pipe()

    def produce() -> None:
        try:
            write(Path(f"/dev/fd/{write_fd}"))
        finally:
            # The reader sees the end once the writer's own descriptor is closed too.
            os.close(write_fd)

    producer = asyncio.ensure_future(asyncio.to_thread(produce))
    reader = os.fdopen(read_fd, "rb")
    try:
        async with conn.cursor() as cur, cur.copy(statement) as copy:
            while block := await asyncio.to_thread(reader.read, _COPY_BLOCK):
                await copy.write(block)
            # Inside the COPY: a writer that failed aborts it rather than commit a part.
            await producer
    finally:
        await asyncio.to_thread(_drain, reader)
        await asyncio.wait([producer])
        if not producer.cancelled():
            producer.exception()  # retrieved: the COPY's own error is the one raised


def _drain(reader: Any) -> None:
    with reader:
        while reader.read(_COPY_BLOCK):
            pass


async def stage_keys(conn: Conn, path: Path) -> list[str]:
    """The record keys in `path` (one per line) that are rated already."""
    await conn.execute(QUERIES["stage_table"])
    await copy_file(conn, "copy rating_incoming (record_key) from stdin (format csv)", path)
    rows = await (await conn.execute(QUERIES["already_rated"])).fetchall()
    return [r["record_key"] for r in rows]


async def unsuspend_rated(conn: Conn, batch: int) -> int:
    """Take the records the batch rated out of suspense, by the batch's own rows (its
    cost follows the batch and suspense, not all rated usage)."""
    return (await conn.execute(QUERIES["unsuspend_rated"], {"batch": batch})).rowcount


async def unsuspend_rated_before(conn: Conn, batch: int) -> int:
    """Take out of suspense the records the batch suspended whose key an earlier batch
    rated (run once its suspended records are in)."""
    return (await conn.execute(QUERIES["unsuspend_rated_before"], {"batch": batch})).rowcount


async def add_changes(
    conn: Conn, *, numbers: Sequence[str] = (), accounts: Sequence[str] = ()
) -> None:
    """Log changed account data for the pipelines' memory, in the caller's transaction
    (which then holds the changes lock until it commits)."""
    rows = [(n, None) for n in numbers] + [(None, a) for a in accounts]
    if not rows:
        return
    await conn.execute(QUERIES["lock_changes"])
    await conn.execute(
        QUERIES["add_changes"],
        {"numbers": [n for n, _ in rows], "accounts": [a for _, a in rows]},
    )


async def changes_since(conn: Conn, seq: int) -> tuple[int, list[str], int]:
    """(highest sequence, numbers changed, account changes) after `seq`, read while no
    writer is in flight."""
    await conn.execute(QUERIES["read_lock_changes"])
    try:
        row = await (await conn.execute(QUERIES["changes_since"], {"seq": seq})).fetchone()
    finally:
        await conn.execute(QUERIES["read_unlock_changes"])
    assert row is not None
    return int(row["seq"]), list(row["numbers"]), int(row["accounts"])


async def last_change(conn: Conn) -> int:
    """The highest sequence of rating.changes, read while no writer is in flight."""
    await conn.execute(QUERIES["read_lock_changes"])
    try:
        row = await (await conn.execute(QUERIES["last_change"])).fetchone()
    finally:
        await conn.execute(QUERIES["read_unlock_changes"])
    return int(row["seq"]) if row else 0


async def purge_changes(conn: Conn) -> None:
    await conn.execute(QUERIES["purge_changes"])


async def holds(conn: Conn) -> list[str]:
    rows = await (await conn.execute(QUERIES["holds"])).fetchall()
    return [r["account_id"] for r in rows]


async def add_holds(conn: Conn, accounts: Sequence[str], run: str) -> None:
    await conn.execute(QUERIES["add_holds"], {"accounts": list(accounts), "run": run})


async def remove_holds(conn: Conn, accounts: Sequence[str]) -> int:
    return (await conn.execute(QUERIES["remove_holds"], {"accounts": list(accounts)})).rowcount


async def allowance_version(conn: Conn, instance: int) -> int:
    row = await (
        await conn.execute(QUERIES["allowance_version"], {"instance": instance})
    ).fetchone()
    return int(row["version"]) if row else 0


async def bump_allowance_version(conn: Conn, instance: int) -> int:
    row = await (
        await conn.execute(QUERIES["bump_allowance_version"], {"instance": instance})
    ).fetchone()
    assert row is not None
    return int(row["version"])


async def stage_recycle(
    conn: Conn,
    path: Path,
    *,
    reason: str | None,
    account: str | None,
    batch: int | None,
    fixed: bool,
    limit: int,
    source: str | None = None,
) -> None:
    """Suspended records matching the filter, written to `path` as a CDR file."""
    await conn.execute(QUERIES["recycle_table"])
    await conn.execute(
        QUERIES["recycle_stage"],
        {
            "reason": reason,
            "account": account,
            "batch": batch,
            "source": source,
            "fixed": fixed,
            "limit": limit,
        },
    )
    await copy_out(conn, "rating_recycle", path)


async def stage_rerate(
    conn: Conn, path: Path, *, start: datetime, end: datetime, account: str | None
) -> tuple[list[str], list[str]]:
    """A period's rated usage, written to `path` as a CDR file; returns the ledger
    rows' scope (accounts, references) it was booked in."""
    await conn.execute(QUERIES["rerate_table"])
    await conn.execute(QUERIES["rerate_stage"], {"start": start, "end": end, "account": account})
    await copy_out(conn, "rating_rerate", path)
    row = await (await conn.execute(QUERIES["rerate_scope"])).fetchone()
    assert row is not None
    return list(row["accounts"] or []), list(row["refs"] or [])


async def rerate_release(
    conn: Conn,
    *,
    accounts: Sequence[str],
    references: Sequence[str],
    start: datetime,
    end: datetime,
) -> int:
    """Take the staged period's usage back: its ledger rows, its allowance, its rows."""
    row = await (
        await conn.execute(
            QUERIES["remove_usage"],
            {
                "accounts": list(accounts),
                "references": list(references),
                "start": start,
                "end": end,
            },
        )
    ).fetchone()
    await conn.execute(QUERIES["rerate_give_back"])
    await conn.execute(QUERIES["rerate_remove"])
    return int(row["removed"]) if row else 0


async def staged_charge(conn: Conn) -> int:
    row = await (await conn.execute(QUERIES["staged_charge"])).fetchone()
    return int(row["charge"]) if row else 0


async def add_audit(conn: Conn, *, actor: str, action: str, detail: dict[str, Any]) -> int:
    row = await (
        await conn.execute(
            QUERIES["add_audit"], {"actor": actor, "action": action, "detail": Jsonb(detail)}
        )
    ).fetchone()
    assert row is not None
    return int(row["id"])


async def copy_out(conn: Conn, table: str, path: Path) -> None:
    """Write a staged table's CDR columns to `path` as a CDR file (with its header)."""
    if table not in ("rating_recycle", "rating_rerate"):
        raise ValueError(table)
    statement = (
        "copy (select record_key, msisdn, destination, "  # noqa: S608 -- a name checked above
        f"to_char(started_at, 'YYYY-MM-DD HH24:MI:SS'), duration from {table} "
        "order by record_key) to stdout (format csv)"
    )
    with path.open("wb") as f:
        f.write(b"record_key,msisdn,destination,start,duration\n")
        async with conn.cursor() as cur, cur.copy(statement) as copy:
            async for block in copy:
                f.write(block)


async def suspend(conn: Conn, path: Path) -> None:
    """Suspended records into suspense: straight in by COPY when none of their keys is
    suspended already (the common case: one write of each row), else through a staging
    table whose rows count another attempt on those keys."""
    try:
        async with conn.transaction():  # a savepoint: a key suspended before undoes it
            await copy_file(conn, _COPY_SUSPENSE, path)
    except psycopg.errors.UniqueViolation:
        await conn.execute(QUERIES["suspense_stage"])
        await copy_file(conn, _COPY_SUSPENDED, path)
        await conn.execute(QUERIES["suspend"])


async def add_allowance_file(conn: Conn, path: Path) -> None:
    """Count a batch's included seconds (account, month, seconds as CSV) into the
    accounts' months: in by COPY, added by one statement."""
    await conn.execute(QUERIES["batch_usage_table"])
    await copy_file(
        conn, "copy rating_batch_usage (account_id, month, seconds) from stdin (format csv)", path
    )
    await conn.execute(QUERIES["add_batch_usage"])


async def add_usage_file(conn: Conn, path: Path, *, reference: str) -> int:
    """Book a batch's charges per account and day (CSV) in the ledger: in by COPY, handed
    to ledger.add_usage as arrays built in the server (no row through Python)."""
    await conn.execute(QUERIES["daily_table"])
    await copy_file(
        conn, "copy rating_daily (account_id, day, charge) from stdin (format csv)", path
    )
    row = await (
        await conn.execute(QUERIES["add_daily_usage"], {"reference": reference})
    ).fetchone()
    return int(row["added"]) if row and row["added"] is not None else 0


async def suspended(
    conn: Conn, *, reason: str | None, after: str, limit: int
) -> list[dict[str, Any]]:
    return await (
        await conn.execute(QUERIES["suspended"], {"reason": reason, "after": after, "limit": limit})
    ).fetchall()


async def rated_records(conn: Conn, keys: list[str]) -> list[dict[str, Any]]:
    return await (await conn.execute(QUERIES["rated_records"], {"keys": keys})).fetchall()


async def suspense_counts(conn: Conn) -> dict[str, int]:
    rows = await (await conn.execute(QUERIES["suspense_counts"])).fetchall()
    return {r["reason"]: int(r["records"]) for r in rows}


async def usage_of(
    conn: Conn, account: str, start: datetime, end: datetime, limit: int
) -> list[dict[str, Any]]:
    return await (
        await conn.execute(
            QUERIES["usage_of"], {"account": account, "start": start, "end": end, "limit": limit}
        )
    ).fetchall()


async def gauges(conn: Conn) -> dict[str, Any]:
    row = await (await conn.execute(QUERIES["gauges"])).fetchone()
    assert row is not None
    return row


# The column lists of the engine's CSV files: the engine writes exactly these, in order.
RATED_COLUMNS = (
    "record_key, batch_id, account_id, msisdn, destination, product_code, zone, "
    "started_at, duration, billed, free, charge, allowance_used"
)
SUSPENDED_COLUMNS = (
    "record_key, batch_id, msisdn, destination, started_at, duration, reason, account_id"
)
_COPY_RATED = f"copy rating.rated_usage ({RATED_COLUMNS}) from stdin (format csv)"
_COPY_SUSPENDED = f"copy rating_suspended ({SUSPENDED_COLUMNS}) from stdin (format csv)"
_COPY_SUSPENSE = f"copy rating.suspense ({SUSPENDED_COLUMNS}) from stdin (format csv)"
# COPY takes no parameters: these read the temp tables the pipeline copied in.
_COPY_SUBSCRIPTIONS = (
    "copy (select s.msisdn, s.account_id, s.product_code, s.valid_from, s.valid_to "
    "from rating_numbers n join rating.subscriptions s using (msisdn) "
    "join ledger.billing_accounts a on a.id = s.account_id) to stdout (format csv)"
)
_COPY_ALLOWANCE = (
    "copy (select k.account_id, k.month, coalesce(u.seconds, 0) "
    "from rating_keys k left join rating.allowance_usage u using (account_id, month)) "
    "to stdout (format csv)"
)
