"""Each adapter tells unreachable from refused (issue 13), against real servers, and its
probe answers when the server does: a Redis replica refusing writes (READONLY), an HTTP
server answering 503 and one answering 404, a PostgreSQL statement cut by the call
timeout, a port nobody listens on."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
from collections.abc import Iterator

import psycopg
import pytest
import redis

from bossa.provisioning.adapters import Command, DeliveryError, Division, ServerType
from bossa.provisioning.adapters.memstore import RedisAdapter
from bossa.provisioning.adapters.rest import RestAdapter
from bossa.provisioning.adapters.soap import SoapAdapter
from bossa.provisioning.adapters.sql import SqlAdapter
from tests.provisioning import servers
from tests.support import free_port


def division(server_type: ServerType, url: str, timeout_s: float = 2.0) -> Division:
    return Division(name="CLS", server_type=server_type, server_url=url, timeout_s=timeout_s)


def command(template: object, entry_id: int = 1, **binds: object) -> Command:
    return Command(
        entry_id=entry_id,
        division="CLS",
        sa_id="SA-1",
        wo_no="WO-1",
        intf_code="4201",
        cust_id=None,
        template=template,
        bind_data={"sa_id": "SA-1", **binds},
    )


@contextlib.contextmanager
def http_server(status: int) -> Iterator[str]:
    """An HTTP server of the test's own answering every request with `status`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(b"no")

        do_GET = do_POST = do_PUT = do_HEAD = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


REST = {"method": "POST", "path": "/subscribers/{sa_id}", "body": {"x": "1"}}


@pytest.mark.parametrize("status", [503, 502, 429])
def test_rest_gateway_statuses_are_unreachable(status: int) -> None:
    with http_server(status) as url:
        adapter = RestAdapter(division(ServerType.REST, url))
        try:
            with pytest.raises(DeliveryError) as caught:
                adapter.deliver(command(REST))
            assert (caught.value.code, caught.value.unreachable) == (f"HTTP{status}", True)
            with pytest.raises(DeliveryError) as probed:
                adapter.probe()
            assert probed.value.unreachable
        finally:
            adapter.close()


def test_rest_refusal_counts_and_a_404_probe_is_an_answer() -> None:
    with http_server(404) as url:
        adapter = RestAdapter(division(ServerType.REST, url))
        try:
            with pytest.raises(DeliveryError) as caught:
                adapter.deliver(command(REST))
            assert (caught.value.code, caught.value.unreachable) == ("HTTP404", False)
            adapter.probe()  # the server answered: it is up
        finally:
            adapter.close()


def test_nobody_listening_is_unreachable_for_every_http_adapter() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for adapter in (
        RestAdapter(division(ServerType.REST, url)),
        SoapAdapter(division(ServerType.SOAP, url + "/?wsdl")),
    ):
        try:
            with pytest.raises(DeliveryError) as caught:
                adapter.probe()
            assert (caught.value.code, caught.value.unreachable) == ("CONNECT", True)
        finally:
            adapter.close()


def test_soap_probe_reads_the_wsdl(soap_server: servers.SoapServer) -> None:
    adapter = SoapAdapter(division(ServerType.SOAP, soap_server.url))
    try:
        adapter.probe()
    finally:
        adapter.close()


def test_a_redis_replica_refusing_writes_is_unreachable_though_it_answers_ping() -> None:
    with servers.redis_server() as server:
        client = redis.Redis.from_url(server.url)
        # A replica of a primary that is not there: reads and PING work, writes do not.
        client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        adapter = RedisAdapter(division(ServerType.MEMSTORE, server.url))
        try:
            template = [["SET", "sub:{sa_id}", "1"]]
            with pytest.raises(DeliveryError) as caught:
                adapter.deliver(command(template))
            assert caught.value.unreachable, caught.value
            assert "read only replica" in caught.value.message
            results = adapter.deliver_many([command(template, entry_id=2)])
            assert results[2] is not None
            assert results[2].unreachable, results[2]
            adapter.probe()  # PING answers: the daemon takes again, and finds it down again
            client.execute_command("REPLICAOF", "NO", "ONE")
            adapter.deliver(command(template, entry_id=3))
            with pytest.raises(DeliveryError) as refused:  # a refusal of this command
                adapter.deliver(command([["LPUSH", "sub:{sa_id}", "x"]], entry_id=4))
            assert (refused.value.code, refused.value.unreachable) == ("REDIS", False)
        finally:
            adapter.close()
            client.close()


def test_sql_statement_cut_by_the_call_timeout_is_unreachable_and_probe_answers(
    pg_target: servers.PostgresTarget,
) -> None:
    pg_target.start()
    with psycopg.connect(pg_target.dsn, autocommit=True) as conn:
        conn.execute("drop table if exists bossa_applied_commands")
    adapter = SqlAdapter(division(ServerType.SQL, pg_target.url, timeout_s=0.3))
    try:
        with pytest.raises(DeliveryError) as caught:
            adapter.deliver(command("select pg_sleep(5)"))
        assert (caught.value.code, caught.value.unreachable) == ("57014", True)
        with pytest.raises(DeliveryError) as refused:
            adapter.deliver(command("select 1 / 0", entry_id=2))
        assert (refused.value.code, refused.value.unreachable) == ("22012", False)
        # The backup daemon's batch on its event loop (psycopg async) classifies alike.
        batch = asyncio.run(
            adapter.adeliver_many(
                [command("select pg_sleep(5)", entry_id=3), command("select 1", entry_id=4)]
            )
        )
        assert {(e.code, e.unreachable) for e in batch.values() if e} == {("57014", True)}
        assert None not in batch.values()
        batch = asyncio.run(
            adapter.adeliver_many(
                [command("select 1 / 0", entry_id=5), command("select 1", entry_id=6)]
            )
        )
        assert batch[5] is not None
        assert (batch[5].code, batch[5].unreachable, batch[6]) == ("22012", False, None)
        adapter.probe()
    finally:
        adapter.close()
    stopped = SqlAdapter(division(ServerType.SQL, pg_target.url))
    pg_target.stop()
    try:
        with pytest.raises(DeliveryError) as down:
            stopped.probe()
        assert down.value.unreachable
    finally:
        pg_target.start()
        stopped.close()


def test_sql_probe_after_a_restart_answers_at_once(pg_target: servers.PostgresTarget) -> None:
    """A pooled connection from before the restart fails; the probe asks again on a new
    one instead of reporting a server that is back as down (one more backoff)."""
    pg_target.start()
    adapter = SqlAdapter(division(ServerType.SQL, pg_target.url))
    try:
        adapter.probe()  # leaves a connection in the pool
        pg_target.stop()
        pg_target.start()
        adapter.probe()
    finally:
        adapter.close()
        pg_target.start()
