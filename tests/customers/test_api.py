"""The operator's own data through HTTP: from an empty migrated database to a product, a
customer, an account and a contract provisioned by a real SQL division (this test's own
database), then every lifecycle change as an order; versioned prices; keyset paging;
accounts' terms and closing; who may do what."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg.conninfo import conninfo_to_dict

from bossa.access import Role
from bossa.customers import PriceKind, PricePeriod, service
from bossa.customers.models import PriceRequest, ProductView
from bossa.errors import Conflict
from bossa.journal import Journal
from bossa.provisioning import add_division, add_plan_command
from bossa.runtime import Runtime
from tests.support import api_client

TODAY = date.today()

AAA_TABLE = """
create table public.aaa_subscribers (
    sa_id   varchar(64) primary key,
    cust_id varchar(64),
    speed   varchar(16) not null,
    status  varchar(16) not null
)
"""
PLAN = {
    "4201": "insert into aaa_subscribers (sa_id, cust_id, speed, status)"
    " values (:sa_id, :cust_id, :speed, 'active')",
    "4202": "update aaa_subscribers set speed = :speed where sa_id = :sa_id",
    "4203": "delete from aaa_subscribers where sa_id = :sa_id",
    "4204": "update aaa_subscribers set status = 'suspended' where sa_id = :sa_id",
    "4205": "update aaa_subscribers set status = 'active' where sa_id = :sa_id",
}


@pytest.fixture
async def runtime(journal: Journal, db_url: str) -> AsyncIterator[Runtime]:
    runtime = Runtime.around(db_url, journal, embedded=False)
    yield runtime
    await runtime.deliverer.close()


@pytest.fixture
async def http(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(runtime) as client:
        yield client


async def aaa_division(runtime: Runtime, db_url: str, *products: str) -> None:
    """Division AAA: a SQL server that is this test's own database, with a plan for every
    order type of each product."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(AAA_TABLE)
    info = conninfo_to_dict(db_url)
    url = (
        f"postgresql+psycopg://{info.get('user', 'postgres')}@{info.get('host', '127.0.0.1')}"
        f":{info.get('port', 5432)}/{info['dbname']}"
    )
    await add_division(runtime.pool, "AAA", {"server_type": "sql", "server_url": url}, actor="test")
    for product in products:
        for intf_code, command in PLAN.items():
            await add_plan_command(
                runtime.pool, product, intf_code, "AAA", command, position=0, actor="test"
            )


def subscriber(db_url: str, sa_id: str) -> tuple[Any, ...] | None:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "select speed, status from public.aaa_subscribers where sa_id = %s", (sa_id,)
        ).fetchone()


async def ok(answer: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def setup_party(http: httpx.AsyncClient) -> None:
    """Product FIBER (monthly 30,000 KRW and a 50,000 KRW one-off fee), customer C-1,
    account A-1 (KRW)."""
    await ok(
        await http.post(
            "/catalogue/products",
            json={
                "code": "FIBER",
                "name": "Fiber 1G",
                "prices": [
                    {
                        "kind": "recurring",
                        "period": "monthly",
                        "amount": "30000",
                        "currency": "KRW",
                        "valid_from": "2026-01-01",
                    },
                    {
                        "kind": "one_off",
                        "amount": "50000",
                        "currency": "KRW",
                        "valid_from": "2026-01-01",
                    },
                ],
            },
        ),
        201,
    )
    await ok(
        await http.post(
            "/customers", json={"id": "C-1", "name": "Kim Min-jun", "msisdn": "+821012340001"}
        ),
        201,
    )
    await ok(
        await http.post(
            "/ledger/accounts",
            json={"account": "A-1", "customer": "C-1", "currency": "KRW", "credit_limit": "500000"},
        ),
        201,
    )


async def test_from_nothing_to_a_provisioned_contract_and_its_lifecycle(
    runtime: Runtime, http: httpx.AsyncClient, db_url: str
) -> None:
    await setup_party(http)
    await ok(
        await http.post(
            "/catalogue/products",
            json={
                "code": "FIBER_2G",
                "name": "Fiber 2G",
                "prices": [
                    {
                        "kind": "recurring",
                        "period": "monthly",
                        "amount": "45000",
                        "currency": "KRW",
                        "valid_from": "2026-01-01",
                    }
                ],
            },
        ),
        201,
    )
    await aaa_division(runtime, db_url, "FIBER", "FIBER_2G")

    made = await ok(
        await http.post(
            "/contracts",
            json={
                "sa_id": "SA-1",
                "customer": "C-1",
                "account": "A-1",
                "product": "FIBER",
                "start_date": "2026-11-15",
                "bind_data": {"speed": "1G"},
            },
        ),
        201,
    )
    assert made["status"] == "active"
    assert made["account_id"] == "A-1"
    assert made["start_date"] == "2026-11-15"
    assert made["order"]["intf_code"] == "4201"
    assert made["order"]["status"] == "completed"
    assert made["order"]["divisions"] == {"AAA": "direct"}
    assert made["order"]["created_by"].startswith("token:")
    assert subscriber(db_url, "SA-1") == ("1G", "active")

    suspended = await ok(
        await http.post("/contracts/SA-1/suspend", json={"reason": "customer asked"})
    )
    assert suspended["status"] == "suspended"
    assert suspended["status_reason"] == "customer asked"
    assert suspended["status_changed_by"].startswith("token:")
    assert suspended["order"]["intf_code"] == "4204"
    assert subscriber(db_url, "SA-1") == ("1G", "suspended")
    again = await http.post("/contracts/SA-1/suspend", json={})
    assert again.status_code == 409
    assert again.json()["field"] == "sa_id"

    resumed = await ok(await http.post("/contracts/SA-1/resume", json={}))
    assert resumed["status"] == "active"
    assert resumed["order"]["intf_code"] == "4205"
    assert subscriber(db_url, "SA-1") == ("1G", "active")

    moved = await ok(
        await http.post(
            "/contracts/SA-1/product", json={"product": "FIBER_2G", "bind_data": {"speed": "2G"}}
        )
    )
    assert moved["product_code"] == "FIBER_2G"
    assert moved["order"]["intf_code"] == "4202"
    assert subscriber(db_url, "SA-1") == ("2G", "active")

    ended = await ok(await http.post("/contracts/SA-1/terminate", json={"reason": "moved abroad"}))
    assert ended["status"] == "terminated"
    assert ended["end_date"] == TODAY.isoformat()
    assert ended["order"]["intf_code"] == "4203"
    assert subscriber(db_url, "SA-1") is None
    assert (await http.post("/contracts/SA-1/resume", json={})).status_code == 409

    # The published view billing reads.
    with psycopg.connect(db_url) as conn:
        terms = conn.execute(
            "select customer_id, account_id, product_code, status, start_date, end_date"
            " from customers.contract_terms where sa_id = 'SA-1'"
        ).fetchone()
    assert terms == ("C-1", "A-1", "FIBER_2G", "terminated", date(2026, 11, 15), TODAY)


def _changes(change: str, order: str) -> float:
    value = REGISTRY.get_sample_value(
        "bossa_customers_contract_changes_total", {"change": change, "order": order}
    )
    return value or 0.0


async def test_a_product_without_a_plan_records_the_change_without_an_order(
    http: httpx.AsyncClient, db_url: str
) -> None:
    await setup_party(http)
    before = _changes("new", "none")
    made = await ok(
        await http.post(
            "/contracts",
            json={"sa_id": "SA-2", "customer": "C-1", "account": "A-1", "product": "FIBER"},
        ),
        201,
    )
    assert made["order"] is None
    assert "no provisioning plan for INTF_CODE 4201" in made["provisioning"]
    assert made["start_date"] == TODAY.isoformat()
    assert _changes("new", "none") == before + 1
    with psycopg.connect(db_url) as conn:
        orders = conn.execute(
            "select count(*) from provisioning.orders where sa_id = 'SA-2'"
        ).fetchone()
    assert orders == (0,)


async def test_contracts_are_refused_what_billing_could_not_bill(
    http: httpx.AsyncClient,
) -> None:
    await setup_party(http)
    await ok(await http.post("/customers", json={"id": "C-2", "name": "Lee"}), 201)
    await ok(
        await http.post(
            "/ledger/accounts", json={"account": "A-2", "customer": "C-2", "currency": "KRW"}
        ),
        201,
    )
    await ok(
        await http.post(
            "/ledger/accounts", json={"account": "A-USD", "customer": "C-1", "currency": "USD"}
        ),
        201,
    )
    base = {"sa_id": "SA-3", "customer": "C-1", "account": "A-1", "product": "FIBER"}
    cases = [
        ({"account": "A-2"}, 422, "account"),  # another customer's account
        ({"account": "A-USD"}, 422, "account"),  # priced in KRW
        ({"account": "A-9"}, 404, "account"),
        ({"customer": "C-9"}, 404, "customer"),
        ({"product": "NOPE"}, 404, "product"),
    ]
    for change, status, field in cases:
        answer = await http.post("/contracts", json={**base, **change})
        assert answer.status_code == status, (change, answer.text)
        assert answer.json()["field"] == field, (change, answer.text)
    await ok(await http.post("/catalogue/products/FIBER/retire"))
    retired = await http.post("/contracts", json=base)
    assert retired.status_code == 409
    assert retired.json()["field"] == "product"


async def test_a_price_change_closes_the_open_version_and_past_ones_never_change(
    http: httpx.AsyncClient, db_url: str
) -> None:
    await setup_party(http)
    change = {
        "kind": "recurring",
        "period": "monthly",
        "amount": "35000",
        "currency": "KRW",
        "valid_from": "2026-12-01",
    }
    product = await ok(await http.post("/catalogue/products/FIBER/prices", json=change), 201)
    recurring = [p for p in product["prices"] if p["kind"] == "recurring"]
    assert [(p["amount"], p["valid_from"], p["valid_to"]) for p in recurring] == [
        ("30000", "2026-01-01", "2026-12-01"),
        ("35000", "2026-12-01", None),
    ]
    # Not from a day at or before the latest version's start.
    for day in ("2026-12-01", "2026-06-01"):
        refused = await http.post(
            "/catalogue/products/FIBER/prices", json={**change, "valid_from": day}
        )
        assert refused.status_code == 409
        assert refused.json()["field"] == "valid_from"
    listed = await ok(await http.get("/catalogue/products/FIBER/prices"))
    assert len(listed) == 3  # type: ignore[arg-type]

    with psycopg.connect(db_url, autocommit=True) as conn:
        versions = conn.execute(
            "select kind, period, amount, currency, valid_from, valid_to"
            " from customers.price_versions where product_code = 'FIBER' order by kind, valid_from"
        ).fetchall()
        assert versions == [
            ("one_off", None, 50000, "KRW", date(2026, 1, 1), None),
            ("recurring", "monthly", 30000, "KRW", date(2026, 1, 1), date(2026, 12, 1)),
            ("recurring", "monthly", 35000, "KRW", date(2026, 12, 1), None),
        ]
        # Whoever writes (import, SQL by hand) meets the same guard.
        for statement in (
            "update customers.product_prices set amount = 1 where valid_to is not null",
            "update customers.product_prices set amount = 1 where valid_to is null",
            "delete from customers.product_prices",
            "insert into customers.product_prices"
            " (product_code, kind, period, amount, currency, valid_from)"
            " values ('FIBER', 'recurring', 'monthly', 1, 'KRW', '2026-03-01')",
        ):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(statement)
        # The old view still gives today's monthly price.
        fee = conn.execute(
            "select monthly_fee, currency from customers.contract_fees limit 1"
        ).fetchone()
        assert fee is None  # no contracts yet


async def test_prices_in_the_currency_with_their_decimals(http: httpx.AsyncClient) -> None:
    body = {
        "code": "ROAM",
        "name": "Roaming pack",
        "prices": [
            {
                "kind": "recurring",
                "period": "quarterly",
                "amount": "12.50",
                "currency": "usd",
                "valid_from": "2026-01-01",
            },
            {"kind": "one_off", "amount": "0", "currency": "USD", "valid_from": "2026-01-01"},
        ],
    }
    made = await ok(await http.post("/catalogue/products", json=body), 201)
    by_kind = {p["kind"]: p for p in made["prices"]}
    assert by_kind["recurring"]["amount"] == "12.50"
    assert by_kind["recurring"]["amount_minor"] == 1250
    assert by_kind["recurring"]["period"] == "quarterly"
    assert by_kind["one_off"]["amount_minor"] == 0
    assert (await http.post("/catalogue/products", json=body)).status_code == 409
    updated = await ok(
        await http.patch("/catalogue/products/ROAM", json={"description": "EU and Asia"})
    )
    assert updated["description"] == "EU and Asia"
    assert updated["updated_by"].startswith("token:")


async def test_keyset_pages_list_everything_once(http: httpx.AsyncClient) -> None:
    ids = [f"C-{n:03d}" for n in range(7)]
    for customer in reversed(ids):
        await ok(await http.post("/customers", json={"id": customer, "name": "x"}), 201)
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"after": after} if after else {})
        page = await ok(await http.get("/customers", params=params))
        seen += [c["id"] for c in page["items"]]
        pages += 1
        after = page["next"]
        if after is None:
            break
    assert seen == ids
    assert pages == 3
    closed = await ok(await http.post("/customers/C-003/close"))
    assert closed["status"] == "closed"
    only = await ok(await http.get("/customers", params={"status": "closed"}))
    assert [c["id"] for c in only["items"]] == ["C-003"]
    assert (await http.patch("/customers/C-003", json={"name": "y"})).status_code == 409


async def test_customer_contact_changes_and_clears(http: httpx.AsyncClient) -> None:
    await ok(
        await http.post(
            "/customers", json={"id": "C-7", "name": "Park", "email": "park@example.com"}
        ),
        201,
    )
    changed = await ok(
        await http.patch("/customers/C-7", json={"msisdn": "+821000000007", "email": None})
    )
    assert changed["msisdn"] == "+821000000007"
    assert changed["email"] is None
    assert changed["name"] == "Park"
    found = await ok(await http.get("/customers", params={"msisdn": "+821000000007"}))
    assert [c["id"] for c in found["items"]] == ["C-7"]


async def test_account_terms_and_closing(http: httpx.AsyncClient, runtime: Runtime) -> None:
    await setup_party(http)
    listed = await ok(await http.get("/ledger/accounts", params={"customer": "C-1"}))
    assert listed["items"][0]["credit_limit"] == "500000"
    assert listed["items"][0]["dunning_profile"] == "standard"
    changed = await ok(
        await http.patch(
            "/ledger/accounts/A-1",
            json={"grace_days": 7, "dunning_profile": "lenient", "credit_limit": None},
        )
    )
    assert changed["grace_days"] == 7
    assert changed["credit_limit"] is None
    assert changed["dunning_profile"] == "lenient"
    kept = await ok(await http.patch("/ledger/accounts/A-1", json={"bill_cycle": "MID"}))
    assert kept["grace_days"] == 7
    assert kept["bill_cycle"] == "MID"

    await ok(
        await http.post(
            "/contracts",
            json={"sa_id": "SA-9", "customer": "C-1", "account": "A-1", "product": "FIBER"},
        ),
        201,
    )
    busy = await http.post("/ledger/accounts/A-1/close")
    assert busy.status_code == 409
    assert "SA-9" in busy.json()["reason"]
    customer_busy = await http.post("/customers/C-1/close")
    assert customer_busy.status_code == 409
    await ok(await http.post("/contracts/SA-9/terminate", json={}))
    still_open = await http.post("/customers/C-1/close")
    assert still_open.status_code == 409
    assert "A-1" in still_open.json()["reason"]
    closed = await ok(await http.post("/ledger/accounts/A-1/close"))
    assert closed["status"] == "closed"
    assert (await http.post("/ledger/accounts/A-1/close")).status_code == 200
    assert (await http.patch("/ledger/accounts/A-1", json={"grace_days": 1})).status_code == 409
    assert (await ok(await http.post("/customers/C-1/close")))["status"] == "closed"
    shown = await ok(await http.get("/ledger/accounts/A-1"))
    assert shown["account"]["status"] == "closed"
    paid = await http.post(
        "/billing/payments/deposit",
        json={"account": "A-1", "amount": "1000", "currency": "KRW"},
        headers={"Idempotency-Key": "after-close"},
    )
    assert paid.status_code == 409
    assert paid.json()["field"] == "account"


async def test_an_account_holding_money_stays_open(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    await setup_party(http)
    paid = await http.post(
        "/billing/payments/deposit",
        json={"account": "A-1", "amount": "1000", "currency": "KRW"},
        headers={"Idempotency-Key": "close-test-1"},
    )
    assert paid.status_code == 201, paid.text
    refused = await http.post("/ledger/accounts/A-1/close")
    assert refused.status_code == 409
    assert "prepaid" in refused.json()["reason"]


@pytest.mark.parametrize(
    ("role", "method", "path", "allowed"),
    [
        (Role.FRONT_OFFICE, "post", "/customers", True),
        (Role.FRONT_OFFICE, "post", "/catalogue/products", False),
        (Role.BILLING_OPERATOR, "post", "/catalogue/products", True),
        (Role.BILLING_OPERATOR, "post", "/contracts", False),
        (Role.READ_ONLY, "get", "/contracts", True),
        (Role.READ_ONLY, "post", "/contracts", False),
        (Role.PARTNER, "get", "/customers", False),
    ],
)
async def test_who_may_do_what(
    runtime: Runtime, role: Role, method: str, path: str, allowed: bool
) -> None:
    async with api_client(runtime, role=role) as http:
        body = {"json": {}} if method == "post" else {}
        answer = await http.request(method, path, **body)
    assert (answer.status_code != 403) == allowed, answer.text


async def test_terminate_refuses_an_end_outside_the_contract(http: httpx.AsyncClient) -> None:
    await setup_party(http)
    await ok(
        await http.post(
            "/contracts",
            json={
                "sa_id": "SA-5",
                "customer": "C-1",
                "account": "A-1",
                "product": "FIBER",
                "start_date": "2026-02-01",
            },
        ),
        201,
    )
    for end in ("2026-01-31", (TODAY + timedelta(days=1)).isoformat()):
        answer = await http.post("/contracts/SA-5/terminate", json={"end_date": end})
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == "end_date"
    bad = await http.post("/contracts/SA-5/suspend", json={"end_date": "2026-03-01"})
    assert bad.status_code == 422
    assert bad.json()["field"] == "end_date"
    ended = await ok(await http.post("/contracts/SA-5/terminate", json={"end_date": "2026-03-01"}))
    assert ended["end_date"] == "2026-03-01"


async def test_concurrent_price_changes_take_turns_and_never_overlap(
    http: httpx.AsyncClient, runtime: Runtime, db_url: str
) -> None:
    """Eight changes of one product's price at once, from different days: the product's
    row lock makes them take turns, so each either extends the chain or is refused, and
    the versions never overlap."""
    await setup_party(http)
    days = [date(2027, 1, 1) + timedelta(days=31 * n) for n in range(8)]
    requests = [
        PriceRequest(
            kind=PriceKind.RECURRING,
            period=PricePeriod.MONTHLY,
            amount=str(1000 + n),
            currency="KRW",
            valid_from=day,
        )
        for n, day in enumerate(days)
    ]
    outcomes = await asyncio.gather(
        *(service.change_price(runtime.pool, "FIBER", r, actor="t") for r in requests),
        return_exceptions=True,
    )
    assert all(isinstance(o, ProductView | Conflict) for o in outcomes), outcomes
    with psycopg.connect(db_url) as conn:
        chain = conn.execute(
            "select valid_from, valid_to from customers.price_versions"
            " where product_code = 'FIBER' and kind = 'recurring' order by valid_from"
        ).fetchall()
    assert len(chain) == 1 + sum(isinstance(o, ProductView) for o in outcomes)
    for (_, end), (start, _) in itertools.pairwise(chain):
        assert end == start
    assert chain[-1][1] is None
