"""A fault hook for tests that must prove their fault struck work in flight.

`Hook.install()` puts a row trigger on one table of the test's own database (nothing of
it exists in the product's schema): once armed, the transaction that writes the table's
`nth` row (counted per transaction) stops there, waiting for an advisory lock the test
holds. The test sees each such backend in `pg_locks`, with the statement it is in from
`pg_stat_activity`, and the rows it has written and not committed from the rows it holds
locked; then it strikes (terminates the backend, or crashes the server) knowing the
fault hit the window it promises, and counts what it tore.

Timing a SIGKILL against a poll cannot promise that: a statement whose client died runs
on to its end on the server, and commits if it was in autocommit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

#: The advisory lock the hooked transactions wait for (the test holds it while armed).
HOOK_LOCK = 7_317_017


@dataclass
class Stuck:
    """A backend held by the hook: its pid and the statement it is in."""

    pid: int
    query: str


@dataclass
class Hook:
    """A hook on `schema.table`, stopping the transaction that writes its `nth` row (an
    update whose new row satisfies `when`, or any insert when `when` is None)."""

    db_url: str
    schema: str
    table: str
    nth: int
    when: str | None = None
    event: str = "update"
    holder: psycopg.Connection[tuple[object, ...]] | None = field(default=None, repr=False)

    def install(self) -> Hook:
        name = sql.Identifier(f"fault_hook_{self.table}")
        condition = sql.SQL(f" when ({self.when})") if self.when else sql.SQL("")
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute(
                "create table if not exists public.fault_gate (name text primary key,"
                " armed boolean not null)"
            )
            conn.execute(
                "insert into public.fault_gate values (%s, false) on conflict do nothing",
                (self.table,),
            )
            conn.execute(
                sql.SQL(
                    "create or replace function public.{name}() returns trigger"
                    " language plpgsql as $$"
                    " declare n integer;"
                    " begin"
                    "  if not coalesce((select armed from public.fault_gate"
                    "                   where name = {table}), false) then return new; end if;"
                    "  n := coalesce(nullif(current_setting('bossa_test.hook_rows', true), ''),"
                    "                '0')::integer + 1;"
                    "  perform set_config('bossa_test.hook_rows', n::text, true);"
                    "  if n = {nth} then perform pg_advisory_xact_lock_shared({lock}); end if;"
                    "  return new;"
                    " end $$"
                ).format(
                    name=name,
                    table=sql.Literal(self.table),
                    nth=sql.Literal(self.nth),
                    lock=sql.Literal(HOOK_LOCK),
                )
            )
            conn.execute(
                sql.SQL(
                    "create trigger {name} after {event} on {schema}.{table}"
                    " for each row{condition} execute function public.{name}()"
                ).format(
                    name=name,
                    event=sql.SQL(self.event),
                    schema=sql.Identifier(self.schema),
                    table=sql.Identifier(self.table),
                    condition=condition,
                )
            )
        return self

    def arm(self) -> None:
        """Hold the lock, then let the hook stop transactions."""
        if self.holder is None:
            self.holder = psycopg.connect(self.db_url, autocommit=True)
            self.holder.execute("select pg_advisory_lock(%s)", (HOOK_LOCK,))
        self._set(armed=True)

    def disarm(self) -> None:
        """Stop no more transactions, and let any still waiting go on."""
        self._set(armed=False)
        if self.holder is not None:
            self.holder.close()
            self.holder = None

    def _set(self, *, armed: bool) -> None:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute(
                "update public.fault_gate set armed = %s where name = %s", (armed, self.table)
            )

    def stuck(self, *, containing: str) -> list[Stuck]:
        """The backends waiting in the hook whose statement contains `containing`."""
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            rows = conn.execute(
                "select a.pid, a.query from pg_locks l join pg_stat_activity a using (pid)"
                " where l.locktype = 'advisory' and l.objid = %s and not l.granted"
                " and a.datname = current_database() and strpos(a.query, %s) > 0",
                (HOOK_LOCK, containing),
            ).fetchall()
        return [Stuck(int(pid), str(query)) for pid, query in rows]

    def wait_stuck(self, *, containing: str, at_least: int, limit_s: float = 60) -> list[Stuck]:
        deadline = time.monotonic() + limit_s
        while len(found := self.stuck(containing=containing)) < at_least:
            assert time.monotonic() < deadline, (
                f"no {at_least} backends stopped in the hook inside {containing}: {found}"
            )
            time.sleep(0.01)
        return found

    def close(self) -> None:
        if self.holder is not None:
            self.holder.close()
            self.holder = None


def terminate(db_url: str, pids: list[int]) -> int:
    """pg_terminate_backend each, waiting for each to end; returns how many this call
    terminated (a backend may end by itself meanwhile: its client cancelled it after
    another was terminated). Fails unless every one of them has ended."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) filter (where pg_terminate_backend(pid, 10000))"
            " from unnest(%s::integer[]) pid",
            (pids,),
        ).fetchone()
        left = conn.execute(
            "select count(*) from pg_stat_activity where pid = any(%s::integer[])", (pids,)
        ).fetchone()
    assert left is not None
    assert int(left[0]) == 0, f"backends {pids} still running"
    return int(row[0]) if row else 0
