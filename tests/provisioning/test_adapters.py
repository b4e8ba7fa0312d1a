"""The interworking adapters against real divisions: applied once, bound, errors, outages."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql
from sqlalchemy import create_engine, text

from bossa.provisioning.adapters import (
    Adapter,
    Command,
    DeliveryError,
    Division,
    ServerType,
    adapter_for,
)
from bossa.provisioning.adapters.memstore import RedisAdapter, marker_key
from bossa.provisioning.adapters.rest import RestAdapter
from bossa.provisioning.adapters.soap import SoapAdapter
from bossa.provisioning.adapters.sql import SqlAdapter
from tests.provisioning.conftest import PASSWORD
from tests.provisioning.servers import MariaDbServer, PostgresTarget, RestServer, SoapServer

NASTY = 'O\'Brien; drop table x; -- "quoted" :not_a_bind {braces} <b>&amp;</b> ]]> \\ ünï'
TIMEOUT_S = 3.0
_ids = itertools.count(int(time.time() * 1000) % 10**9 * 1000)


def command(division: Division, template: Any, **bind: Any) -> Command:
    return Command(
        entry_id=next(_ids),
        division=division.name,
        sa_id=str(bind.get("sa_id", "SA1")),
        wo_no="WO1",
        intf_code="4201",
        cust_id=None,
        template=template,
        bind_data=bind,
    )


def division(server_type: ServerType, url: str, name: str = "DIV") -> Division:
    return Division(name=name, server_type=server_type, server_url=url, timeout_s=TIMEOUT_S)


@contextlib.contextmanager
def opened(div: Division) -> Iterator[Adapter]:
    adapter = adapter_for(div)
    try:
        yield adapter
    finally:
        adapter.close()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def deliver_concurrently(div: Division, cmd: Command, n: int = 4) -> None:
    """n adapters deliver the same entry at the same moment, as twin workers could."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run() -> None:
        with opened(div) as adapter:
            barrier.wait()
            try:
                adapter.deliver(cmd)
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []


def assert_unreachable(adapter: Adapter, cmd: Command) -> None:
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        adapter.deliver(cmd)
    assert caught.value.unreachable, caught.value
    assert time.monotonic() - started < TIMEOUT_S + 2


def test_adapter_for_picks_by_server_type() -> None:
    expected = {
        ServerType.SQL: (SqlAdapter, "postgresql+psycopg://u@127.0.0.1:1/x"),
        ServerType.MEMSTORE: (RedisAdapter, "redis://127.0.0.1:1/0"),
        ServerType.SOAP: (SoapAdapter, "http://127.0.0.1:1/?wsdl"),
        ServerType.REST: (RestAdapter, "http://127.0.0.1:1"),
    }
    for server_type, (cls, url) in expected.items():
        with opened(division(server_type, url)) as adapter:
            assert isinstance(adapter, cls)


# -- SQL: a second PostgreSQL and a MariaDB ------------------------------------------


class SqlTarget:
    def __init__(self, kind: str, url: str, server: PostgresTarget | MariaDbServer) -> None:
        self.kind = kind
        self.url = url
        self.server = server
        self.engine = create_engine(url)

    def table(self) -> str:
        name = unique("subs_")
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    f"create table {name} (sa_id varchar(64) primary key,"
                    " name varchar(200) not null, hits integer not null default 0)"
                )
            )
        return name

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]


@pytest.fixture(params=["postgresql", "mariadb"])
def sql_target(request: pytest.FixtureRequest) -> Iterator[SqlTarget]:
    if request.param == "postgresql":
        pg: PostgresTarget = request.getfixturevalue("pg_target")
        target = SqlTarget("postgresql", pg.url, pg)
    else:
        maria: MariaDbServer = request.getfixturevalue("mariadb_server")
        target = SqlTarget("mariadb", maria.url, maria)
    yield target
    target.engine.dispose()


INSERT_SUB = "insert into {t} (sa_id, name) values (:sa_id, :name)"


def test_sql_applies_once_with_marker(sql_target: SqlTarget) -> None:
    table = sql_target.table()
    div = division(ServerType.SQL, sql_target.url, name=unique("AAA_"))
    bump = f"update {table} set hits = hits + 1 where sa_id = :sa_id"  # noqa: S608  the table name is the test's own (sql_target.table())
    with opened(div) as adapter:
        insert = command(div, INSERT_SUB.format(t=table), sa_id="S1", name="first")
        adapter.deliver(insert)
        adapter.deliver(insert)  # a repeat would be a duplicate key if executed again
        hit = command(div, bump, sa_id="S1")
        for _ in range(3):
            adapter.deliver(hit)
    assert sql_target.rows(f"select sa_id, name, hits from {table}") == [("S1", "first", 1)]  # noqa: S608  the table name is the test's own (sql_target.table())
    marked = sql_target.rows(
        "select entry_id from bossa_applied_commands where division = :d order by entry_id",
        d=div.name,
    )
    assert marked == [(insert.entry_id,), (hit.entry_id,)]


def test_sql_concurrent_twins_apply_once(sql_target: SqlTarget) -> None:
    table = sql_target.table()
    div = division(ServerType.SQL, sql_target.url)
    with opened(div) as adapter:
        adapter.deliver(command(div, INSERT_SUB.format(t=table), sa_id="S1", name="n"))
    bump = command(div, f"update {table} set hits = hits + 1 where sa_id = :sa_id", sa_id="S1")  # noqa: S608  the table name is the test's own (sql_target.table())
    deliver_concurrently(div, bump)
    assert sql_target.rows(f"select hits from {table}") == [(1,)]  # noqa: S608  the table name is the test's own (sql_target.table())


def test_sql_values_are_bound_never_spliced(sql_target: SqlTarget) -> None:
    table = sql_target.table()
    div = division(ServerType.SQL, sql_target.url)
    with opened(div) as adapter:
        adapter.deliver(command(div, INSERT_SUB.format(t=table), sa_id="S'2", name=NASTY))
    assert sql_target.rows(f"select sa_id, name from {table}") == [("S'2", NASTY)]  # noqa: S608  the table name is the test's own (sql_target.table())


@pytest.mark.parametrize(
    ("bind", "codes"),
    [
        ({"sa_id": "DUP", "name": "again"}, {"postgresql": "23505", "mariadb": "1062"}),
        ({"sa_id": "NULL", "name": None}, {"postgresql": "23502", "mariadb": "1048"}),
    ],
)
def test_sql_server_error_carries_the_server_code(
    sql_target: SqlTarget, bind: dict[str, Any], codes: dict[str, str]
) -> None:
    table = sql_target.table()
    div = division(ServerType.SQL, sql_target.url)
    with opened(div) as adapter:
        adapter.deliver(command(div, INSERT_SUB.format(t=table), sa_id="DUP", name="first"))
        failing = command(div, INSERT_SUB.format(t=table), **bind)
        with pytest.raises(DeliveryError) as caught:
            adapter.deliver(failing)
        assert caught.value.code == codes[sql_target.kind]
        assert not caught.value.unreachable
        assert "\n" not in caught.value.message
        # The marker went with the failed transaction: once fixed, the retry applies it.
        with sql_target.engine.begin() as conn:
            conn.execute(text(f"delete from {table} where sa_id = 'DUP'"))  # noqa: S608  the table name is the test's own (sql_target.table())
            if sql_target.kind == "mariadb":
                conn.execute(text(f"alter table {table} modify name varchar(200) null"))
            else:
                conn.execute(text(f"alter table {table} alter column name drop not null"))
        adapter.deliver(failing)
    assert sql_target.rows(f"select sa_id from {table}") == [(bind["sa_id"],)]  # noqa: S608  the table name is the test's own (sql_target.table())


def test_sql_missing_bind_is_a_delivery_error(pg_target_url: str) -> None:
    div = division(ServerType.SQL, pg_target_url)
    with opened(div) as adapter, pytest.raises(DeliveryError) as caught:
        adapter.deliver(command(div, "select :absent"))
    assert caught.value.code == "BIND"


def test_sql_password_comes_from_credentials_and_is_not_shown(pg_target: PostgresTarget) -> None:
    with psycopg.connect(pg_target.dsn, autocommit=True) as conn:
        conn.execute("drop role if exists bossa_div")
        conn.execute(
            sql.SQL("create role bossa_div login password {} superuser").format(
                sql.Literal(PASSWORD)
            )
        )
    url = pg_target.url.replace("postgres@", "bossa_div@")
    div = Division(
        name="PW", server_type=ServerType.SQL, server_url=url, credentials={"password": PASSWORD}
    )
    assert PASSWORD not in repr(div)
    with opened(div) as adapter:
        adapter.deliver(command(div, "select :x", x=1))


@pytest.mark.fault
def test_sql_division_down_then_back(sql_target: SqlTarget) -> None:
    table = sql_target.table()
    div = division(ServerType.SQL, sql_target.url)
    with opened(div) as adapter:
        adapter.deliver(command(div, INSERT_SUB.format(t=table), sa_id="before", name="x"))
        sql_target.server.stop()
        try:
            cmd = command(div, INSERT_SUB.format(t=table), sa_id="during", name="x")
            assert_unreachable(adapter, cmd)
        finally:
            sql_target.server.start()
        adapter.deliver(cmd)
    sql_target.engine.dispose()
    assert sql_target.rows(f"select sa_id from {table} order by sa_id") == [  # noqa: S608  the table name is the test's own (sql_target.table())
        ("before",),
        ("during",),
    ]


# -- memstore: Redis ------------------------------------------------------------------

REDIS_TEMPLATE = [
    ["HSET", "sub:{sa_id}", "name", "{name}", "service", "{service}"],
    ["INCR", "hits:{sa_id}"],
]


@pytest.fixture
def redis_client(redis_server: Any) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        yield client


def test_redis_applies_once_with_marker(redis_server: Any, redis_client: redis.Redis) -> None:
    div = division(ServerType.MEMSTORE, redis_server.url, name="HDS")
    sa = unique("S")
    cmd = command(div, REDIS_TEMPLATE, sa_id=sa, name="n", service="iptv")
    with opened(div) as adapter:
        for _ in range(3):
            adapter.deliver(cmd)
    assert redis_client.get(f"hits:{sa}") == "1"
    assert redis_client.hgetall(f"sub:{sa}") == {"name": "n", "service": "iptv"}
    ttl = redis_client.ttl(marker_key("HDS", cmd.entry_id))
    assert 29 * 24 * 3600 < ttl <= 30 * 24 * 3600


def test_redis_concurrent_twins_apply_once(redis_server: Any, redis_client: redis.Redis) -> None:
    div = division(ServerType.MEMSTORE, redis_server.url)
    sa = unique("S")
    deliver_concurrently(div, command(div, [["INCR", "hits:{sa_id}"]], sa_id=sa), n=6)
    assert redis_client.get(f"hits:{sa}") == "1"


def test_redis_values_arrive_intact(redis_server: Any, redis_client: redis.Redis) -> None:
    div = division(ServerType.MEMSTORE, redis_server.url)
    sa = unique("S")
    nasty = NASTY + "\r\n*3\r\n$3\r\nDEL"
    with opened(div) as adapter:
        adapter.deliver(command(div, REDIS_TEMPLATE, sa_id=sa, name=nasty, service="x y"))
    assert redis_client.hgetall(f"sub:{sa}") == {"name": nasty, "service": "x y"}


def test_redis_errors_are_reported_and_not_marked(
    redis_server: Any, redis_client: redis.Redis
) -> None:
    div = division(ServerType.MEMSTORE, redis_server.url)
    sa = unique("S")
    redis_client.set(f"sub:{sa}", "a string, not a hash")
    with opened(div) as adapter:
        runtime = command(div, REDIS_TEMPLATE, sa_id=sa, name="n", service="s")
        with pytest.raises(DeliveryError) as caught:
            adapter.deliver(runtime)  # WRONGTYPE at EXEC time
        assert (caught.value.code, caught.value.unreachable) == ("REDIS", False)
        assert "WRONGTYPE" in caught.value.message
        assert not redis_client.exists(marker_key(div.name, runtime.entry_id))
        refused = command(div, [["NOSUCHCOMMAND", "{sa_id}"]], sa_id=sa)
        with pytest.raises(DeliveryError) as caught:
            adapter.deliver(refused)  # refused when queued: EXECABORT, nothing applied
        assert caught.value.code == "REDIS"
        assert not redis_client.exists(marker_key(div.name, refused.entry_id))


@pytest.mark.fault
def test_redis_division_down_then_back(redis_server: Any, redis_client: redis.Redis) -> None:
    div = division(ServerType.MEMSTORE, redis_server.url)
    sa = unique("S")
    with opened(div) as adapter:
        adapter.deliver(command(div, [["SET", "before:{sa_id}", "1"]], sa_id=sa))
        redis_server.stop()
        try:
            cmd = command(div, REDIS_TEMPLATE, sa_id=sa, name="n", service="s")
            assert_unreachable(adapter, cmd)
        finally:
            redis_server.start()
        adapter.deliver(cmd)
    assert redis_client.get(f"hits:{sa}") == "1"


# -- SOAP: a spyne service ------------------------------------------------------------

SOAP_TEMPLATE = {
    "operation": "Provision",
    "params": {"saId": "{sa_id}", "intfCode": "4201", "service": "{service}"},
}


def applied_for(server: SoapServer | RestServer, ids: set[str]) -> list[dict[str, Any]]:
    return [row for row in server.applied() if row["message_id"] in ids]


def test_soap_applies_once_in_order(soap_server: SoapServer) -> None:
    div = division(ServerType.SOAP, soap_server.url, name="NRS")
    sa = unique("S")
    first = command(div, SOAP_TEMPLATE, sa_id=sa, service="voip")
    second = command(
        div,
        {"operation": "Terminate", "params": {"saId": "{sa_id}", "reason": "{r}"}},
        sa_id=sa,
        r=7,
    )
    with opened(div) as adapter:
        for cmd in (first, first, second, first, second):
            adapter.deliver(cmd)
    rows = applied_for(soap_server, {str(first.entry_id), str(second.entry_id)})
    assert [(r["operation"], r["params"]["saId"]) for r in rows] == [
        ("Provision", sa),
        ("Terminate", sa),
    ]
    assert rows[1]["params"]["reason"] == 7


def test_soap_values_arrive_intact(soap_server: SoapServer) -> None:
    div = division(ServerType.SOAP, soap_server.url)
    cmd = command(div, SOAP_TEMPLATE, sa_id=unique("S"), service=NASTY)
    with opened(div) as adapter:
        adapter.deliver(cmd)
    [row] = applied_for(soap_server, {str(cmd.entry_id)})
    assert row["params"]["service"] == NASTY


def test_soap_fault_carries_the_fault_code(soap_server: SoapServer) -> None:
    div = division(ServerType.SOAP, soap_server.url)
    with opened(div) as adapter:
        with pytest.raises(DeliveryError) as caught:
            adapter.deliver(command(div, SOAP_TEMPLATE, sa_id="FAULT-1", service="x"))
        assert (caught.value.code, caught.value.unreachable) == ("Client.Rejected", False)
        assert "FAULT-1" in caught.value.message
        with pytest.raises(DeliveryError) as caught:
            adapter.deliver(command(div, {"operation": "Nope", "params": {}}))
        assert caught.value.code == "SOAP_OPERATION"


@pytest.mark.fault
def test_soap_division_down_then_back(soap_server: SoapServer) -> None:
    div = division(ServerType.SOAP, soap_server.url)
    sa = unique("S")
    with opened(div) as warm, opened(div) as cold:  # WSDL read before / not yet read
        warm.deliver(command(div, SOAP_TEMPLATE, sa_id=sa, service="before"))
        soap_server.stop()
        try:
            cmd = command(div, SOAP_TEMPLATE, sa_id=sa, service="after")
            assert_unreachable(warm, cmd)
            assert_unreachable(cold, cmd)
        finally:
            soap_server.start()
        warm.deliver(cmd)
        cold.deliver(cmd)
    assert len(applied_for(soap_server, {str(cmd.entry_id)})) == 1


# -- REST: an HTTP service ------------------------------------------------------------

REST_TEMPLATE = {
    "method": "POST",
    "path": "/subscribers/{sa_id}/services",
    "body": {"saId": "{sa_id}", "name": "{name}", "n": "{n}", "tags": ["{name}", "fixed"]},
}


def test_rest_applies_once_with_idempotency_key(rest_server: RestServer) -> None:
    div = division(ServerType.REST, rest_server.url, name="SMS")
    sa = unique("S")
    cmd = command(div, REST_TEMPLATE, sa_id=sa, name="n", n=3)
    with opened(div) as adapter:
        for _ in range(3):
            adapter.deliver(cmd)
    [row] = applied_for(rest_server, {str(cmd.entry_id)})
    assert row["idempotency_key"] == f"SMS:{cmd.entry_id}"
    assert (row["method"], row["path"]) == ("POST", f"/subscribers/{sa}/services")
    assert row["body"] == {"saId": sa, "name": "n", "n": 3, "tags": ["n", "fixed"]}


def test_rest_values_arrive_intact(rest_server: RestServer) -> None:
    div = division(ServerType.REST, rest_server.url)
    cmd = command(div, REST_TEMPLATE, sa_id="A/B?c=1#d", name=NASTY, n=None)
    with opened(div) as adapter:
        adapter.deliver(cmd)
    [row] = applied_for(rest_server, {str(cmd.entry_id)})
    assert row["path"] == "/subscribers/A%2FB%3Fc%3D1%23d/services"
    assert row["body"]["name"] == NASTY
    assert row["body"]["n"] is None


def test_rest_server_error_carries_the_status(rest_server: RestServer) -> None:
    div = division(ServerType.REST, rest_server.url)
    with opened(div) as adapter, pytest.raises(DeliveryError) as caught:
        adapter.deliver(command(div, REST_TEMPLATE, sa_id="FAIL-1", name="n", n=1))
    assert (caught.value.code, caught.value.unreachable) == ("HTTP500", False)
    assert "FAIL-1" in caught.value.message


def test_rest_hung_server_is_unreachable_within_the_timeout(rest_server: RestServer) -> None:
    div = Division(
        name="SLOW", server_type=ServerType.REST, server_url=rest_server.url, timeout_s=0.5
    )
    cmd = command(div, REST_TEMPLATE, sa_id="SLOW-1", name="n", n=1)
    with opened(div) as adapter:
        started = time.monotonic()
        with pytest.raises(DeliveryError) as caught:
            adapter.deliver(cmd)
    assert caught.value.unreachable
    assert time.monotonic() - started < 2


@pytest.mark.fault
def test_rest_division_down_then_back(rest_server: RestServer) -> None:
    div = division(ServerType.REST, rest_server.url)
    sa = unique("S")
    with opened(div) as adapter:
        adapter.deliver(command(div, REST_TEMPLATE, sa_id=sa, name="before", n=1))
        rest_server.stop()
        try:
            cmd = command(div, REST_TEMPLATE, sa_id=sa, name="after", n=2)
            assert_unreachable(adapter, cmd)
        finally:
            rest_server.start()
        adapter.deliver(cmd)
    assert len(applied_for(rest_server, {str(cmd.entry_id)})) == 1
