"""Batch delivery, the backup daemon's path: a batch of commands in a round trip or two
(one script call per chunk on Redis, one transaction with a savepoint each on SQL), each
applied once, a refused one failing alone, and interleaving with single deliveries."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
import redis

from bossa.provisioning.adapters import ServerType, memstore
from bossa.provisioning.adapters.memstore import RedisAdapter
from bossa.provisioning.adapters.sql import SqlAdapter
from tests.provisioning import test_adapters
from tests.provisioning.test_adapters import (
    INSERT_SUB,
    NASTY,
    SqlTarget,
    command,
    division,
    opened,
    unique,
)

# The SQL targets (a PostgreSQL and a MariaDB of the tests' own) of the adapter tests.
sql_target = test_adapters.sql_target
#: A SQL batch both ways: in the caller's thread (deliver_many, a daemon's thread before)
#: and on an event loop (adeliver_many, the backup daemon's path: psycopg async on
#: PostgreSQL). Both must give the same outcome.
on_loop = pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "loop"])


def many(adapter: SqlAdapter, commands: list[Any], on_loop: bool) -> dict[int, Any]:
    if on_loop:
        return asyncio.run(adapter.adeliver_many(commands))
    return adapter.deliver_many(commands)


def test_redis_batch_applies_each_once(redis_server: Any) -> None:
    div = division(ServerType.MEMSTORE, redis_server.url, name="HDS")
    sas = [unique("S") for _ in range(20)]
    template = [["INCR", "hits:{sa_id}"], ["HSET", "sub:{sa_id}", "name", "{name}"]]
    batch = [command(div, template, sa_id=sa, name=NASTY) for sa in sas]
    bad = command(div, [["INCR", "hits:{sa_id}"], ["HSET", "hits:{sa_id}", "f", "v"]], sa_id=sas[0])
    missing = command(div, [["SET", "k:{nope}", "1"]], sa_id="x")
    with opened(div) as adapter:
        assert isinstance(adapter, RedisAdapter)
        first = adapter.deliver_many([*batch, bad, missing])
        adapter.deliver(batch[3])  # a single delivery of the same entry: a no-op
        again = adapter.deliver_many(batch)  # the at-least-once repeat: all no-ops
    assert [first[c.entry_id] for c in batch] == [None] * 20
    assert first[bad.entry_id] is not None
    assert first[bad.entry_id].code == "REDIS"  # WRONGTYPE: HSET on a string key
    assert first[missing.entry_id] is not None
    assert first[missing.entry_id].code == "BIND"
    assert set(again.values()) == {None}
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    # The refused command ran its first INCR before failing (Redis has no rollback) and
    # left no marker, so a fixed retry applies it again: documented, as with MULTI/EXEC.
    assert [client.get(f"hits:{sa}") for sa in sas] == ["2"] + ["1"] * 19
    assert client.hget(f"sub:{sas[5]}", "name") == NASTY
    assert not client.exists(f"bossa:applied:HDS:{bad.entry_id}")


def test_redis_batch_over_several_script_calls(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch is cut into script calls of SCRIPT_CHUNK commands; a refusal in one chunk
    # fails that command alone and the next chunks still run.
    monkeypatch.setattr(memstore, "SCRIPT_CHUNK", 4)
    div = division(ServerType.MEMSTORE, redis_server.url, name="HDS")
    sas = [unique("C") for _ in range(10)]
    batch = [command(div, [["RPUSH", "log:{sa_id}", "{name}"]], sa_id=sa, name="x") for sa in sas]
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.set(f"log:{sas[5]}", "a string: RPUSH is refused")
    with opened(div) as adapter:
        assert isinstance(adapter, RedisAdapter)
        results = adapter.deliver_many(batch)
    refused = results[batch[5].entry_id]
    assert refused is not None
    assert refused.code == "REDIS"
    assert "WRONGTYPE" in refused.message
    assert [results[c.entry_id] for i, c in enumerate(batch) if i != 5] == [None] * 9
    assert [client.lrange(f"log:{sa}", 0, -1) for i, sa in enumerate(sas) if i != 5] == [["x"]] * 9


@pytest.mark.fault
def test_redis_batch_to_a_stopped_server_fails_whole(redis_server: Any) -> None:
    div = division(ServerType.MEMSTORE, redis_server.url, name="HDS")
    batch = [command(div, [["SET", "k:{sa_id}", "1"]], sa_id=unique("D")) for _ in range(3)]
    redis_server.stop()
    try:
        with opened(div) as adapter:
            results = adapter.deliver_many(batch)  # type: ignore[attr-defined]
    finally:
        redis_server.start()
    assert all(r is not None and r.unreachable for r in results.values())


@on_loop
def test_sql_batch_in_one_transaction_with_savepoints(sql_target: SqlTarget, on_loop: bool) -> None:
    table = sql_target.table()
    div = division(ServerType.SQL, sql_target.url, name=unique("AAA_"))
    batch = [command(div, INSERT_SUB.format(t=table), sa_id=f"S{n}", name=NASTY) for n in range(10)]
    duplicate = command(div, INSERT_SUB.format(t=table), sa_id="S3", name="twin")  # refused
    with opened(div) as adapter:
        assert isinstance(adapter, SqlAdapter)
        first = many(adapter, [*batch[:5], duplicate, *batch[5:]], on_loop)
        again = many(adapter, batch, on_loop)
    assert [first[c.entry_id] for c in batch] == [None] * 10
    error = first[duplicate.entry_id]
    assert error is not None
    assert error.code in {"23505", "1062"}
    assert not error.unreachable
    assert set(again.values()) == {None}
    rows = sql_target.rows(f"select sa_id, name from {table} order by sa_id")  # noqa: S608  the table name is the test's own (sql_target.table())
    assert rows == [(f"S{n}", NASTY) for n in range(10)]
    marked = sql_target.rows(
        "select count(*) from bossa_applied_commands where division = :d", d=div.name
    )
    assert marked == [(10,)]  # the refused command left no marker


@pytest.mark.fault
@on_loop
def test_sql_batch_to_a_stopped_server_fails_whole(sql_target: SqlTarget, on_loop: bool) -> None:
    div = division(ServerType.SQL, sql_target.url, name=unique("AAA_"))
    table = sql_target.table()
    batch = [command(div, INSERT_SUB.format(t=table), sa_id=f"S{n}", name="n") for n in range(3)]
    sql_target.server.stop()
    try:
        with opened(div) as adapter:
            assert isinstance(adapter, SqlAdapter)
            results = many(adapter, batch, on_loop)
    finally:
        sql_target.server.start()
    assert all(r is not None and r.unreachable for r in results.values())


def test_pg_batch_on_the_loop_sorts_out_binds_repeats_and_terminated_connections(
    pg_target: Any,
) -> None:
    # The event loop's path: a command missing a bind fails alone as BIND; a batch part
    # applied already (its markers there) applies the rest once; and connections the
    # server terminated fail one batch as unreachable (not an attempt), after which the
    # next batch connects anew rather than failing on each dead idle connection in turn.
    pg_target.start()
    with psycopg.connect(pg_target.dsn, autocommit=True) as conn:
        table = unique("t_")
        conn.execute(f"create table {table} (sa_id text primary key, name text)")
    div = division(ServerType.SQL, pg_target.url, name=unique("AAA_"))
    template = INSERT_SUB.format(t=table)
    batch = [command(div, template, sa_id=f"S{n}", name=NASTY) for n in range(6)]
    missing = command(div, template, sa_id="S9")  # no :name
    adapter = SqlAdapter(div)

    async def scenario() -> list[dict[int, Any]]:
        first = await adapter.adeliver_many([*batch[:3], missing])
        # Several connections at once, so several are left idle.
        await asyncio.gather(*(adapter.adeliver_many([c]) for c in batch[3:5]))
        with psycopg.connect(pg_target.dsn, autocommit=True) as admin:
            admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity"
                " where pid <> pg_backend_pid() and datname = current_database()"
                " and backend_type = 'client backend'"
            )
        broken = await adapter.adeliver_many([batch[5]])
        again = await adapter.adeliver_many(batch)
        return [first, broken, again]

    try:
        first, broken, again = asyncio.run(scenario())
    finally:
        adapter.close()
    assert [first[c.entry_id] for c in batch[:3]] == [None] * 3
    assert first[missing.entry_id] is not None
    assert first[missing.entry_id].code == "BIND"
    assert broken[batch[5].entry_id] is not None
    assert broken[batch[5].entry_id].unreachable
    assert set(again.values()) == {None}
    with psycopg.connect(pg_target.dsn) as conn:
        rows = conn.execute(f"select sa_id, name from {table} order by sa_id").fetchall()  # noqa: S608  the test's own table
    assert rows == [(f"S{n}", NASTY) for n in range(6)]
