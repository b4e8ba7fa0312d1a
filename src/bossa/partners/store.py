"""The partner platform's named queries (sql/queries.sql), each on the caller's connection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from psycopg.types.json import Jsonb

from bossa.db import Conn
from bossa.partners.models import BillingPolicy, FileRecord, PartnerInfo, TemplateInfo
from bossa.sql import load_queries

__all__ = [
    "FileRange",
    "add_correction",
    "add_file",
    "add_policy",
    "add_records",
    "add_rejects",
    "add_run",
    "add_runs",
    "add_version",
    "bump_template",
    "claim_range",
    "file",
    "file_lines",
    "file_records",
    "file_rejects",
    "file_totals",
    "files",
    "finish_run",
    "gauges",
    "lock_records",
    "lock_template",
    "mark_sent",
    "new_template",
    "next_seq",
    "note_attempt",
    "partner",
    "partners",
    "policies",
    "reserve",
    "run",
    "set_filed_to",
    "set_partner",
    "set_system",
    "systems",
    "template",
    "templates",
    "unfiled_rejects",
    "unsent_files",
    "usage",
    "use_record",
]

QUERIES = load_queries("bossa.partners", "sql/queries.sql")

Row = dict[str, Any]


async def _one(conn: Conn, name: str, params: dict[str, Any]) -> Row | None:
    return await (await conn.execute(QUERIES[name], params, prepare=True)).fetchone()


async def _all(conn: Conn, name: str, params: dict[str, Any]) -> list[Row]:
    return await (await conn.execute(QUERIES[name], params, prepare=True)).fetchall()


async def set_partner(
    conn: Conn, *, name: str, display_name: str, rate_per_s: int, daily_quota: int, actor: str
) -> PartnerInfo:
    row = await _one(
        conn,
        "set_partner",
        {
            "name": name,
            "display_name": display_name,
            "rate_per_s": rate_per_s,
            "daily_quota": daily_quota,
            "actor": actor,
        },
    )
    assert row is not None
    return PartnerInfo.model_validate(row)


async def partner(conn: Conn, name: str) -> PartnerInfo | None:
    row = await _one(conn, "partner", {"name": name})
    return None if row is None else PartnerInfo.model_validate(row)


async def partners(conn: Conn, *, limit: int) -> list[PartnerInfo]:
    return [PartnerInfo.model_validate(r) for r in await _all(conn, "partners", {"limit": limit})]


async def lock_template(conn: Conn, name: str) -> Row | None:
    return await _one(conn, "lock_template", {"name": name})


async def new_template(
    conn: Conn, *, name: str, partner: str, rate_per_s: int, daily_quota: int, actor: str
) -> bool:
    row = await _one(
        conn,
        "new_template",
        {
            "name": name,
            "partner": partner,
            "rate_per_s": rate_per_s,
            "daily_quota": daily_quota,
            "actor": actor,
        },
    )
    return row is not None


async def bump_template(conn: Conn, *, name: str, rate_per_s: int, daily_quota: int) -> int:
    row = await _one(
        conn,
        "bump_template",
        {"name": name, "rate_per_s": rate_per_s, "daily_quota": daily_quota},
    )
    assert row is not None
    return int(row["latest"])


async def add_version(
    conn: Conn, *, name: str, version: int, definition: dict[str, Any], actor: str
) -> None:
    await conn.execute(
        QUERIES["add_version"],
        {"name": name, "version": version, "definition": Jsonb(definition), "actor": actor},
    )


async def template(conn: Conn, name: str, version: int | None = None) -> Row | None:
    return await _one(conn, "template", {"name": name, "version": version})


async def templates(conn: Conn, *, partner: str | None, limit: int) -> list[TemplateInfo]:
    rows = await _all(conn, "templates", {"partner": partner, "limit": limit})
    return [TemplateInfo.model_validate(r) for r in rows]


async def reserve(
    conn: Conn, *, partner: str, template: str, day: date, n: int, quota: int
) -> bool:
    row = await _one(
        conn,
        "reserve",
        {"partner": partner, "template": template, "day": day, "n": n, "quota": quota},
    )
    return row is not None


async def usage(conn: Conn, *, partner: str, template: str, day: date) -> int:
    row = await _one(conn, "usage", {"partner": partner, "template": template, "day": day})
    return 0 if row is None else int(row["reserved"])


async def add_run(
    conn: Conn,
    *,
    partner: str,
    template: str,
    version: int,
    mode: str,
    state: str,
    input: dict[str, Any],
    output: dict[str, Any] | None,
    error: dict[str, Any] | None,
    actor: str,
) -> Row:
    row = await _one(
        conn,
        "add_run",
        {
            "partner": partner,
            "template": template,
            "version": version,
            "mode": mode,
            "state": state,
            "input": Jsonb(input),
            "output": None if output is None else Jsonb(output),
            "error": None if error is None else Jsonb(error),
            "actor": actor,
        },
    )
    assert row is not None
    return row


async def add_runs(conn: Conn, runs: Sequence[dict[str, Any]]) -> list[Row]:
    """Finished sync runs, one statement for all; rows in the order of `runs`."""
    columns: dict[str, list[Any]] = {
        k: []
        for k in ("partners", "templates", "versions", "states", "inputs", "outputs", "errors")
    }
    columns["actors"] = []
    for run in runs:
        columns["partners"].append(run["partner"])
        columns["templates"].append(run["template"])
        columns["versions"].append(run["version"])
        columns["states"].append(run["state"])
        columns["inputs"].append(Jsonb(run["input"]))
        columns["outputs"].append(None if run["output"] is None else Jsonb(run["output"]))
        columns["errors"].append(None if run["error"] is None else Jsonb(run["error"]))
        columns["actors"].append(run["actor"])
    rows = sorted(await _all(conn, "add_runs", columns), key=lambda r: int(r["id"]))
    assert len(rows) == len(runs)
    return rows


async def finish_run(
    conn: Conn,
    run_id: int,
    *,
    state: str,
    output: dict[str, Any] | None,
    error: dict[str, Any] | None,
) -> Row | None:
    return await _one(
        conn,
        "finish_run",
        {
            "id": run_id,
            "state": state,
            "output": None if output is None else Jsonb(output),
            "error": None if error is None else Jsonb(error),
        },
    )


async def run(conn: Conn, run_id: int) -> Row | None:
    return await _one(conn, "run", {"id": run_id})


async def set_system(
    conn: Conn,
    *,
    role: str,
    kind: str,
    url: str,
    timeout_ms: int,
    statements: dict[str, str],
    actor: str,
) -> Row:
    row = await _one(
        conn,
        "set_system",
        {
            "role": role,
            "kind": kind,
            "url": url,
            "timeout_ms": timeout_ms,
            "statements": Jsonb(statements),
            "actor": actor,
        },
    )
    assert row is not None
    return row


async def systems(conn: Conn) -> list[Row]:
    return await _all(conn, "systems", {})


async def add_policy(conn: Conn, params: dict[str, Any], *, actor: str) -> BillingPolicy:
    row = await _one(conn, "add_policy", {**params, "actor": actor})
    assert row is not None
    return BillingPolicy(**row)


async def policies(conn: Conn, partners: Sequence[str]) -> list[BillingPolicy]:
    rows = await _all(conn, "policies", {"partners": list(partners)})
    return [BillingPolicy(**r) for r in rows]


async def add_records(conn: Conn, columns: dict[str, list[Any]]) -> set[int]:
    """Insert rated records; returns the entry ids inserted (the others were duplicates)."""
    rows = await _all(conn, "add_records", columns)
    return {int(r["entry_id"]) for r in rows}


async def add_rejects(
    conn: Conn, entry_ids: list[int], payloads: list[Any], reasons: list[str]
) -> None:
    if not entry_ids:
        return
    await conn.execute(
        QUERIES["add_rejects"],
        {"entry_ids": entry_ids, "payloads": [Jsonb(p) for p in payloads], "reasons": reasons},
    )


async def use_record(conn: Conn, run_id: int) -> Row | None:
    return await _one(conn, "use_record", {"run_id": run_id})


async def add_correction(conn: Conn, run_id: int) -> int | None:
    row = await _one(conn, "add_correction", {"run_id": run_id})
    return None if row is None else int(row["id"])


async def next_seq(conn: Conn) -> tuple[int, int]:
    """The next file's sequence number and the record id its records come after."""
    row = await _one(conn, "next_seq", {})
    assert row is not None
    return int(row["last"]), int(row["filed_to"])


async def lock_records(conn: Conn) -> None:
    await conn.execute(QUERIES["lock_records"])


async def claim_range(conn: Conn, after: int, limit: int) -> Row:
    """The next file's last record id (`upto`, None: no records) and its totals
    (`records`, `units`, `charged`, `fee`, `share`)."""
    row = await _one(conn, "claim_range", {"after": after, "limit": limit})
    assert row is not None
    return row


async def set_filed_to(conn: Conn, upto: int) -> None:
    await conn.execute(QUERIES["set_filed_to"], {"upto": upto})


@dataclass(frozen=True)
class FileRange:
    """Which records a file holds: ids after `after` up to `upto`; a file written before
    ranges (`upto` None) holds the records that carry its number."""

    seq: int
    after: int | None
    upto: int | None

    @classmethod
    def of(cls, row: Row) -> FileRange:
        return cls(int(row["seq"]), row["after_id"], row["upto_id"])

    def params(self) -> dict[str, Any]:
        return {"seq": self.seq, "after": self.after, "upto": self.upto}


async def file_records(conn: Conn, seq: int) -> list[FileRecord]:
    found = await file(conn, seq)
    assert found is not None
    cursor = conn.cursor()
    await cursor.execute(QUERIES["file_records"], FileRange.of(found).params())
    return [FileRecord(**r) async for r in cursor]


async def file_lines(conn: Conn, where: FileRange) -> bytes:
    """The file's record lines, as the server rendered them."""
    query = QUERIES["file_lines_by_seq" if where.upto is None else "file_lines"]
    async with conn.cursor().copy(query, where.params()) as copy:
        chunks = [bytes(chunk) async for chunk in copy]
    return b"".join(chunks)


async def file_totals(conn: Conn, where: FileRange) -> Row:
    row = await _one(
        conn, "file_totals_by_seq" if where.upto is None else "file_totals", where.params()
    )
    assert row is not None
    return row


async def add_file(conn: Conn, params: dict[str, Any]) -> None:
    await conn.execute(QUERIES["add_file"], params)


async def file(conn: Conn, seq: int) -> Row | None:
    return await _one(conn, "file", {"seq": seq})


async def files(conn: Conn, *, limit: int) -> list[Row]:
    return await _all(conn, "files", {"limit": limit})


async def unsent_files(conn: Conn) -> list[int]:
    return [int(r["seq"]) for r in await _all(conn, "unsent_files", {})]


async def mark_sent(conn: Conn, seq: int) -> bool:
    cursor = await conn.execute(QUERIES["mark_sent"], {"seq": seq})
    return cursor.rowcount == 1


async def note_attempt(conn: Conn, seq: int, error: str) -> None:
    await conn.execute(QUERIES["note_attempt"], {"seq": seq, "error": error[:500]})


async def unfiled_rejects(conn: Conn, *, limit: int) -> list[Row]:
    return await _all(conn, "unfiled_rejects", {"limit": limit})


async def file_rejects(conn: Conn, ids: list[int], name: str) -> None:
    await conn.execute(QUERIES["file_rejects"], {"ids": ids, "name": name})


async def gauges(conn: Conn) -> Row:
    row = await _one(conn, "gauges", {})
    assert row is not None
    return row
