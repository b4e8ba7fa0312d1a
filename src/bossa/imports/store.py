"""The named queries of imports (sql/queries.sql), and the SQL composed from a kind's
description (models.KINDS) that stages, checks, applies and exports its rows.

Why composed SQL here when every other module names its queries in queries.sql: one
engine serves four kinds of file whose columns, checks and references differ, and
writing each check four times by hand is how they drift apart. What is composed is only
the code's own description: identifiers through `psycopg.sql.Identifier`, the texts of
checks (patterns, reasons) through `psycopg.sql.Literal`, and every value that comes from
a caller (a line number, the actor) as a bound parameter. The relations named are the
owners' published views and functions, which `tests/imports/test_kinds.py` checks
against their schema.sql like the shape test checks queries.sql.

The staging tables are temporary: the importing session's own, gone with it, never
WAL-logged. A rerun after a kill stages the file again (it must read it anyway to prove
it is the same file) and checks again only the rows after the job's position.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from typing import Any

from psycopg import sql

from bossa.db import Conn
from bossa.imports.models import (
    Check,
    Column,
    ColumnType,
    DateOrder,
    FileFormat,
    ImportJob,
    Kind,
    Relation,
    RowError,
    TogetherOrNone,
)
from bossa.sql import load_queries

__all__ = [
    "QUERIES",
    "STAGE",
    "apply_chunk",
    "begin_job",
    "check_rows",
    "checked",
    "copy_out",
    "create_stage",
    "drop_stage",
    "find_job",
    "finish_job",
    "job",
    "job_errors",
    "jobs",
    "lock_job",
    "prepare_stage",
    "restart_job",
    "save_errors",
    "stage_copy",
    "stage_span",
    "unlock_job",
]

QUERIES = load_queries("bossa.imports", "sql/queries.sql")

#: The temporary tables of an importing session.
STAGE = sql.Identifier("import_stage")
_ERRORS = sql.Identifier("import_stage_errors")
#: Advisory lock namespace of import jobs (the other half is the job id).
LOCK_NAMESPACE = 0x1B055A12
#: A value quoted in a reason is cut to this many characters.
_QUOTED = 40
#: The raw row kept in imports.job_errors (its check constraint's bound).
RAW_MAX = 4096


def _job(row: dict[str, Any] | None) -> ImportJob | None:
    return None if row is None else ImportJob.model_validate(row)


async def _one(conn: Conn, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
    return await (await conn.execute(QUERIES[name], params)).fetchone()


# -- jobs -------------------------------------------------------------------------------


async def begin_job(
    conn: Conn,
    *,
    kind: str,
    sha256: str,
    file_name: str,
    format: FileFormat,
    all_or_nothing: bool,
    actor: str,
) -> ImportJob | None:
    """A new job; None when the file has one already."""
    row = await _one(
        conn,
        "begin_job",
        {
            "kind": kind,
            "sha256": sha256,
            "file_name": file_name,
            "format": format.value,
            "all_or_nothing": all_or_nothing,
            "actor": actor,
        },
    )
    return _job(row)


async def find_job(conn: Conn, kind: str, sha256: str) -> ImportJob | None:
    return _job(await _one(conn, "find_job", {"kind": kind, "sha256": sha256}))


async def job(conn: Conn, job_id: int) -> ImportJob | None:
    return _job(await _one(conn, "job", {"id": job_id}))


async def jobs(
    conn: Conn, *, kind: str | None, status: str | None, before_id: int | None, limit: int
) -> list[ImportJob]:
    rows = await (
        await conn.execute(
            QUERIES["jobs"],
            {"kind": kind, "status": status, "before_id": before_id, "limit": limit},
        )
    ).fetchall()
    return [ImportJob.model_validate(row) for row in rows]


def _lock_key(job_id: int) -> dict[str, int]:
    # Two int4 halves: a namespace of imports', and the job (ids past 2^31 wrap, harmless:
    # two jobs a few billion apart may not run at once).
    return {"namespace": LOCK_NAMESPACE, "id": (job_id % 2**32) - 2**31}


async def lock_job(conn: Conn, job_id: int) -> bool:
    row = await _one(conn, "lock_job", _lock_key(job_id))
    return bool(row and row["locked"])


async def unlock_job(conn: Conn, job_id: int) -> None:
    await conn.execute(QUERIES["unlock_job"], _lock_key(job_id))


async def restart_job(
    conn: Conn, job_id: int, *, all_or_nothing: bool, file_name: str
) -> ImportJob:
    row = await _one(
        conn,
        "restart_job",
        {"id": job_id, "all_or_nothing": all_or_nothing, "file_name": file_name},
    )
    found = _job(row)
    assert found is not None
    return found


async def checked(conn: Conn, job_id: int, rows: int) -> ImportJob:
    found = _job(await _one(conn, "checked", {"id": job_id, "rows": rows}))
    assert found is not None
    return found


async def finish_job(conn: Conn, job_id: int, status: str, last_error: str | None) -> ImportJob:
    row = await _one(conn, "finish_job", {"id": job_id, "status": status, "last_error": last_error})
    found = _job(row)
    assert found is not None
    return found


async def job_errors(conn: Conn, job_id: int, *, after_line: int, limit: int) -> list[RowError]:
    rows = await (
        await conn.execute(
            QUERIES["job_errors"], {"id": job_id, "after_line": after_line, "limit": limit}
        )
    ).fetchall()
    return [RowError(r["line"], r["field"], r["reason"], r["raw"]) for r in rows]


# -- staging ----------------------------------------------------------------------------


async def create_stage(conn: Conn, kind: Kind, *, work_mem_mb: int) -> None:
    """The session's staging tables for `kind`, empty. Every column is text: a value
    that is not a date or a number is a row's error to report, not a COPY to abort."""
    await drop_stage(conn)
    columns = sql.SQL(", ").join(
        sql.SQL("{} text").format(sql.Identifier(name)) for name in kind.names
    )
    # Lines count from 2 (the header is line 1) when COPY fills them in: see stage_copy.
    await conn.execute(
        sql.SQL(
            "create temporary table {} ("
            "line bigint generated by default as identity (start with 2), "
            "problem_field text, problem text, raw text, {})"
        ).format(STAGE, columns)
    )
    await conn.execute(
        sql.SQL(
            "create temporary table {} (line bigint primary key, field text not null, "
            "reason text not null)"
        ).format(_ERRORS)
    )
    # Checks join and sort the whole file: room for them in memory, this session only.
    await conn.execute(
        sql.SQL("select set_config('work_mem', {}, false)").format(sql.Literal(f"{work_mem_mb}MB"))
    )


async def drop_stage(conn: Conn) -> None:
    """The staging tables go, and the session's work_mem is put back: the connection
    returns to the pool for others."""
    await conn.execute(sql.SQL("drop table if exists {}, {}").format(STAGE, _ERRORS))
    await conn.execute("reset work_mem")


async def stage_copy(
    conn: Conn, columns: tuple[str, ...], chunks: AsyncIterable[bytes], *, with_lines: bool
) -> int:
    """COPY CSV into the stage: the file's own bytes (`with_lines` false: the server
    parses them and numbers the rows), or rows our reader made, which carry their line,
    problem and raw text first. Returns the rows copied."""
    names = (["line", "problem_field", "problem", "raw"] if with_lines else []) + list(columns)
    statement = sql.SQL("copy {} ({}) from stdin with (format csv)").format(
        STAGE, sql.SQL(", ").join(map(sql.Identifier, names))
    )
    async with conn.cursor() as cur:
        async with cur.copy(statement) as copy:
            async for chunk in chunks:
                await copy.write(chunk)
        return max(cur.rowcount, 0)


async def truncate_stage(conn: Conn) -> None:
    await conn.execute(sql.SQL("truncate {}").format(STAGE))
    await conn.execute(sql.SQL("alter table {} alter column line restart with 2").format(STAGE))


async def prepare_stage(conn: Conn) -> None:
    """After COPY: an index for chunks by line (BRIN: lines grow with the table's order,
    so it costs next to nothing to build), and statistics for the checks' plans
    (autovacuum never sees a temporary table)."""
    await conn.execute(sql.SQL("create index on {} using brin (line)").format(STAGE))
    await conn.execute(sql.SQL("analyze {}").format(STAGE))


async def stage_span(conn: Conn) -> tuple[int, int]:
    """(rows, last line) of the stage."""
    row = await (
        await conn.execute(sql.SQL("select count(*) as n, max(line) as last from {}").format(STAGE))
    ).fetchone()
    assert row is not None
    return int(row["n"]), int(row["last"] or 0)


# -- checks -----------------------------------------------------------------------------


def _lit(text: str) -> sql.Composable:
    # Statements below run with bound parameters, where a % would be read as one.
    assert "%" not in text, text
    return sql.Literal(text)


def _v(name: str) -> sql.Composable:
    return sql.SQL("s.{}").format(sql.Identifier(name))


def _quoted(name: str) -> sql.Composable:
    return sql.SQL("quote_literal(left({}, {}))").format(_v(name), sql.Literal(_QUOTED))


def _when(condition: sql.Composable, field: str, reason: sql.Composable) -> sql.Composable:
    return sql.SQL("when {} then array[{}, {}]").format(condition, _lit(field), reason)


#: A date of 1900-9999 whose day exists in every month: what nearly every row holds, so
#: one regular expression settles it.
_DATE_COMMON = "^(19|[2-9][0-9])[0-9][0-9]-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$"
#: Days 29-31 of 1900-9999: the month's length decides (the only arithmetic, rarely run).
_DATE_LATE = "^(19|[2-9][0-9])[0-9][0-9]-(0[1-9]|1[0-2])-(29|30|31)$"
#: The shape of any date, whatever its year.
_DATE_SHAPE = "^[0-9][0-9][0-9][0-9]-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"


def _date_checks(column: Column) -> list[sql.Composable]:
    # Without casting (a cast of 2026-02-30 would abort the whole statement), and with one
    # regular expression for a good date: the reason is worked out only for a bad one.
    v, name = _v(column.name), column.name
    last_day = sql.SQL(
        "extract(day from (substr({v}, 1, 7) || '-01')::date + interval '1 month' - "
        "interval '1 day')::int"
    ).format(v=v)
    bad = sql.SQL(
        "case when {v} ~ {common} then false "
        "when {v} ~ {late} then substr({v}, 9, 2)::int > {last_day} else true end"
    ).format(v=v, common=_lit(_DATE_COMMON), late=_lit(_DATE_LATE), last_day=last_day)
    reason = sql.SQL(
        "case when {v} !~ {late} and {v} ~ {shape} then {range} "
        "else {quoted} || ' is not a date (YYYY-MM-DD)' end"
    ).format(
        v=v,
        late=_lit(_DATE_LATE),
        shape=_lit(_DATE_SHAPE),
        range=_lit("must be between 1900-01-01 and 9999-12-31"),
        quoted=_quoted(name),
    )
    return [_when(_given(name, bad), name, reason)]


def _given(name: str, condition: sql.Composable) -> sql.Composable:
    # SQL does not promise to evaluate AND's or OR's operands in order; CASE does, so a
    # cast runs only on a value the earlier tests let through.
    return sql.SQL("case when nullif({}, '') is null then false else {} end").format(
        _v(name), condition
    )


def _column_checks(column: Column) -> list[sql.Composable]:
    v, name = _v(column.name), column.name
    whens: list[sql.Composable] = []
    if column.required:
        whens.append(_when(sql.SQL("nullif({}, '') is null").format(v), name, _lit("is required")))
    whens.append(
        _when(
            sql.SQL("length({}) > {}").format(v, sql.Literal(column.max_length)),
            name,
            _lit(f"is longer than {column.max_length} characters"),
        )
    )
    if column.type is ColumnType.INTEGER:
        whens.append(
            _when(
                _given(name, sql.SQL("length({}) > 20 or {} !~ '^-?[0-9]+$'").format(v, v)),
                name,
                sql.SQL("{} || ' is not a whole number'").format(_quoted(name)),
            )
        )
        low = column.minimum if column.minimum is not None else -(2**63)
        high = column.maximum if column.maximum is not None else 2**63 - 1
        whens.append(
            _when(
                _given(
                    name,
                    sql.SQL("{}::numeric not between {} and {}").format(
                        v, sql.Literal(low), sql.Literal(high)
                    ),
                ),
                name,
                _lit(f"must be between {low} and {high}"),
            )
        )
    elif column.type is ColumnType.DATE:
        whens += _date_checks(column)
    if column.pattern is not None:
        whens.append(
            _when(
                _given(name, sql.SQL("{} !~ {}").format(v, _lit(column.pattern))),
                name,
                sql.SQL("{} || {}").format(_quoted(name), _lit(f" is not {column.pattern_says}")),
            )
        )
    if column.choices:
        whens.append(
            _when(
                _given(
                    name,
                    sql.SQL("{} <> all({})").format(v, sql.Literal(list(column.choices))),
                ),
                name,
                sql.SQL("{} || {}").format(
                    _quoted(name), _lit(f" is not one of {', '.join(column.choices)}")
                ),
            )
        )
    return whens


def _cross_check(check: Check) -> sql.Composable:
    if isinstance(check, DateOrder):
        earlier, later = _v(check.earlier), _v(check.later)
        op = sql.SQL("<=" if check.strict else "<")
        # A missing earlier date is today (a contract without start_date starts today).
        return _when(
            _given(
                check.later,
                sql.SQL("{l}::date {op} coalesce(nullif({e}, '')::date, current_date)").format(
                    l=later, e=earlier, op=op
                ),
            ),
            check.later,
            _lit(f"is {'on or ' if check.strict else ''}before {check.earlier}"),
        )
    assert isinstance(check, TogetherOrNone)
    missing = sql.SQL(" or ").join(
        sql.SQL("nullif({}, '') is null").format(_v(name)) for name in check.needs
    )
    return _when(
        sql.SQL("nullif({}, '') is not null and ({})").format(_v(check.when), missing),
        "/".join(check.needs),
        _lit(f"{' and '.join(check.needs)} must be given with {check.when}"),
    )


def _row_checks(kind: Kind) -> sql.Composed:
    whens: list[sql.Composable] = [
        sql.SQL("when s.problem is not null then array[s.problem_field, s.problem]")
    ]
    for column in kind.columns:
        whens += _column_checks(column)
    whens += [_cross_check(check) for check in kind.checks]
    return sql.SQL(
        "insert into {errors} (line, field, reason) "
        # offset 0: the subquery stays one, so its CASE runs once a row (pulled up, the
        # planner would copy it into the outer filter and run it twice).
        "select line, e[1], e[2] from (select s.line, case {whens} end as e "
        "from {stage} s where s.line > %(after)s offset 0) c where e is not null"
    ).format(errors=_ERRORS, whens=sql.SQL(" ").join(whens), stage=STAGE)


def _duplicates(kind: Kind) -> sql.Composed:
    key = sql.Identifier(kind.key)
    # Over the whole file, the rows before the position included: a row repeats the first
    # of its key wherever that one is.
    return sql.SQL(
        "insert into {errors} (line, field, reason) "
        "select line, {field}, 'repeats line ' || first "
        "from (select line, min(line) over (partition by {key}) as first from {stage} "
        "where nullif({key}, '') is not null) d "
        "where line <> first and line > %(after)s "
        "on conflict (line) do nothing"
    ).format(errors=_ERRORS, field=_lit(kind.key), key=key, stage=STAGE)


def _against_the_database(kind: Kind) -> sql.Composed:
    """Keys that exist already, references to nothing, and references to a row whose
    attribute differs (a contract's account of another customer), in one pass over the
    stage: a left join per relation (each on its unique key, so no row is repeated; a
    reference and a same-value check on one relation and column share one), and a CASE
    that picks, in this order, the first of them that applies. One scan of the file
    instead of one per check: at a million rows each scan was seconds."""
    joins: dict[tuple[str, str, str], tuple[str, Relation]] = {}

    def rel(relation: Relation, key: str, column: str) -> sql.Identifier:
        alias, _ = joins.setdefault((str(relation), key, column), (f"r{len(joins)}", relation))
        return sql.Identifier(alias)

    whens: list[sql.Composable] = []
    existing = rel(kind.existing, kind.key, kind.key)
    whens.append(
        _when(
            sql.SQL("{}.{} is not null").format(existing, sql.Identifier(kind.key)),
            kind.key,
            sql.SQL("{} || ' exists already'").format(_quoted(kind.key)),
        )
    )
    for ref in kind.references:
        alias = rel(ref.relation, ref.key, ref.column)
        whens.append(
            _when(
                sql.SQL("nullif({}, '') is not null and {}.{} is null").format(
                    _v(ref.column), alias, sql.Identifier(ref.key)
                ),
                ref.column,
                sql.SQL("{} || {}").format(_lit(f"no {ref.what} "), _quoted(ref.column)),
            )
        )
    for same in kind.same_values:
        alias = rel(same.relation, same.key, same.column)
        whens.append(
            _when(
                sql.SQL("{a}.{k} is not null and {a}.{attr} is distinct from {eq}").format(
                    a=alias,
                    k=sql.Identifier(same.key),
                    attr=sql.Identifier(same.attribute),
                    eq=_v(same.equals),
                ),
                same.column,
                sql.SQL("{} || {}").format(_quoted(same.column), _lit(f" {same.reason}")),
            )
        )
    left_joins = sql.SQL(" ").join(
        sql.SQL("left join {rel} {a} on {a}.{key} = s.{col}").format(
            rel=sql.Identifier(relation.schema, relation.name),
            a=sql.Identifier(alias),
            key=sql.Identifier(key),
            col=sql.Identifier(column),
        )
        for (_, key, column), (alias, relation) in joins.items()
    )
    return sql.SQL(
        "insert into {errors} (line, field, reason) "
        "select line, e[1], e[2] from (select s.line, case {whens} end as e "
        "from {stage} s {joins} where s.line > %(after)s offset 0) c where e is not null "
        "on conflict (line) do nothing"
    ).format(errors=_ERRORS, whens=sql.SQL(" ").join(whens), stage=STAGE, joins=left_joins)


def check_statements(kind: Kind) -> list[sql.Composed]:
    """In the order a row's first error is chosen: the row's own values, then repeats in
    the file, then the database (exists already, references)."""
    return [_row_checks(kind), _duplicates(kind), _against_the_database(kind)]


async def check_rows(
    conn: Conn, kind: Kind, *, after_line: int, step: Callable[[int], None] | None = None
) -> int:
    """Check the staged rows after `after_line`; returns how many are bad."""
    await conn.execute(sql.SQL("truncate {}").format(_ERRORS))
    for number, statement in enumerate(check_statements(kind), start=1):
        await conn.execute(statement, {"after": after_line})
        if step is not None:
            step(number)
    row = await (
        await conn.execute(sql.SQL("select count(*) as n from {}").format(_ERRORS))
    ).fetchone()
    return int(row["n"]) if row else 0


def _raw(kind: Kind, format: FileFormat, columns: tuple[str, ...]) -> sql.Composable:
    """The row as read, for the error file: the reader's own text for a row it could not
    split, otherwise the staged values written back as CSV in the header's order (or as
    a JSON object)."""
    if format is FileFormat.JSONL:
        pairs = sql.SQL(", ").join(
            sql.SQL("{}, s.{}").format(sql.Literal(name), sql.Identifier(name))
            for name in kind.names
        )
        rebuilt: sql.Composable = sql.SQL("json_strip_nulls(json_build_object({}))::text").format(
            pairs
        )
    else:
        fields = sql.SQL(", ").join(
            sql.SQL(
                "case when s.{c} is null then '' when s.{c} = '' or s.{c} ~ '[\",\\r\\n]' "
                "then '\"' || replace(s.{c}, '\"', '\"\"') || '\"' else s.{c} end"
            ).format(c=sql.Identifier(name))
            for name in columns
        )
        rebuilt = sql.SQL("concat_ws(',', {})").format(fields)
    return sql.SQL("left(coalesce(s.raw, {}), {})").format(rebuilt, sql.Literal(RAW_MAX))


async def save_errors(
    conn: Conn, job_id: int, kind: Kind, format: FileFormat, columns: tuple[str, ...]
) -> None:
    """Keep the checked rows' errors with the job (a rerun rewrites the error file whole)."""
    await conn.execute(
        sql.SQL(
            "insert into imports.job_errors (job_id, line, field, reason, raw) "
            "select %(job)s, e.line, left(e.field, 64), left(e.reason, 1000), {raw} "
            "from {errors} e join {stage} s on s.line = e.line "
            "on conflict (job_id, line) do nothing"
        ).format(raw=_raw(kind, format, columns), errors=_ERRORS, stage=STAGE),
        {"job": job_id},
    )


# -- apply ------------------------------------------------------------------------------


def _typed(column: Column) -> sql.Composable:
    value = sql.SQL("nullif(s.{}, '')").format(sql.Identifier(column.name))
    if column.type is ColumnType.INTEGER:
        return sql.SQL("{}::bigint").format(value)
    if column.type is ColumnType.DATE:
        return sql.SQL("{}::date").format(value)
    return value


def apply_statement(kind: Kind) -> sql.Composed:
    arrays = sql.SQL(", ").join(
        sql.SQL("array_agg({} order by s.line)").format(_typed(column)) for column in kind.columns
    )
    return sql.SQL(
        "select coalesce({fn}({arrays}, %(actor)s), 0) as applied from {stage} s "
        "where s.line > %(low)s and s.line <= %(high)s and s.problem is null "
        "and not exists (select 1 from {errors} e where e.line = s.line)"
    ).format(
        fn=sql.Identifier(kind.apply.schema, kind.apply.name),
        arrays=arrays,
        stage=STAGE,
        errors=_ERRORS,
    )


async def apply_chunk(conn: Conn, kind: Kind, *, low: int, high: int, actor: str) -> int:
    """Apply the good staged rows of lines (low, high] through the owner's function."""
    row = await (
        await conn.execute(apply_statement(kind), {"low": low, "high": high, "actor": actor})
    ).fetchone()
    return int(row["applied"]) if row else 0


async def advance(conn: Conn, job_id: int, *, position: int, applied: int) -> ImportJob:
    found = _job(
        await _one(conn, "advance", {"id": job_id, "position": position, "applied": applied})
    )
    assert found is not None
    return found


# -- export -----------------------------------------------------------------------------

#: What a spreadsheet reads as a formula when a cell starts with it.
FORMULA_START = "^[=+@\t\r-]"


def _export_value(column: Column, *, spreadsheet_safe: bool) -> sql.Composable:
    v = sql.Identifier(column.name)
    if column.type is ColumnType.DATE:
        return sql.SQL("to_char({v}, 'YYYY-MM-DD') as {v}").format(v=v)
    if column.type is ColumnType.INTEGER:
        return sql.SQL("{v}::text as {v}").format(v=v)
    if spreadsheet_safe:
        return sql.SQL("case when {v} ~ {f} then '''' || {v} else {v} end as {v}").format(
            v=v, f=_lit(FORMULA_START)
        )
    return v


def export_statement(kind: Kind, format: FileFormat, *, spreadsheet_safe: bool) -> sql.Composed:
    values = sql.SQL(", ").join(
        _export_value(c, spreadsheet_safe=spreadsheet_safe) for c in kind.columns
    )
    source = sql.SQL("select {} from {} order by {}").format(
        values,
        sql.Identifier(kind.export.schema, kind.export.name),
        sql.Identifier(kind.key),
    )
    if format is FileFormat.CSV:
        return sql.SQL("copy ({}) to stdout with (format csv, header)").format(source)
    # Integers as JSON numbers, every other value a string; no key for a missing value.
    pairs = sql.SQL(", ").join(
        sql.SQL("{}, {}").format(
            sql.Literal(c.name),
            sql.SQL("r.{}::bigint" if c.type is ColumnType.INTEGER else "r.{}").format(
                sql.Identifier(c.name)
            ),
        )
        for c in kind.columns
    )
    return sql.SQL(
        "copy (select json_strip_nulls(json_build_object({}))::text from ({}) r) to stdout"
    ).format(pairs, source)


async def copy_out(
    conn: Conn,
    kind: Kind,
    format: FileFormat,
    write: Callable[[bytes], None],
    *,
    spreadsheet_safe: bool,
) -> int:
    """COPY the kind's rows out to `write`; returns the rows written."""
    statement = export_statement(kind, format, spreadsheet_safe=spreadsheet_safe)
    async with conn.cursor() as cur:
        async with cur.copy(statement) as copy:
            async for data in copy:
                chunk = bytes(data)
                if format is FileFormat.JSONL:
                    # COPY's text format doubles backslashes; JSON text holds no raw
                    # control character (JSON escapes them), so that is all it changed.
                    chunk = chunk.replace(b"\\\\", b"\\")
                write(chunk)
        return max(cur.rowcount, 0)
