"""Billing, ledger and customers in the one module shape: typed service-lane payloads
that producer and consumer agree on, missing names refused alike by the API and the CLI,
and a schema for every body in /openapi.json. (That their SQL names only what other
modules publish is tests/foundation/test_shape.py's to check, for every module.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from bossa.billing import SERVICE_LANE, ServiceOrder, bill, run_dunning, settle
from bossa.billing.lanes import service_entry
from bossa.customers import load_sample
from bossa.journal import Entry, Journal
from bossa.provisioning import OrderType
from bossa.runtime import Runtime
from tests.billing.conftest import month, open_run
from tests.support import api_client


def entry_of(order: ServiceOrder, entry_id: int = 1) -> Entry:
    """The entry a worker would be handed for what the producer enqueued."""
    new = service_entry(order)
    now = datetime.now(UTC)
    return Entry(entry_id, new.lane, new.key, new.kind, new.payload, 0, now, now)


@pytest.mark.parametrize("restore", [False, True])
def test_service_order_round_trip(restore: bool) -> None:
    order = ServiceOrder.change(
        restore=restore, account="A-1", sa_id="SA-5001", product="ADSL", reason="why"
    )
    new = service_entry(order)
    assert (new.lane, new.key) == (SERVICE_LANE, "SA-5001")
    assert new.kind == ("service.resume" if restore else "service.suspend")
    assert new.payload == {
        "account": "A-1",
        "sa_id": "SA-5001",
        "product": "ADSL",
        "intf_code": (OrderType.RESUME if restore else OrderType.SUSPEND).value,
        "reason": "why",
    }
    assert ServiceOrder.from_entry(entry_of(order)) == order


def test_service_order_refuses_a_broken_payload() -> None:
    order = ServiceOrder.change(
        restore=False, account="A-1", sa_id="SA-5001", product="ADSL", reason="why"
    )
    good = entry_of(order)
    for payload in (
        {**good.payload, "intf_code": "4205"},  # a resume's code on a suspend
        {**good.payload, "extra": 1},
        {k: v for k, v in good.payload.items() if k != "sa_id"},
    ):
        broken = Entry(
            1, good.lane, good.key, good.kind, payload, 0, good.created_at, good.created_at
        )
        with pytest.raises(ValueError):
            ServiceOrder.from_entry(broken)


async def test_dunning_entries_read_back_as_models(journal: Journal, accounts: list[str]) -> None:
    period = month(2)
    run = await open_run(journal.pool, period)
    await bill(journal.pool, run)
    await settle(journal.pool, run)
    today = period[1] + timedelta(days=35)
    assert await run_dunning(journal, today=today) == accounts
    taken = await journal.take(SERVICE_LANE, 10)
    orders = sorted((ServiceOrder.from_entry(e) for e in taken.entries), key=lambda o: o.sa_id)
    assert [(o.kind, o.sa_id, o.product, o.intf_code) for o in orders] == [
        ("service.suspend", "SA-5001", "ADSL", "4204"),
        ("service.suspend", "SA-5002", "SOIP", "4204"),
        ("service.suspend", "SA-5003", "WIBRO", "4204"),
        ("service.suspend", "SA-5004", "ADSL", "4204"),
        ("service.suspend", "SA-5005", "SOIP", "4204"),
    ]
    # Each names the arrears (the past-due amount) that paying restores the account.
    assert {entry.payload["reason"] for entry in taken.entries} == {
        f"arrears of {owed} KRW overdue on {today}"
        for owed in ("2500000", "1900000", "3400000", "900000")
    }
    assert (await journal.lane(SERVICE_LANE)).owner == "billing"


# -- the edges -----------------------------------------------------------------------------


@pytest.fixture
async def client(journal: Journal, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    runtime = Runtime.around(db_url, journal, embedded=False)
    async with api_client(runtime) as http:
        opened = await http.post(
            "/ledger/accounts",
            json={"account": "A-1001", "customer": "C-1001", "currency": "KRW"},
        )
        assert opened.status_code == 201, opened.text
        yield http
    await runtime.deliverer.close()


PERIOD = month(1)


def bossa(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bossa.cli", *args],
        env={**os.environ, "BOSSA_DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "argv"),
    [
        ("GET", "/ledger/accounts/A-9999", None, ["ledger", "show", "A-9999"]),
        (
            "GET",
            "/billing/authorize?account=A-9999&amount=10&currency=KRW",
            None,
            ["billing", "authorize", "A-9999", "10", "KRW"],
        ),
        (
            "POST",
            "/billing/payments/deposit",
            {"account": "A-9999", "amount": "10", "currency": "KRW"},
            ["billing", "pay", "deposit", "A-9999", "10", "KRW"],
        ),
        ("POST", "/billing/runs/424242/cancel", None, ["billing", "run", "cancel", "424242"]),
        ("GET", "/billing/runs/424242", None, ["billing", "run", "status", "424242"]),
        ("GET", "/billing/runs/424242/reconcile", None, ["billing", "reconcile", "424242"]),
        (
            "POST",
            "/billing/runs",
            {"period_start": str(PERIOD[0]), "period_end": str(PERIOD[1]), "bill_cycle": "MONTLY"},
            ["billing", "run", "start", str(PERIOD[0]), str(PERIOD[1]), "--cycle", "MONTLY"],
        ),
        (
            "POST",
            "/ledger/accounts",
            {"account": "A-7", "customer": "C-9999", "currency": "KRW"},
            ["ledger", "open", "A-7", "C-9999"],
        ),
    ],
)
async def test_missing_names_are_refused_alike(
    client: httpx.AsyncClient,
    db_url: str,
    method: str,
    path: str,
    body: dict[str, str] | None,
    argv: list[str],
) -> None:
    headers = {"Idempotency-Key": "same-key"} if "payments" in path else {}
    answer = await client.request(method, path, json=body, headers=headers)
    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert re.search(r"no (account|bill run|customer) |no account bills in cycle", error)
    cli = bossa(db_url, *argv)
    assert cli.returncode == 2, cli.stderr
    assert cli.stderr.strip() == f"error: {error}"


@pytest.mark.parametrize("argv", [["run", "bill", "424242"], ["run", "settle", "424242"]])
def test_cli_run_commands_name_a_missing_run(db_url: str, argv: list[str]) -> None:
    cli = bossa(db_url, "billing", *argv)
    assert cli.returncode == 2, cli.stderr
    assert cli.stderr.strip() == "error: run: no bill run 424242"


async def test_bad_bodies_name_the_field_as_the_cli_does(
    client: httpx.AsyncClient, db_url: str
) -> None:
    answer = await client.post(
        "/billing/runs", json={"period_start": "2026-11-31", "period_end": "2026-11-30"}
    )
    assert answer.status_code == 422
    assert answer.json()["field"] == "period_start"
    cli = bossa(db_url, "billing", "run", "start", "2026-11-31", "2026-11-30")
    assert cli.returncode == 2
    assert cli.stderr.strip() == f"error: {answer.json()['error']}"


async def test_openapi_has_a_schema_for_every_body(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    checked = 0
    for path, operations in spec["paths"].items():
        if not path.startswith(("/billing", "/ledger")):
            continue
        for method, operation in operations.items():
            name = f"{method.upper()} {path}"
            # Cancelling a run and closing an account are actions without a body.
            if method in ("post", "put", "patch") and not path.endswith(("/cancel", "/close")):
                schema = operation["requestBody"]["content"]["application/json"]["schema"]
                assert schema, name
            ok = [code for code in operation["responses"] if code.startswith("2")]
            assert ok, name
            for code in ok:
                schema = operation["responses"][code]["content"]["application/json"]["schema"]
                assert schema.get("$ref") or schema.get("type") not in (None, "object"), name
            checked += 1
    assert checked >= 10
