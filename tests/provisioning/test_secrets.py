"""A division's password never leaves (issue 11, point 5): not to a server that asks for
it in clear text (a fake PostgreSQL asking for AuthenticationCleartextPassword, a fake
MySQL switching to mysql_clear_password), and not into any answer, listing, log line or
error: the division listings (API and CLI), a division update that violates a rule, and
the delivery-failure paths (a server that refuses, a server that quotes the credential
back in its error)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pymysql
import pytest
from typer.testing import CliRunner

from bossa.customers import load_sample
from bossa.errors import InvalidInput, UserError
from bossa.journal import Journal
from bossa.provisioning import service
from bossa.provisioning.adapters import Command, DeliveryError, adapter_for
from bossa.provisioning.adapters.sql import PG_REQUIRE_AUTH
from bossa.provisioning.cli import provisioning_app
from bossa.provisioning.models import Credentials, Division, DivisionChange, ServerType
from bossa.runtime import Runtime
from tests.provisioning import fakes, servers
from tests.provisioning.conftest import PASSWORD
from tests.support import api_client

#: A password for the fakes' own check that a careless client does send it: not a test
#: password, since it is meant to arrive.
CONTROL = "control-pw-5150"


def command(division: str, template: Any) -> Command:
    return Command(
        entry_id=1,
        division=division,
        sa_id="SA-1",
        wo_no="WO-1",
        intf_code="4201",
        cust_id=None,
        template=template,
        bind_data={"sa_id": "SA-1"},
    )


async def refused(division: Division) -> DeliveryError:
    adapter = adapter_for(division)
    try:
        with pytest.raises(DeliveryError) as caught:
            await asyncio.to_thread(adapter.deliver, command(division.name, "select :sa_id"))
    finally:
        adapter.close()
    return caught.value


def test_libpq_can_refuse_cleartext_passwords() -> None:
    assert psycopg.pq.version() >= 160000  # require_auth exists from libpq 16
    assert PG_REQUIRE_AUTH == "!password"


async def test_a_fake_postgres_asking_for_a_cleartext_password_gets_nothing() -> None:
    async with fakes.fake_postgres() as fake:
        # The fake works: a client that does not refuse sends it the password as it is.
        with pytest.raises(psycopg.OperationalError):
            await asyncio.to_thread(
                psycopg.connect,
                host="127.0.0.1",
                port=fake.port,
                user="aaa",
                password=CONTROL,
                dbname="aaa",
                connect_timeout=5,
            )
        assert CONTROL.encode() in fake.everything()
        fake.received.clear()
        division = Division(
            "FAKEPG",
            ServerType.SQL,
            server_url=f"postgresql+psycopg://aaa@127.0.0.1:{fake.port}/aaa",
            credentials={"password": PASSWORD},
            timeout_s=5,
        )
        error = await refused(division)
    assert fake.received, "the adapter never reached the fake"
    assert b"aaa" in fake.everything()  # its startup message arrived ...
    assert PASSWORD.encode() not in fake.everything()  # ... and nothing more
    assert "cleartext" in error.message
    assert PASSWORD not in str(error)


@pytest.mark.parametrize("plugin", [b"mysql_clear_password", b"dialog"])
async def test_a_fake_mysql_asking_for_a_cleartext_plugin_gets_nothing(plugin: bytes) -> None:
    async with fakes.fake_mysql(plugin) as fake:
        if plugin == b"mysql_clear_password":
            # The fake works: PyMySQL left alone answers the switch with the password.
            with pytest.raises(pymysql.MySQLError):
                await asyncio.to_thread(
                    pymysql.connect,
                    host="127.0.0.1",
                    port=fake.port,
                    user="aaa",
                    password=CONTROL,
                    database="aaa",
                    connect_timeout=5,
                    read_timeout=5,
                )
            assert CONTROL.encode() in fake.everything()
            fake.received.clear()
        division = Division(
            "FAKEMY",
            ServerType.SQL,
            server_url=f"mysql+pymysql://aaa@127.0.0.1:{fake.port}/aaa",
            credentials={"password": PASSWORD},
            timeout_s=5,
        )
        error = await refused(division)
    assert fake.received, "the adapter never reached the fake"
    assert PASSWORD.encode() not in fake.everything()
    assert plugin.decode() in error.message
    assert PASSWORD not in str(error)


# -- every output of the listing, update and delivery-failure paths ----------------------


@pytest.fixture
async def runtime(journal: Journal, db_url: str) -> AsyncIterator[Runtime]:
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    runtime = Runtime.around(db_url, journal, embedded=False)
    try:
        yield runtime
    finally:
        await runtime.deliverer.close()


def cli(db_url: str, *args: str) -> tuple[int, str]:
    """`bossa provisioning ARGS`, in this process (a process each would take seconds):
    the exit code and everything it printed, or the `error: ...` line `bossa` prints for
    a refusal."""
    result = CliRunner().invoke(
        provisioning_app, list(args), env={"BOSSA_DATABASE_URL": db_url, "COLUMNS": "250"}
    )
    text = result.stdout + result.stderr
    if isinstance(result.exception, UserError):
        return 2, text + f"error: {result.exception}"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, text


async def test_the_password_is_in_no_answer_listing_log_or_error(
    runtime: Runtime,
    journal: Journal,
    db_url: str,
    rest_server: servers.RestServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with api_client(runtime) as http:
        await _the_paths(http, runtime, journal, db_url, rest_server, texts)
    captured = capfd.readouterr()
    texts += [captured.out, captured.err, caplog.text]
    leaks = sum(1 for text in texts if PASSWORD in text)
    assert leaks == 0, f"the password appeared in {leaks} answers, listings, logs or errors"


async def _the_paths(
    http: httpx.AsyncClient,
    runtime: Runtime,
    journal: Journal,
    db_url: str,
    rest_server: servers.RestServer,
    texts: list[str],
) -> None:

    async def call(method: str, path: str, body: Any = None, status: int | None = None) -> Any:
        response = await http.request(method, "/provisioning" + path, json=body)
        texts.append(response.text)
        if status is not None:
            assert response.status_code == status, response.text
        return response.json()

    async with fakes.fake_postgres() as fake:
        # Divisions with the password in their credentials; a REST server that quotes the
        # Authorization header back in its 500s; a fake PostgreSQL asking for it in clear.
        await call(
            "POST",
            "/divisions/ECHO",
            {
                "server_type": "rest",
                "server_url": rest_server.url,
                "credentials": {"token": PASSWORD},
            },
            201,
        )
        await call(
            "POST",
            "/divisions/FAKEPG",
            {
                "server_type": "sql",
                "server_url": f"postgresql+psycopg://aaa@127.0.0.1:{fake.port}/aaa",
                "credentials": {"username": "aaa", "password": PASSWORD},
                "timeout_ms": 5000,
            },
            201,
        )
        echo_plan = {"method": "POST", "path": "/s/{sa_id}", "body": {"saId": "{sa_id}"}}
        await call("PUT", "/plans/ADSL/4201/ECHO", {"command": echo_plan}, 200)
        await call("PUT", "/plans/ADSL/4201/FAKEPG", {"command": "select :sa_id"}, 200)

        # Delivery fails at both: the order completes, both commands buffered.
        order = await call(
            "POST", "/orders", {"product": "ADSL", "sa_id": "ECHO-1", "intf_code": "4201"}, 201
        )
        assert order["divisions"] == {"ECHO": "buffered", "FAKEPG": "buffered"}
        assert PASSWORD.encode() not in fake.everything()

        # The backup daemons try again (the server quotes the credential back again).
        await journal.set_policy("provisioning.ECHO", {"max_attempts": 1}, actor="t")
        echo = await service.backup_daemon(journal, runtime.deliverer, "ECHO")
        await echo.run(once=True)

    # The listings and the buffers, with their errors, over HTTP ...
    divisions = await call("GET", "/divisions", status=200)
    assert {d["division"]: d["credentials"] for d in divisions} == {
        "ECHO": {"token": "***"},
        "FAKEPG": {"password": "***", "username": "***"},
    }
    await call("GET", "/divisions/FAKEPG", status=200)
    [echo_row] = await call("GET", "/buffers/ECHO", status=200)
    assert "Bearer ***" in echo_row["errmsg"]  # what the server quoted, masked
    [fake_row] = await call("GET", "/buffers/FAKEPG", status=200)
    assert "cleartext" in fake_row["errmsg"]
    shown = await call("GET", f"/commands/{echo_row['entry_id']}", status=200)
    assert shown["errors"]
    # ... the updates that break a rule, with the password in the body ...
    await call(
        "PATCH",
        "/divisions/FAKEPG",
        {"timeout_ms": 1, "credentials": {"password": PASSWORD}},
        422,
    )
    await call(
        "PATCH",
        "/divisions/FAKEPG",
        {"server_url": f"postgresql+psycopg://aaa:{PASSWORD}@127.0.0.1:9/aaa"},
        422,
    )
    await call(
        "POST",
        "/divisions/NEW",
        {"server_type": "sql", "server_url": f"postgresql://u:{PASSWORD}@h/x"},
        422,
    )
    await call(
        "POST",
        "/divisions/NEW",
        {
            "server_type": "sql",
            "server_url": "sqlite:////tmp/x",
            "credentials": {"password": PASSWORD},
        },
        422,
    )
    await call("PATCH", "/divisions/FAKEPG", {"credentials": {"password": PASSWORD + "\x00"}}, 422)
    # ... and what only the database checks, through the service (the model is bypassed).
    unchecked = DivisionChange.model_construct(
        timeout_ms=1, credentials=Credentials(password=PASSWORD)
    )
    with pytest.raises(InvalidInput) as violation:
        await service.update_division(journal.pool, "FAKEPG", unchecked, actor="t")
    texts.append(str(violation.value))
    assert "timeout_ms" in str(violation.value)

    # The CLI's listings and refusals.
    commands = [
        ("division", "list"),
        ("division", "list", "--json"),
        ("division", "show", "FAKEPG"),
        ("division", "show", "ECHO"),
        ("division", "set", "FAKEPG", "--timeout-ms", "1", "--password", PASSWORD),
        ("division", "set", "FAKEPG", "--url", f"postgresql://aaa:{PASSWORD}@h/aaa"),
        ("division", "add", "NEW", "--type", "sql", "--url", "", "--password", PASSWORD),
        ("buffer", "list", "ECHO"),
        ("buffer", "list", "FAKEPG", "--json"),
        ("buffer", "show", str(echo_row["entry_id"])),
        ("log", "--sa-id", "ECHO-1"),
    ]
    for args in commands:
        code, text = await asyncio.to_thread(cli, db_url, *args)
        texts.append(text)
        assert "Traceback" not in text, args
        refusal = args[1] in {"set", "add"}
        assert code == (2 if refusal else 0), (args, code)
    assert any('"password": "***"' in text for text in texts)  # the listings were read
    async with journal.pool.connection() as conn:
        stored = await (
            await conn.execute(
                "select coalesce(last_error, '') as e from provisioning.divisions"
                " union all select coalesce(errmsg, '') from provisioning.commands"
            )
        ).fetchall()
    texts += [row["e"] for row in stored]
