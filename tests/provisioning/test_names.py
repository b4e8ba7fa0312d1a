"""Names an operator types are checked everywhere: a division, product, work order or
buffered command that does not exist is a NotFound naming it, with the same text over
HTTP (404) and on the CLI (one line, exit 2); and a division change the database
refuses says which rule it broke without quoting the row (secrets included). The HTTP
client sends an admin's token (tests.support.api_client)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from bossa.customers import load_sample
from bossa.errors import Conflict, InvalidInput, NotFound
from bossa.journal import Journal, NewEntry
from bossa.journal import service as journal_service
from bossa.provisioning import service
from bossa.provisioning.models import BufferRow, Credentials, DivisionChange
from bossa.runtime import Runtime
from tests.provisioning.conftest import PASSWORD
from tests.support import api_client

# (CLI arguments, HTTP method, path, body, the field named, the reason)
MISSING: list[tuple[list[str], str, str, dict[str, Any] | None, str, str]] = [
    (["buffer", "list", "AAAX"], "GET", "/buffers/AAAX", None, "division", "no division AAAX"),
    (
        ["pause", "AAAX"],
        "POST",
        "/divisions/AAAX/pause",
        None,
        "division",
        "no division AAAX",
    ),
    (
        ["resume", "AAAX"],
        "POST",
        "/divisions/AAAX/resume",
        None,
        "division",
        "no division AAAX",
    ),
    (
        ["division", "set", "AAAX", "--port", "80"],
        "PATCH",
        "/divisions/AAAX",
        {"server_port": 80},
        "division",
        "no division AAAX",
    ),
    (["division", "show", "AAAX"], "GET", "/divisions/AAAX", None, "division", "no division AAAX"),
    (
        ["plan", "add", "ADSL", "4201", "AAAX", "select 1"],
        "PUT",
        "/plans/ADSL/4201/AAAX",
        {"command": "select 1"},
        "division",
        "no division AAAX",
    ),
    (
        ["plan", "add", "NOPE", "4201", "AAA", "select 1"],
        "PUT",
        "/plans/NOPE/4201/AAA",
        {"command": "select 1"},
        "product",
        "no product NOPE",
    ),
    (["order", "show", "WO-X"], "GET", "/orders/WO-X", None, "wo_no", "no work order WO-X"),
    (["log", "--wo-no", "WO-X"], "GET", "/log?wo_no=WO-X", None, "wo_no", "no work order WO-X"),
    (
        ["buffer", "show", "{other}"],
        "GET",
        "/commands/{other}",
        None,
        "entry_id",
        "no provisioning command {other}",
    ),
    (
        ["buffer", "retry", "{other}"],
        "POST",
        "/commands/{other}/retry",
        {},
        "entry_id",
        "no provisioning command {other}",
    ),
    (
        ["buffer", "edit-binds", "{other}", "--bind", "speed=1G"],
        "PATCH",
        "/commands/{other}/binds",
        {"bind_data": {"speed": "1G"}},
        "entry_id",
        "no provisioning command {other}",
    ),
]
DAEMONS = [
    (["backup-daemon", "--division", "AAAX", "--once"], "division: no division AAAX"),
    (["order-daemon", "--product", "NOPE", "--once"], "product: no product NOPE"),
]


@pytest.fixture
async def world(journal: Journal, db_url: str) -> int:
    """Products, division AAA, and a journal entry that is not a provisioning command."""
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    await service.add_division(
        journal.pool,
        "AAA",
        {"server_type": "sql", "server_url": "postgresql+psycopg://aaa@127.0.0.1:9/aaa"},
        actor="test",
    )
    other = await journal.enqueue([NewEntry("demo.other", "note", {"x": 1}, key="k")])
    return other[0].id


@pytest.fixture
async def client(journal: Journal, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime.around(db_url, journal, embedded=False)
    try:
        async with api_client(runtime) as http:
            yield http
    finally:
        await runtime.deliverer.close()


def cli(db_url: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bossa.cli", "provisioning", *args],
        env={**os.environ, "BOSSA_DATABASE_URL": db_url, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_missing_names_are_not_found_alike_on_http_and_cli(
    world: int, client: httpx.AsyncClient, db_url: str
) -> None:
    def fill(text: str) -> str:
        return text.replace("{other}", str(world))

    expected: list[str] = []
    for _, method, path, body, field, reason in MISSING:
        response = await client.request(method, "/provisioning" + fill(path), json=body)
        assert response.status_code == 404, (path, response.text)
        assert response.json() == {
            "error": f"{field}: {fill(reason)}",
            "field": field,
            "reason": fill(reason),
        }
        expected.append(f"error: {field}: {fill(reason)}")
    expected += [f"error: {line}" for _, line in DAEMONS]
    commands = [[fill(a) for a in args] for args, *_ in MISSING] + [a for a, _ in DAEMONS]
    with ThreadPoolExecutor(max_workers=3) as threads:
        done = list(threads.map(lambda args: cli(db_url, args), commands))
    for args, line, result in zip(commands, expected, done, strict=True):
        assert (result.returncode, result.stderr.strip()) == (2, line), args
        assert "Traceback" not in result.stderr


async def test_the_cli_and_the_api_show_a_buffer_with_the_same_columns(
    world: int, client: httpx.AsyncClient, db_url: str
) -> None:
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["BufferRow"]
    listed = cli(db_url, ["buffer", "list", "AAA"])
    assert listed.returncode == 0, listed.stderr
    header = listed.stdout.splitlines()[0].split()
    assert header == list(schema["properties"]) == list(BufferRow.model_fields)


#: Routes that take no body: the credential says who acts, the path what.
BODILESS = {
    ("post", "/provisioning/divisions/{division}/pause"),
    ("post", "/provisioning/divisions/{division}/resume"),
}


async def test_every_provisioning_route_is_typed(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    untyped = []
    for path, operations in paths.items():
        if not path.startswith("/provisioning"):
            continue
        for method, operation in operations.items():
            ok = operation["responses"].get("200") or operation["responses"].get("201")
            if ok is not None and not ok.get("content", {}).get("application/json", {}).get(
                "schema"
            ):
                untyped.append(f"{method} {path} response")
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            bodiless = (method, path) in BODILESS and "requestBody" not in operation
            if (
                method in {"post", "put", "patch"}
                and not bodiless
                and not (body and body.get("schema"))
            ):
                untyped.append(f"{method} {path} body")
    assert untyped == []


async def test_a_division_change_the_database_refuses_does_not_quote_the_row(
    journal: Journal, world: int
) -> None:
    # The model refuses what it knows first ...
    with pytest.raises(InvalidInput) as by_model:
        await service.update_division(
            journal.pool,
            "AAA",
            {"timeout_ms": 1, "credentials": {"password": PASSWORD}},
            actor="t",
        )
    assert by_model.value.field == "timeout_ms"
    # ... and what only the database checks is translated without the row's values.
    unchecked = DivisionChange.model_construct(
        timeout_ms=1, credentials=Credentials(password=PASSWORD)
    )
    with pytest.raises(InvalidInput) as by_database:
        await service.update_division(journal.pool, "AAA", unchecked, actor="t")
    assert PASSWORD not in str(by_database.value)
    assert "timeout_ms" in str(by_database.value)
    shown = await service.show_division(journal.pool, "AAA")
    assert shown.timeout_ms == 5000  # nothing changed


async def test_a_division_name_is_checked_before_it_reaches_the_table(journal: Journal) -> None:
    for name in ("aaa", "A" * 65, "A-B", ""):
        with pytest.raises(InvalidInput) as caught:
            await service.add_division(journal.pool, name, {"server_type": "sql"}, actor="t")
        assert caught.value.field == "division"
    with pytest.raises(NotFound):
        await service.show_division(journal.pool, "A" * 65)


async def test_a_division_declares_its_lane_as_provisionings(journal: Journal, world: int) -> None:
    assert (await journal.lane("provisioning.AAA")).owner == "provisioning"
    # A lane of that name an operator made for the journal's own entries is not taken over.
    await journal_service.enqueue(
        journal, NewEntry("provisioning.NEW", "note", {}, key="k"), actor="t"
    )
    with pytest.raises(Conflict) as caught:
        await service.add_division(
            journal.pool,
            "NEW",
            {"server_type": "sql", "server_url": "postgresql://new@127.0.0.1:9/new"},
            actor="t",
        )
    assert caught.value.field == "division"
    with pytest.raises(NotFound):
        await service.show_division(journal.pool, "NEW")


async def test_a_plan_is_for_an_order_type(journal: Journal, world: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        await service.add_plan_command(journal.pool, "ADSL", "4299", "AAA", "select 1", actor="t")
    assert caught.value.field == "intf_code"
    assert "4204 suspend" in str(caught.value)
    await service.add_plan_command(journal.pool, "ADSL", "4204", "AAA", "select 1", actor="t")
    plans = await service.list_plans(journal.pool)
    assert [(p.intf_code, p.order_type) for p in plans] == [("4204", "suspend")]
