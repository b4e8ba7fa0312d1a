"""Hostile input to the catalogue, customers, accounts and contracts: every refusal is a
4xx in the project's one shape naming the field, nothing is written, and nothing answers
500 (amounts past the bound, floats, too many decimals, dates out of range, page sizes,
control characters, oversized and mistyped bodies)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from bossa.journal import Journal
from bossa.runtime import Runtime
from tests.support import api_client

PRICE = {
    "kind": "recurring",
    "period": "monthly",
    "amount": "1000",
    "currency": "KRW",
    "valid_from": "2026-01-01",
}


@pytest.fixture
async def http(journal: Journal, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime.around(db_url, journal, embedded=False)
    async with api_client(runtime) as client:
        made = await client.post(
            "/catalogue/products", json={"code": "BASE", "name": "Base", "prices": [PRICE]}
        )
        assert made.status_code == 201, made.text
        assert (await client.post("/customers", json={"id": "C-1", "name": "A"})).status_code == 201
        opened = await client.post(
            "/ledger/accounts", json={"account": "A-1", "customer": "C-1", "currency": "KRW"}
        )
        assert opened.status_code == 201, opened.text
        yield client
    await runtime.deliverer.close()


def product(**prices: Any) -> dict[str, Any]:
    return {"code": "NEWP", "name": "New", "prices": [{**PRICE, **prices}]}


CONTRACT = {"sa_id": "SA-1", "customer": "C-1", "account": "A-1", "product": "BASE"}

CASES: list[tuple[str, str, Any, str | None]] = [
    # amounts: past 10^15 minor units, negative, float, decimals the currency lacks, junk
    ("post", "/catalogue/products", product(amount="10000000000000000"), "amount"),
    ("post", "/catalogue/products", product(amount=10**16), "amount"),
    ("post", "/catalogue/products", product(amount="-5"), "amount"),
    ("post", "/catalogue/products", product(amount=12.5), "amount"),
    ("post", "/catalogue/products", product(amount="12.5"), "amount"),  # KRW has no decimals
    ("post", "/catalogue/products", product(amount="1e300000"), "amount"),
    ("post", "/catalogue/products", product(amount="NaN"), "amount"),
    ("post", "/catalogue/products", product(amount=None), "amount"),
    ("post", "/catalogue/products", product(amount=True), "amount"),
    ("post", "/catalogue/products", product(currency="XXX"), "currency"),
    ("post", "/catalogue/products", product(currency="K\x00W"), None),
    # dates out of range or not dates
    ("post", "/catalogue/products", product(valid_from="0001-01-01"), None),
    ("post", "/catalogue/products", product(valid_from="10000-01-01"), None),
    ("post", "/catalogue/products", product(valid_from="2026-02-30"), None),
    ("post", "/catalogue/products", product(valid_from=2026), None),
    # kind and period
    ("post", "/catalogue/products", product(period=None), None),
    ("post", "/catalogue/products", product(kind="one_off"), None),
    ("post", "/catalogue/products", product(period="weekly"), None),
    # codes, names, sizes
    ("post", "/catalogue/products", {"code": "lower", "name": "x"}, None),
    ("post", "/catalogue/products", {"code": "A" * 33, "name": "x"}, None),
    ("post", "/catalogue/products", {"code": "OK", "name": "x\x00y"}, None),
    ("post", "/catalogue/products", {"code": "OK", "name": "x" * 201}, None),
    ("post", "/catalogue/products", {"code": "OK", "name": "x", "prices": [PRICE] * 9}, None),
    ("post", "/catalogue/products", {"code": "OK", "name": "x", "prices": [PRICE, PRICE]}, None),
    ("post", "/catalogue/products", {"code": "OK", "name": "x", "actor": "mallory"}, None),
    ("post", "/catalogue/products", [1, 2], None),
    (
        "post",
        "/catalogue/products/BASE/prices",
        {**PRICE, "amount": "9" * 17, "valid_from": "2026-06-01"},
        "amount",
    ),
    ("post", "/catalogue/products/BASE/prices", {**PRICE, "valid_from": "9999-12-32"}, None),
    ("patch", "/catalogue/products/BASE", {"name": ""}, None),
    # customers
    ("post", "/customers", {"id": "C 2", "name": "x"}, None),
    ("post", "/customers", {"id": "C-\x01", "name": "x"}, None),
    ("post", "/customers", {"id": "C" * 65, "name": "x"}, None),
    ("post", "/customers", {"id": "C-2", "name": "x", "msisdn": "call me"}, None),
    ("post", "/customers", {"id": "C-2", "name": "x", "email": "no-at-sign"}, None),
    ("post", "/customers", {"id": "C-1", "name": "again"}, "id"),
    ("patch", "/customers/C-1", {"email": "a@" + "b" * 300}, None),
    # accounts
    (
        "post",
        "/ledger/accounts",
        {"account": "A-2", "customer": "C-1", "currency": "KRW", "credit_limit": "1" * 17},
        "credit_limit",
    ),
    (
        "post",
        "/ledger/accounts",
        {"account": "A-2", "customer": "C-1", "currency": "KRW", "credit_limit": "-1"},
        "credit_limit",
    ),
    (
        "post",
        "/ledger/accounts",
        {
            "account": "A-2",
            "customer": "C-1",
            "currency": "KRW",
            "dunning_profile": "Robert'); drop table x;--",
        },
        None,
    ),
    ("patch", "/ledger/accounts/A-1", {"grace_days": 10**9}, None),
    ("patch", "/ledger/accounts/A-1", {"credit_limit": 1.5}, "credit_limit"),
    ("patch", "/ledger/accounts/A-1", {"currency": "USD"}, None),
    ("patch", "/ledger/accounts/A-404", {"grace_days": 1}, "account"),
    # contracts
    ("post", "/contracts", {**CONTRACT, "start_date": "0001-01-01"}, None),
    ("post", "/contracts", {**CONTRACT, "start_date": "+10000-01-01"}, None),
    ("post", "/contracts", {**CONTRACT, "product": "base"}, None),
    ("post", "/contracts", {**CONTRACT, "bind_data": {"x": {"nested": 1}}}, None),
    ("post", "/contracts", {**CONTRACT, "bind_data": {f"k{i}": i for i in range(40)}}, None),
    ("post", "/contracts", {**CONTRACT, "bind_data": "speed=1G"}, None),
    ("post", "/contracts/SA-404/suspend", {"reason": "x" * 501}, None),
    ("post", "/contracts/SA-404/terminate", {"end_date": "1899-12-31"}, None),
    ("post", "/contracts/SA-404/suspend", {}, "sa_id"),
    ("patch", "/contracts/SA-404", {"account": "A-1"}, "sa_id"),
]

PARAMS: list[tuple[str, dict[str, Any]]] = [
    ("/customers", {"limit": 0}),
    ("/customers", {"limit": 501}),
    ("/customers", {"limit": 10**30}),
    ("/customers", {"limit": "many"}),
    ("/customers", {"after": "x\x00"}),
    ("/customers", {"after": "x" * 65}),
    ("/customers", {"status": "gone"}),
    ("/contracts", {"product": "lower"}),
    ("/contracts", {"status": "paused"}),
    ("/catalogue/products", {"after": ""}),
    ("/ledger/accounts", {"bill_cycle": "\x7f"}),
    ("/ledger/accounts", {"status": "open"}),
]


async def written(http: httpx.AsyncClient) -> tuple[int, int, int, int]:
    runtime: Runtime = http._transport.app.state.runtime  # type: ignore[attr-defined]
    async with runtime.pool.connection() as conn:
        row = await (
            await conn.execute(
                "select (select count(*) from customers.products) as p,"
                " (select count(*) from customers.product_prices) as pp,"
                " (select count(*) from customers.customers) as c,"
                " (select count(*) from customers.contracts) as k"
            )
        ).fetchone()
    assert row is not None
    return row["p"], row["pp"], row["c"], row["k"]


def refused(answer: httpx.Response, field: str | None) -> list[str]:
    """What is wrong with a refusal: not a 4xx, not the one shape, or the wrong field."""
    if not 400 <= answer.status_code < 500:
        return [f"answered {answer.status_code}: {answer.text[:200]}"]
    body = answer.json()
    # The one shape: `problems` is there too when a request has several (bossa.errors).
    if set(body) - {"problems"} != {"error", "field", "reason"}:
        return [f"shape {sorted(body)}"]
    if "problems" in body and not all(set(p) == {"field", "reason"} for p in body["problems"]):
        return [f"problems {body['problems']}"]
    if field is not None and body["field"] != field:
        return [f"field {body['field']!r}, not {field!r}: {body['error']}"]
    return []


async def test_hostile_bodies_are_refused_in_one_shape_and_write_nothing(
    http: httpx.AsyncClient,
) -> None:
    before = await written(http)
    wrong = []
    for method, path, body, field in CASES:
        answer = await http.request(method, path, json=body)
        wrong += [f"{method} {path} {body!r:.80}: {w}" for w in refused(answer, field)]
    assert wrong == []
    assert await written(http) == before


async def test_hostile_query_parameters_are_refused(http: httpx.AsyncClient) -> None:
    wrong = []
    for path, params in PARAMS:
        answer = await http.get(path, params=params)
        wrong += [f"{path} {params!r:.80}: {w}" for w in refused(answer, None)]
    assert wrong == []


@pytest.mark.parametrize(
    "path",
    [
        "/customers/%00",
        "/customers/" + "x" * 65,
        "/contracts/a%20b",
        "/catalogue/products/lower",
        "/ledger/accounts/%7F/close",
    ],
)
async def test_hostile_path_values(http: httpx.AsyncClient, path: str) -> None:
    method = "post" if path.endswith("/close") else "get"
    answer = await http.request(method, path)
    assert refused(answer, None) == []


async def test_a_version_written_behind_the_service_bounds_the_next_change(
    http: httpx.AsyncClient, db_url: str
) -> None:
    """A closed version written by SQL (as bulk import writes them) is the latest one: a
    change starting inside it is refused naming valid_from, not answered 500."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "insert into customers.product_prices"
            " (product_code, kind, period, amount, currency, valid_from, valid_to)"
            " values ('BASE', 'one_off', null, 5, 'KRW', '2026-01-01', '2026-06-01')"
        )
    answer = await http.post(
        "/catalogue/products/BASE/prices",
        json={"kind": "one_off", "amount": "7", "currency": "KRW", "valid_from": "2026-03-01"},
    )
    assert refused(answer, "valid_from") == []
