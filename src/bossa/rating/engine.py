"""The vectorised rating engine: a whole file of usage records rated in a few DuckDB
statements, against the tariffs and the account data held in pipeline memory.

Why DuckDB, and what the measurement says (`python -m bench.rating.run`, which runs
this engine and the same rules written in Polars, bench/rating/polars_engine.py, on the
same file and checks that both charge every record the same):
- its CSV reader keeps going past broken lines and reports each one with its line
  number (`store_rejects`), which the error file needs; Polars' reader either stops or
  skips them without saying which;
- the rules are one SQL statement a reader checks against the models line by line
  (longest-prefix zones by one hash join per prefix length, the subscription and tariff
  valid at the call's start, the band of the start hour by an equality join and band
  segments by a range join for the few calls that cross a band boundary, allowances as
  a running sum over a window);
- it writes rated rows as CSV into a pipe that PostgreSQL's `COPY` reads as they are
  written, without Python touching each row (a binary COPY would need Python to encode
  every row, or a second connection, outside the batch's transaction, through DuckDB's
  postgres extension);
- measured, the two are within this machine's noise of each other, and this engine
  does more in that time (line checks with line numbers, suspense reasons) than the
  Polars version (well-formed records of known numbers only). Full runs on 1,000,000
  CDRs the same afternoon (2026-11-29, 2 cores loaded by other work, bench/RESULTS.md):
  DuckDB 95,647 vs Polars 63,099 CDRs/s (1.52x), then 42,870 vs 58,860 (0.73x); quick
  runs on 100,000 gave 0.39x-0.93x. An earlier measurement had Polars 1.6x faster at the
  rating step alone; since then the allowance's running sum runs over the calls in
  included zones only, per-call groupings key on the line number instead of the record
  key, and duplicate keys are found by a grouping instead of a window over the batch (an
  A/B in one run on 200,000 CDRs: read and check 0.62 -> 0.31 s, rate 1.20 -> 0.85 s,
  the same charges). Polars would be worth another look only with the line checks
  written in it too, measured on a quiet machine. Later (2026-11-29, 18:13 UTC, same
  process, main's engine then this one, 1,000,000 CDRs, best of two): read and check
  0.83 -> 0.52 s (one table instead of four copies), rate 1.30 -> 0.94 s (zones by one
  join per prefix length instead of every length per call and a grouping; bands by the
  start hour), 469,406 -> 685,824 CDRs/s, every charge and error line the same.
This module holds no I/O of the database: the service moves its
results into PostgreSQL.
"""

from __future__ import annotations

import csv
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from bossa.rating.models import MAX_DURATION_S, Band, TariffVersion

__all__ = ["COLUMNS", "EngineResult", "RatingEngine"]

#: The columns of a CDR file, in order, with a header line.
COLUMNS = ("record_key", "msisdn", "destination", "start", "duration")

_SCHEMA = """
create table subs (msisdn varchar, account_id varchar, product_code varchar,
                   valid_from timestamp, valid_to timestamp);
create table tariffs (tariff_id integer, product_code varchar, valid_from date,
                      valid_to date, increment integer, min_charge bigint,
                      discount_percent integer, allowance_seconds bigint);
create table zones (tariff_id integer, prefix varchar, plen integer, zone varchar,
                    included boolean);
create table rates (tariff_id integer, zone varchar, band varchar, rate bigint);
create table used (account_id varchar, month varchar, seconds bigint);
create table checked (record_key varchar, msisdn varchar, destination varchar,
                      start timestamp, duration bigint, line bigint, reason varchar);
-- The batch's usage records: the staged lines that passed every check (a view, so a
-- batch is materialised once, as `checked`, not copied again).
create view cdrs as select record_key, msisdn, destination, start, duration, line
                    from checked where reason is null;
create table calendar (istart timestamp, iend timestamp, band varchar);
create table hours (hour timestamp, band varchar, iend timestamp);
create table loaded (msisdn varchar primary key);
create table holds (account_id varchar);
create table result_usage (account_id varchar, month varchar, seconds bigint);
"""

# The rules of bossa.rating.models, set-wise. Each CTE is one rule. `{zone_joins}`,
# `{zone}` and `{included}` are filled by `_zone_sql` from the prefix lengths the tariffs
# use (integers of the engine's own tables, never input).
_RATE = """
create or replace table {target} as
with sub as (                                  -- the subscription held at the call's start
    select c.*, s.account_id, s.product_code
    from {cdrs} c
    left join subs s
      on s.msisdn = c.msisdn and c.start >= s.valid_from
     and (s.valid_to is null or c.start < s.valid_to)
), tar as (                                    -- the tariff version valid on its start date
    select u.*, t.tariff_id, t.increment, t.min_charge, t.discount_percent,
           t.allowance_seconds
    from sub u
    left join tariffs t
      on t.product_code = u.product_code and u.start::date >= t.valid_from
     and (t.valid_to is null or u.start::date < t.valid_to)
), calls as (                                  -- the longest matching prefix
    -- One equality join per prefix length the tariffs use, longest first in the
    -- coalesce: each is a hash lookup of the call, where joining every call to every
    -- length and keeping the longest match per call (a grouping of ~4 rows a call)
    -- cost 3x as much.
    select t.*, {zone} as zone, coalesce({included}, false) as included,
           case when t.duration <= 0 then 0
                else ceil(t.duration / t.increment)::bigint * t.increment end as billed,
           strftime(t.start, '%Y-%m') as month
    from tar t
    {zone_joins}
), rateable as (
    select * from calls
    where account_id is not null and tariff_id is not null and zone is not null
      and not exists (select 1 from holds h where h.account_id = calls.account_id)
), free_of as (                                -- free seconds, consumed in start order
    -- Only calls in included zones use the account's monthly counter: the running sum
    -- runs over them alone (a window over every call cost twice as much).
    select r.line,
           greatest(0, least(r.billed, r.allowance_seconds - coalesce(u.seconds, 0)
                             - (sum(r.billed) over w - r.billed))) as free
    from rateable r
    left join used u on u.account_id = r.account_id and u.month = r.month
    where r.included
    window w as (partition by r.account_id, r.month
                 order by r.start, r.record_key rows unbounded preceding)
), allowed as (
    select r.*, coalesce(f.free, 0) as free
    from rateable r left join free_of f using (line)
), banded as (                                 -- the band interval the call starts in
    -- Most calls end in the interval they start in: their billed seconds after the free
    -- ones are all at that band's rate, found by an equality join on the hour (`hours`
    -- holds each whole hour inside a calendar interval, with the interval). Only calls
    -- that cross an interval's end (or start in an hour a boundary cuts) are split
    -- over the calendar by a range join and a grouping.
    select a.*, h.band as band0,
           coalesce(a.start + to_seconds(a.billed) <= h.iend, false) as single
    from allowed a left join hours h on h.hour = date_trunc('hour', a.start)
), segments as (                               -- billed seconds split by time band
    select a.line,
           sum(greatest(0, (epoch(least(k.iend, a.start + to_seconds(a.billed)))
                            - epoch(a.start))::bigint
                           - greatest(a.free, (epoch(greatest(k.istart, a.start))
                                               - epoch(a.start))::bigint))
               * rt.rate) as numerator
    from banded a
    join calendar k on k.istart < a.start + to_seconds(a.billed) and k.iend > a.start
    join rates rt on rt.tariff_id = a.tariff_id and rt.zone = a.zone and rt.band = k.band
    where not a.single
    group by a.line
), charged as (
    select a.* exclude (band0, single),
           (case when a.single then greatest(0, a.billed - a.free) * coalesce(r.rate, 0)
                 else coalesce(s.numerator, 0) end + 30) // 60 as base
    from banded a
    left join rates r on r.tariff_id = a.tariff_id and r.zone = a.zone and r.band = a.band0
    left join segments s using (line)
), minimum as (
    select *, case when billed > free then greatest(base, min_charge) else base end as gross
    from charged
)
select record_key, line, msisdn, destination, account_id, product_code, zone, start,
       duration, billed, free, gross - (gross * discount_percent + 50) // 100 as charge,
       month, included, case when included then billed else 0 end as allowance_used,
       null::varchar as reason
from minimum
union all
select record_key, line, msisdn, destination, account_id, product_code, zone, start,
       duration, billed, 0, 0, month, false, 0,
       case when account_id is null then 'unknown_account'
            when exists (select 1 from holds h where h.account_id = calls.account_id)
                then 'billing_in_progress'
            when tariff_id is null then 'no_tariff'
            else 'no_zone' end
from calls
where account_id is null or tariff_id is null or zone is null
   or exists (select 1 from holds h where h.account_id = calls.account_id)
"""


@dataclass(frozen=True)
class EngineResult:
    rated: int
    suspended: int
    #: (line, record key, reason) of records that are not usage at all.
    malformed: list[tuple[int, str, str]]


class RatingEngine:
    """One pipeline instance's memory: tariffs, subscriptions and allowance usage, and the
    rating of a batch against them. Not thread-safe: one per pipeline thread."""

    def __init__(self, *, threads: int | None = None, memory_limit: str = "2GB") -> None:
        self.db = duckdb.connect(":memory:")
        if threads:
            self.db.execute(f"set threads = {int(threads)}")
        if not memory_limit[:-2].isdigit() or memory_limit[-2:] not in ("MB", "GB"):
            raise ValueError("memory_limit is a whole number of MB or GB, like 2GB")
        self.db.execute(f"set memory_limit = '{memory_limit}'")
        self.db.execute("set preserve_insertion_order = false")
        self.db.execute(_SCHEMA)
        self._rate_sql = _rate_sql([])
        #: The ranges of accounts the staged batch is rated in (`plan`), the result
        #: tables made so far, and each range's "rated" signal for `write_rated`.
        self.parts = 1
        self._made = 0
        self._ready: list[threading.Event] = []
        self._failed: BaseException | None = None

    # -- what the pipeline holds -----------------------------------------------------

    def load_tariffs(self, tariffs: Sequence[TariffVersion]) -> None:
        """Replace the tariffs (a reload does not touch account data or allowances)."""
        rows_t, rows_z, rows_r = [], [], []
        for tid, t in enumerate(tariffs):
            rows_t.append(
                (
                    tid,
                    t.product_code,
                    t.valid_from,
                    t.valid_to,
                    t.increment,
                    t.min_charge,
                    t.discount_percent,
                    t.allowance_seconds,
                )
            )
            rows_z += [
                (tid, prefix, len(prefix), zone, zone in t.included_zones)
                for prefix, zone in t.zones.items()
            ]
            rows_r += [(tid, zone, band.value, rate) for (zone, band), rate in t.rates.items()]
        self.db.execute("begin")
        for table in ("tariffs", "zones", "rates"):
            self.db.execute(f"delete from {table}")  # noqa: S608 -- a name from the tuple above
        if rows_t:
            _insert(self.db, "tariffs", rows_t)
        if rows_z:
            _insert(self.db, "zones", rows_z)
        if rows_r:
            _insert(self.db, "rates", rows_r)
        self.db.execute("commit")
        self._rate_sql = _rate_sql(sorted({plen for _, _, plen, _, _ in rows_z}, reverse=True))

    def put_subscriptions(
        self, rows: Iterable[tuple[str, str, str, datetime, datetime | None]]
    ) -> None:
        """Add or replace numbers' subscription histories (msisdn, account, product,
        from, to): every row of a number given replaces all it had."""
        rows = list(rows)
        if not rows:
            return
        self.db.execute("create or replace temp table incoming as select * from subs limit 0")
        _insert(self.db, "incoming", rows)
        self.db.execute("begin")
        self.db.execute("delete from subs where msisdn in (select msisdn from incoming)")
        self.db.execute("insert into subs select * from incoming")
        self.db.execute("commit")

    def write_new_numbers(self, path: Path) -> int:
        """Write the staged batch's numbers not in memory yet (S10) to `path`, one per
        line, for PostgreSQL to join their histories to; returns how many."""
        self.db.execute(
            "create or replace temp table new_numbers as select distinct msisdn from cdrs "
            "where msisdn not in (select msisdn from loaded)"
        )
        row = self.db.execute("select count(*) from new_numbers").fetchone()
        count = int(row[0]) if row else 0
        if count:
            self.write_csv("select msisdn from new_numbers", path)
        return count

    def read_subscriptions(self, path: Path) -> None:
        """The histories of `write_new_numbers`' numbers, as PostgreSQL's COPY wrote them
        (msisdn, account, product, from, to): they replace what memory held of those
        numbers, and every one of the numbers is loaded from now on, with or without a
        history."""
        self.db.execute(
            """
            create or replace temp table incoming as
            select * from read_csv(?, header = false, auto_detect = false, delim = ',',
                quote = '"', escape = '"',
                columns = {'msisdn': 'varchar', 'account_id': 'varchar',
                           'product_code': 'varchar', 'valid_from': 'timestamp',
                           'valid_to': 'timestamp'})
            """,
            [str(path)],
        )
        self.db.execute("begin")
        self.db.execute("delete from subs where msisdn in (select msisdn from new_numbers)")
        self.db.execute("insert into subs select * from incoming")
        self.db.execute("insert or ignore into loaded select msisdn from new_numbers")
        self.db.execute("commit")

    def write_allowance_keys(self, path: Path) -> int:
        """Write the (account, 'YYYY-MM') pairs the staged batch may use allowance of and
        memory holds no counter of to `path`; returns how many."""
        self.db.execute(
            """
            create or replace temp table new_keys as
            select distinct s.account_id, strftime(c.start, '%Y-%m') as month
            from cdrs c join subs s
              on s.msisdn = c.msisdn and c.start >= s.valid_from
             and (s.valid_to is null or c.start < s.valid_to)
            where not exists (select 1 from used u where u.account_id = s.account_id
                              and u.month = strftime(c.start, '%Y-%m'))
            """
        )
        row = self.db.execute("select count(*) from new_keys").fetchone()
        count = int(row[0]) if row else 0
        if count:
            self.write_csv("select account_id, month from new_keys", path)
        return count

    def read_usage(self, path: Path) -> None:
        """Counters for `write_allowance_keys`' pairs as PostgreSQL's COPY wrote them
        (account, month, seconds; 0 where it has none)."""
        self.db.execute(
            """
            insert into used
            select * from read_csv(?, header = false, auto_detect = false, delim = ',',
                quote = '"', escape = '"',
                columns = {'account_id': 'varchar', 'month': 'varchar', 'seconds': 'bigint'})
            """,
            [str(path)],
        )

    def put_usage(
        self, rows: Iterable[tuple[str, str, int]], keys: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Allowance seconds already used per (account, 'YYYY-MM'), as the database has
        them: replaces what the engine held for those keys. `keys` the database has no row
        for are held as 0 seconds (loaded: nothing used yet)."""
        rows = list(rows)
        have = {(a, m) for a, m, _ in rows}
        rows += [(a, m, 0) for a, m in keys if (a, m) not in have]
        if not rows:
            return
        self.db.execute("create or replace temp table incoming_u as select * from used limit 0")
        _insert(self.db, "incoming_u", rows)
        self.db.execute("begin")
        self.db.execute(
            "delete from used where (account_id, month) in "
            "(select (account_id, month) from incoming_u)"
        )
        self.db.execute("insert into used select * from incoming_u")
        self.db.execute("commit")

    def forget_numbers(self, numbers: Sequence[str]) -> None:
        """Drop these numbers' histories from memory: their next usage loads them again
        (a business event changed them, or they were unknown and may be known now)."""
        if not numbers:
            return
        self.db.execute("create or replace temp table gone (msisdn varchar)")
        _insert(self.db, "gone", [(n,) for n in numbers])
        self.db.execute("begin")
        self.db.execute("delete from subs where msisdn in (select msisdn from gone)")
        self.db.execute("delete from loaded where msisdn in (select msisdn from gone)")
        self.db.execute("commit")

    def forget_all(self) -> None:
        """Drop all account data and allowance counters (tariffs stay)."""
        for table in ("subs", "loaded", "used", "holds"):
            self.db.execute(f"delete from {table}")  # noqa: S608 -- a name from the tuple

    def mark_loaded(self, numbers: Sequence[str]) -> None:
        """These numbers' histories are in memory (an empty history is remembered too,
        until `forget_numbers`)."""
        if numbers:
            _insert(self.db, "loaded", [(n,) for n in numbers])

    def put_holds(self, accounts: Sequence[str]) -> None:
        """The accounts being billed now (S14): replaces the set held."""
        self.db.execute("delete from holds")
        _insert(self.db, "holds", [(a,) for a in accounts])

    def unknown_numbers(self) -> list[str]:
        """Numbers of the rated batch suspended as of an unknown account."""
        return [
            str(n)
            for (n,) in self.db.execute(
                "select distinct msisdn from result where reason = 'unknown_account'"
            ).fetchall()
        ]

    def commit_usage(self) -> None:
        """The rated batch committed: its allowance use counts in memory from now on."""
        self.db.execute("delete from result_usage")
        self.db.execute(
            "insert into result_usage select account_id, month, sum(allowance_used)::bigint "
            "from result where reason is null and included group by 1, 2"
        )
        self.db.execute(
            "update used set seconds = used.seconds + r.seconds from result_usage r "
            "where used.account_id = r.account_id and used.month = r.month"
        )

    def known_numbers(self) -> int:
        row = self.db.execute("select count(distinct msisdn) from subs").fetchone()
        return int(row[0]) if row else 0

    # -- rating ------------------------------------------------------------------------

    def stage_csv(self, path: Path) -> list[tuple[int, str, str]]:
        """Read a CDR file into the batch; returns the lines that are not CDRs (line,
        record key or '', reason). Columns: record_key, msisdn, destination, start,
        duration, with a header (line 1)."""
        db = self.db
        # The file is read, numbered and checked in one statement into `checked` (the
        # batch's only copy: `cdrs` is the view of its good lines). Line numbers are the
        # reader's row number + 1 (the header) until lines were rejected, fixed below.
        db.execute(
            """
            create or replace table checked as
            select record_key, msisdn, destination, start_ts as start, seconds as duration,
                   rn + 1 as line,
                   case
                when record_key is null or record_key = '' or length(record_key) > 128
                    then 'record_key: missing or longer than 128 characters'
                when msisdn is null or not regexp_full_match(msisdn, '[0-9]{1,15}')
                    then 'msisdn: not 1-15 digits'
                when destination is null or not regexp_full_match(destination, '[0-9]{1,32}')
                    then 'destination: not 1-32 digits'
                when start_ts is null
                    then 'start: not a time (YYYY-MM-DD HH:MM:SS)'
                when seconds is null
                    then 'duration: not a whole number of seconds'
                when seconds not between 0 and $max
                    then 'duration: not between 0 and ' || $max || ' seconds'
                   end as reason
            from (select *, row_number() over () as rn,
                         try_cast(start as timestamp) as start_ts,
                         try_cast(duration as bigint) as seconds
                  from read_csv($path,
                    header = true, all_varchar = true, store_rejects = true,
                    rejects_table = 'rejects', rejects_scan = 'scans',
                    columns = {'record_key': 'varchar', 'msisdn': 'varchar',
                               'destination': 'varchar', 'start': 'varchar',
                               'duration': 'varchar'}))
            """,
            {"path": str(path), "max": MAX_DURATION_S},
        )
        rejected = db.execute("select line, error_message from rejects order by line").fetchall()
        if rejected:
            # Rejected lines are not in `checked`: the n-th kept row sits after the
            # rejected lines whose gap start (line - their rank) is at or before n.
            db.execute(
                """
                update checked set line = line + (
                    select count(*) from (select line - row_number() over (order by line) as gap
                                          from rejects) g where g.gap <= checked.line - 1)
                """
            )
        # A key seen twice: every line after its first is a duplicate, unless it failed a
        # check above already (the first counts malformed lines too). Found by a grouping
        # (parallel), not a window over every line partitioned by key (a sort).
        db.execute(
            """
            update checked set reason = 'record_key: duplicate in this batch'
            from (select record_key, min(line) as first from checked
                  group by record_key having count(*) > 1) d
            where checked.record_key = d.record_key and checked.line <> d.first
              and checked.reason is null
            """
        )
        bad = [(int(line), "", f"unreadable line: {error}"[:200]) for line, error in rejected]
        return bad + [
            (int(line), str(key or ""), str(reason))
            for line, key, reason in db.execute(
                "select line, record_key, reason from checked where reason is not null "
                "order by line"
            ).fetchall()
        ]

    def stage_records(
        self, records: Iterable[tuple[str, str, str, str, str]], workdir: Path
    ) -> list[tuple[int, str, str]]:
        """The same as `stage_csv` for records given as text columns (the API's intake):
        written to a file in `workdir` first, so both intakes share one reader."""
        with tempfile.NamedTemporaryFile(
            "w", dir=workdir, suffix=".csv", newline="", encoding="utf-8", delete=False
        ) as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            writer.writerows(records)
        try:
            return self.stage_csv(Path(f.name))
        finally:
            Path(f.name).unlink(missing_ok=True)

    def rate(self, parts: int = 1) -> EngineResult:
        """Rate the staged batch into the `result` relation (in `parts` account ranges,
        one after the other: the same rows as in one)."""
        self.plan(parts)
        for part in range(self.parts):
            self.rate_part(part)
        return self.rated()

    def plan(self, parts: int = 1) -> None:
        """Prepare rating the staged batch in `parts` ranges of accounts (fewer when the
        batch has fewer accounts), each a statement of its own, so that the first
        range's rated rows can go to PostgreSQL while the next ranges are rated
        (`rate_part`, `write_rated`). Every record of an account is in one range: the
        allowance's running sum is per account. Records of no account go with the
        first range (they are suspended, never copied as rated)."""
        db = self.db
        span = db.execute(
            "select min(start)::date, (max(start) + to_seconds(?))::date from cdrs",
            [MAX_DURATION_S],
        ).fetchone()
        db.execute("delete from calendar")
        db.execute("delete from hours")
        if span and span[0] is not None:
            _insert(db, "calendar", _calendar(span[0], span[1]))
            # Only hours wholly inside one interval: an hour a boundary cuts has no row,
            # and its calls take the calendar's range join.
            db.execute(
                """
                insert into hours
                select h.hour, k.band, k.iend
                from calendar k,
                     unnest(generate_series(date_trunc('hour', k.istart), k.iend,
                                            interval 1 hour)) as h(hour)
                where h.hour >= k.istart and h.hour + interval 1 hour <= k.iend
                """
            )
        for part in range(self._made):
            db.execute(f"drop table if exists result_{int(part)}")
        parts = max(1, int(parts))
        if parts > 1:
            # The account each record's number had at its start, as the rating
            # statement finds it (the lowest, should histories overlap: one range each).
            db.execute(
                """
                create or replace temp table line_account as
                select c.line, min(s.account_id) as account_id
                from cdrs c
                left join subs s
                  on s.msisdn = c.msisdn and c.start >= s.valid_from
                 and (s.valid_to is null or c.start < s.valid_to)
                group by c.line
                """
            )
            # Range bounds by the records' accounts (ranges of about as many records).
            row = db.execute(
                "select quantile_disc(account_id, ?) from line_account "
                "where account_id is not null",
                [[i / parts for i in range(1, parts)]],
            ).fetchone()
            bounds = sorted(set(row[0])) if row and row[0] else []
            parts = len(bounds) + 1
            db.execute(
                """
                create or replace temp table line_part as
                select line, case when account_id is null then 0
                                  else len(list_filter(?::varchar[], lambda b: b <= account_id))
                             end as part
                from line_account
                """,
                [bounds],
            )
        self.parts = self._made = parts
        self._ready = [threading.Event() for _ in range(parts)]
        self._failed = None

    def rate_part(self, part: int) -> None:
        """Rate one range of `plan` into `result_<part>` and let `write_rated` take it."""
        if self.parts == 1:
            source = "cdrs"
        else:
            source = (
                "(select * from cdrs where line in "  # noqa: S608 -- an int
                f"(select line from line_part where part = {int(part)}))"
            )
        sql = self._rate_sql.replace("{target}", f"result_{int(part)}").replace("{cdrs}", source)
        self.db.execute(sql)
        self._ready[part].set()

    def rate_rest(self) -> EngineResult:
        """Rate the ranges after the first (`plan`, `rate_part(0)`), then `rated`. If
        one fails, `write_rated` fails too instead of waiting for it."""
        row = self.db.execute("select current_setting('threads')").fetchone()
        threads = int(row[0]) if row else 1
        try:
            # One thread while PostgreSQL takes the rows: its COPY is the batch's longest
            # step, and DuckDB on every core would take its core from it.
            if self.parts > 1:
                self.db.execute("set threads = 1")
            for part in range(1, self.parts):
                self.rate_part(part)
            return self.rated()
        except BaseException as exc:
            self.abandon(exc)
            raise
        finally:
            self.db.execute(f"set threads = {threads}")

    def abandon(self, exc: BaseException) -> None:
        """The batch's rating failed: a `write_rated` waiting for a range raises."""
        self._failed = exc
        for ready in self._ready:
            ready.set()

    def rated(self) -> EngineResult:
        """Every range rated: `result` is their rows; the counts of rated and suspended."""
        db = self.db
        union = " union all ".join(
            f"select * from result_{int(p)}"  # noqa: S608 -- an int
            for p in range(self.parts)
        )
        db.execute(f"create or replace view result as {union}")
        counts = db.execute(
            "select count(*) filter (where reason is null), "
            "count(*) filter (where reason is not null) from result"
        ).fetchone()
        assert counts is not None
        return EngineResult(rated=int(counts[0]), suspended=int(counts[1]), malformed=[])

    def staged(self) -> int:
        row = self.db.execute("select count(*) from cdrs").fetchone()
        return int(row[0]) if row else 0

    def numbers(self) -> list[str]:
        """The distinct numbers of the staged batch not in memory yet (S10: a number's
        history is loaded on its first usage, and kept)."""
        return [
            str(n)
            for (n,) in self.db.execute(
                "select distinct msisdn from cdrs where msisdn not in (select msisdn from loaded)"
            ).fetchall()
        ]

    def allowance_keys(self) -> list[tuple[str, str]]:
        """(account, 'YYYY-MM') pairs the staged batch may use allowance of, of which
        memory holds no counter yet."""
        return [
            (str(a), str(m))
            for a, m in self.db.execute(
                """
                select distinct s.account_id, strftime(c.start, '%Y-%m') as month
                from cdrs c join subs s
                  on s.msisdn = c.msisdn and c.start >= s.valid_from
                 and (s.valid_to is null or c.start < s.valid_to)
                where not exists (select 1 from used u where u.account_id = s.account_id
                                  and u.month = strftime(c.start, '%Y-%m'))
                """
            ).fetchall()
        ]

    def reset_usage(self) -> None:
        self.db.execute("delete from used")

    def drop(self, keys: Sequence[str]) -> None:
        """Take these record keys out of the staged batch."""
        self.db.execute("create or replace temp table dropped (record_key varchar)")
        _insert(self.db, "dropped", [(k,) for k in keys])
        self.db.execute(
            "delete from checked where reason is null "
            "and record_key in (select record_key from dropped)"
        )

    def lines_of(self, keys: Sequence[str]) -> list[tuple[int, str]]:
        self.db.execute("create or replace temp table wanted (record_key varchar)")
        _insert(self.db, "wanted", [(k,) for k in keys])
        return [
            (int(line), str(key))
            for line, key in self.db.execute(
                "select line, record_key from cdrs where record_key in "
                "(select record_key from wanted) order by line"
            ).fetchall()
        ]

    def write_rated(self, batch: int, path: Path) -> None:
        """Write the rated rows as CSV to `path`, range after range as each is rated
        (`plan`): on a cursor of its own, so it streams one range while `rate_part`
        rates the next. Raises if a range failed to rate."""
        columns = (
            "account_id, msisdn, destination, product_code, zone, start, duration, billed, "
            "free, charge, allowance_used"
        )
        cur = self.db.cursor()
        try:
            for part in range(self.parts):
                self._ready[part].wait()
                if self._failed is not None:
                    raise RuntimeError("rating the batch failed") from self._failed
                # In the order of rated_usage's (account_id, started_at) index, ranges in
                # account order too: PostgreSQL then inserts its entries page after page
                # (bench/rating/copy_ab.py: COPY of 89,063 rows, file order 1.26 s, this
                # order 1.04 s).
                query = (
                    f"select record_key, {int(batch)}, {columns} "  # noqa: S608 -- ints
                    f"from result_{int(part)} where reason is null order by account_id, start"
                )
                cur.execute(f"copy ({query}) to '{_quoted_path(path)}' (format csv, header false)")
        finally:
            cur.close()

    def write_batch_files(self, batch: int, work: Path) -> tuple[int, int]:
        """Write what the batch books besides its rated rows, as CSV for PostgreSQL's
        COPY: `suspended.csv` (`write_suspended`), `batch_usage.csv` (included seconds
        used per account and month) and `daily.csv` (charges per account and day, what
        the ledger books). Runs on a cursor of its own, so it may run while another
        thread streams the rated rows (`write_rated`). Returns the rows of
        batch_usage.csv and daily.csv."""
        cur = self.db.cursor()
        try:
            self.write_suspended(batch, work / "suspended.csv", cur)
            counts: list[int] = []
            for query, name in (
                (
                    # In the order of the counters' primary key, which the upsert walks.
                    "select account_id, month, sum(billed)::bigint from result "
                    "where reason is null and included group by 1, 2 order by 1, 2",
                    "batch_usage.csv",
                ),
                (
                    "select account_id, date_trunc('day', start), sum(charge)::bigint "
                    "from result where reason is null group by 1, 2 having sum(charge) > 0",
                    "daily.csv",
                ),
            ):
                # COPY answers the rows it wrote.
                row = cur.execute(
                    f"copy ({query}) to '{_quoted_path(work / name)}' (format csv, header false)"
                ).fetchone()
                counts.append(int(row[0]) if row else 0)
            return counts[0], counts[1]
        finally:
            cur.close()

    def write_suspended(
        self, batch: int, path: Path, cur: duckdb.DuckDBPyConnection | None = None
    ) -> None:
        columns = "msisdn, destination, start, duration, reason, account_id"
        # In record key order, suspense's primary key: its entries go in page after page
        # instead of each at a random leaf.
        query = (
            f"select record_key, {int(batch)}, {columns} from result "  # noqa: S608 -- an int
            "where reason is not null order by record_key"
        )
        (cur or self.db).execute(
            f"copy ({query}) to '{_quoted_path(path)}' (format csv, header false)"
        )

    def write_keys(self, path: Path) -> None:
        self.write_csv("select record_key from cdrs", path)

    def totals(self) -> tuple[int, int]:
        """(records rated, total charge) of the rated batch."""
        row = self.db.execute(
            "select count(*), coalesce(sum(charge), 0) from result where reason is null"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def rows(self, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.db.execute(query, params or []).fetchall()

    def write_csv(self, query: str, path: Path) -> None:
        """Write a query over `result` as CSV without a header, for PostgreSQL's COPY."""
        self.db.execute(f"copy ({query}) to '{_quoted_path(path)}' (format csv, header false)")

    def close(self) -> None:
        self.db.close()


def _insert(db: duckdb.DuckDBPyConnection, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert rows in one statement: each column goes in as one list parameter and is
    unnested (DuckDB's executemany costs a statement per row, ~100x slower)."""
    if not rows:
        return
    columns = list(zip(*rows, strict=True))
    unnest = ", ".join(f"unnest(${i + 1})" for i in range(len(columns)))
    db.execute(f"insert into {table} select {unnest}", [list(c) for c in columns])


def _quoted_path(path: Path) -> str:
    text = str(path)
    if "'" in text:
        raise ValueError("the rating work directory must not contain a quote")
    return text


def _calendar(first: date, last: date) -> list[tuple[datetime, datetime, str]]:
    """Band intervals for every day from `first` to `last`, inclusive."""
    rows: list[tuple[datetime, datetime, str]] = []
    day = first
    while day <= last:
        midnight = datetime.combine(day, datetime.min.time())
        if day.weekday() >= 5:
            rows.append((midnight, midnight + timedelta(days=1), Band.WEEKEND.value))
        else:
            eight, twenty = midnight + timedelta(hours=8), midnight + timedelta(hours=20)
            rows += [
                (midnight, eight, Band.OFFPEAK.value),
                (eight, twenty, Band.PEAK.value),
                (twenty, midnight + timedelta(days=1), Band.OFFPEAK.value),
            ]
        day += timedelta(days=1)
    return rows


def _rate_sql(lengths: Sequence[int]) -> str:
    """The rating statement for tariffs whose zone prefixes have these lengths (longest
    first): one left join of the zones per length."""
    if not lengths:
        return (
            _RATE.replace("{zone_joins}", "")
            .replace("{zone}", "null::varchar")
            .replace("{included}", "null::boolean")
        )
    joins = "\n    ".join(
        f"left join zones z{n} on z{n}.tariff_id = t.tariff_id and z{n}.plen = {n} "
        f"and z{n}.prefix = left(t.destination, {n})"
        for n in (int(x) for x in lengths)
    )
    zone = "coalesce(" + ", ".join(f"z{int(n)}.zone" for n in lengths) + ")"
    included = "coalesce(" + ", ".join(f"z{int(n)}.included" for n in lengths) + ")"
    return (
        _RATE.replace("{zone_joins}", joins).replace("{zone}", zone).replace("{included}", included)
    )
