"""The operator's own data from the command line: `bossa sample load` into any database,
twice harmlessly; the walkthrough of docs/catalogue-and-customers.md by CLI; a mistake is
one `error:` line with exit code 2, the same text the API gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from bossa.cli import app
from bossa.customers import load_sample


@pytest.fixture
def bossa(db_url: str) -> Any:
    runner = CliRunner()
    # Errors only: structlog caches a logger on first use with the stderr of the first
    # in-process invocation, which CliRunner closes afterwards (a real process has one).
    env = {
        "BOSSA_DATABASE_URL": db_url,
        "COLUMNS": "250",
        "BOSSA_ACCESS_CLI_ACTOR": "ops",
        "BOSSA_LOG_LEVEL": "error",
    }

    def invoke(*args: str) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.stdout

    return invoke


def test_sample_load_puts_the_tour_operator_into_any_database_once(bossa: Any, db_url: str) -> None:
    first = bossa("sample", "load")
    assert "added 3 products, 4 customers, 4 accounts, 5 contracts" in first
    again = bossa("sample", "load")
    assert "added 0 products, 0 customers, 0 accounts, 0 contracts" in again
    with psycopg.connect(db_url) as conn:
        terms = conn.execute(
            "select sa_id, customer_id, account_id, product_code, status"
            " from customers.contract_terms order by sa_id"
        ).fetchall()
        prices = conn.execute(
            "select product_code, kind, period, amount, currency from customers.price_versions"
            " order by product_code"
        ).fetchall()
        accounts = conn.execute(
            "select id, customer_id, currency, created_by from ledger.billing_accounts order by id"
        ).fetchall()
    assert terms == [
        ("SA-5001", "C-1001", "A-1001", "ADSL", "active"),
        ("SA-5002", "C-1001", "A-1001", "SOIP", "active"),
        ("SA-5003", "C-1002", "A-1002", "WIBRO", "active"),
        ("SA-5004", "C-1003", "A-1003", "ADSL", "active"),
        ("SA-5005", "C-1004", "A-1004", "SOIP", "active"),
    ]
    assert prices == [
        ("ADSL", "recurring", "monthly", 2_500_000, "KRW"),
        ("SOIP", "recurring", "monthly", 900_000, "KRW"),
        ("WIBRO", "recurring", "monthly", 1_900_000, "KRW"),
    ]
    assert [a[:3] for a in accounts] == [(f"A-{n}", f"C-{n}", "KRW") for n in range(1001, 1005)]
    assert {a[3] for a in accounts} == {"cli:ops"}


def test_sample_load_leaves_what_the_operator_has_under_the_same_ids(
    bossa: Any, db_url: str
) -> None:
    bossa("customers", "add", "C-1001", "Someone Else")
    bossa("catalogue", "add", "ADSL", "Our own ADSL", "--price", "100")
    loaded = bossa("sample", "load")
    assert "added 2 products, 3 customers, 4 accounts, 5 contracts" in loaded
    shown = json.loads(bossa("customers", "show", "C-1001"))
    assert shown["name"] == "Someone Else"
    adsl = json.loads(bossa("catalogue", "show", "ADSL"))
    assert [p["amount"] for p in adsl["prices"]] == ["100"]


def test_the_walkthrough_by_cli(bossa: Any) -> None:
    product = json.loads(
        bossa(
            "catalogue",
            "add",
            "FIBER",
            "Fiber 1G",
            "--price",
            "30000",
            "--one-off",
            "50000",
            "--valid-from",
            "2026-01-01",
        )
    )
    assert sorted(p["kind"] for p in product["prices"]) == ["one_off", "recurring"]
    changed = json.loads(
        bossa("catalogue", "price", "FIBER", "35000", "--valid-from", "2026-12-01")
    )
    assert [
        (p["amount"], p["valid_to"]) for p in changed["prices"] if p["kind"] == "recurring"
    ] == [("30000", "2026-12-01"), ("35000", None)]
    customer = json.loads(bossa("customers", "add", "C-1", "Kim", "--msisdn", "+821012340001"))
    assert customer["created_by"] == "cli:ops"
    account = json.loads(
        bossa("accounts", "open", "A-1", "C-1", "--currency", "KRW", "--credit-limit", "500000")
    )
    assert account["credit_limit"] == "500000"
    contract = json.loads(
        bossa("contracts", "add", "SA-1", "C-1", "A-1", "FIBER", "--start", "2026-11-15")
    )
    assert contract["status"] == "active"
    assert contract["order"] is None  # no provisioning plan for FIBER in this database
    assert "no provisioning plan" in contract["provisioning"]
    suspended = json.loads(bossa("contracts", "suspend", "SA-1", "--reason", "asked"))
    assert suspended["status_reason"] == "asked"
    assert suspended["status_changed_by"] == "cli:ops"
    listing = bossa("contracts", "list", "--customer", "C-1")
    assert "SA-1" in listing
    assert "suspended" in listing
    for n in range(2, 5):
        bossa("customers", "add", f"C-{n}", f"Customer {n}")
    first = bossa("customers", "list", "--limit", "2")
    assert "more: --after C-2" in first
    rest = bossa("customers", "list", "--limit", "2", "--after", "C-2")
    assert "C-3" in rest
    assert "C-1 " not in rest


def test_a_mistake_is_one_error_line_and_exit_2(db_url: str) -> None:
    env = {**os.environ, "BOSSA_DATABASE_URL": db_url}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bossa.cli",
            "catalogue",
            "price",
            "NOPE",
            "12.5",
            "--valid-from",
            "2026-01-01",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == ["error: product: no product NOPE"]
    limit = subprocess.run(
        [sys.executable, "-m", "bossa.cli", "contracts", "list", "--limit", "501"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert limit.returncode == 2


def test_the_fixtures_sample_names_the_same_accounts_and_starts(db_url: str) -> None:
    """The tour's and the tests' synchronous loader agrees with `bossa sample load` on
    each contract's account and start, so bills of any past period charge it."""
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
        terms = conn.execute(
            "select sa_id, account_id, start_date from customers.contract_terms order by sa_id"
        ).fetchall()
    assert terms == [
        ("SA-5001", "A-1001", date(1900, 1, 1)),
        ("SA-5002", "A-1001", date(1900, 1, 1)),
        ("SA-5003", "A-1002", date(1900, 1, 1)),
        ("SA-5004", "A-1003", date(1900, 1, 1)),
        ("SA-5005", "A-1004", date(1900, 1, 1)),
    ]
