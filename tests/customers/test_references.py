"""A contract never refers to a customer, product or billing account that does not exist,
whoever writes it: the service, bulk import or SQL by hand. Foreign keys checked each row
once held this for customers and products (and nothing held it for accounts); since
customers/0005 one anti-join per statement holds it for all three, and what contracts
refer to can be neither deleted, truncated nor re-keyed, so a reference checked once stays
good without a lock."""

from __future__ import annotations

from datetime import date

import psycopg
import pytest
from psycopg import errors as pg

from bossa.customers import store
from bossa.db import Pool
from bossa.db.errors import user_errors
from bossa.errors import InvalidInput

UPDATE = "update customers.contracts set"
INSERT = (
    "insert into customers.contracts (sa_id, customer_id, account_id, product_code)"
    " values (%s, %s, %s, %s)"
)


@pytest.fixture
def db(db_url: str) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("insert into customers.products (code, name) values ('BASE', 'Base')")
        conn.execute("insert into customers.customers (id, name) values ('C-1', 'A'), ('C-2', 'B')")
        conn.execute(
            "insert into ledger.accounts (id, customer_id, currency)"
            " values ('A-1', 'C-1', 'KRW'), ('A-2', 'C-2', 'KRW')"
        )
        conn.execute(INSERT, ("SA-1", "C-1", "A-1", "BASE"))
    return db_url


def contracts(conn: psycopg.Connection[tuple[object, ...]]) -> list[object]:
    return [r[0] for r in conn.execute("select sa_id from customers.contracts order by 1")]


@pytest.mark.parametrize(
    ("row", "constraint"),
    [
        (("SA-2", "C-9", "A-1", "BASE"), "contracts_customer_id_fkey"),
        (("SA-2", "C-1", "A-1", "NOPE"), "contracts_product_code_fkey"),
        (("SA-2", "C-1", "A-9", "BASE"), "contracts_account_id_fkey"),
    ],
)
def test_sql_by_hand_cannot_insert_a_reference_to_nothing(
    db: str, row: tuple[str, ...], constraint: str
) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        with pytest.raises(pg.ForeignKeyViolation) as caught:
            conn.execute(INSERT, row)
        assert caught.value.diag.constraint_name == constraint
        assert contracts(conn) == ["SA-1"]


def test_one_bad_row_fails_the_whole_statement(db: str) -> None:
    rows = [(f"SA-{n}", "C-1", "A-1", "BASE") for n in range(2, 1002)]
    rows[600] = ("SA-602", "C-1", "A-404", "BASE")
    with psycopg.connect(db, autocommit=True) as conn:
        with pytest.raises(pg.ForeignKeyViolation):
            conn.execute(
                "insert into customers.contracts (sa_id, customer_id, account_id, product_code)"
                " select * from unnest(%s::text[], %s::text[], %s::text[], %s::text[])",
                [list(col) for col in zip(*rows, strict=True)],
            )
        assert contracts(conn) == ["SA-1"]


@pytest.mark.parametrize(
    ("change", "constraint"),
    [
        (f"{UPDATE} customer_id = 'C-9' where sa_id = 'SA-1'", "contracts_customer_id_fkey"),
        (f"{UPDATE} product_code = 'NOPE' where sa_id = 'SA-1'", "contracts_product_code_fkey"),
        (f"{UPDATE} account_id = 'A-9' where sa_id = 'SA-1'", "contracts_account_id_fkey"),
    ],
)
def test_an_update_cannot_point_a_contract_at_nothing(
    db: str, change: str, constraint: str
) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        with pytest.raises(pg.ForeignKeyViolation) as caught:
            conn.execute(change)
        assert caught.value.diag.constraint_name == constraint
        # Other updates, and an account left unnamed (contracts from before accounts), pass.
        conn.execute("update customers.contracts set status = 'suspended' where sa_id = 'SA-1'")
        conn.execute("update customers.contracts set account_id = 'A-2' where sa_id = 'SA-1'")
        conn.execute(INSERT, ("SA-3", "C-2", None, "BASE"))


@pytest.mark.parametrize(
    "statement",
    [
        "delete from customers.customers where id = 'C-1'",
        "delete from customers.customers where id = 'C-2'",  # referred to by no contract
        "truncate customers.customers cascade",
        "update customers.customers set id = 'C-1b' where id = 'C-1'",
        "delete from customers.products where code = 'BASE'",
        "truncate customers.products cascade",
        "update customers.products set code = 'BASE2' where code = 'BASE'",
        "delete from ledger.accounts where id = 'A-1'",
        "truncate ledger.accounts cascade",
        "update ledger.accounts set id = 'A-1b' where id = 'A-1'",
        "delete from ledger.currencies where code = 'KRW'",
        "update ledger.currencies set code = 'KRX' where code = 'KRW'",
    ],
)
def test_what_contracts_refer_to_is_never_deleted_nor_rekeyed(db: str, statement: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        with pytest.raises(pg.CheckViolation) as caught:
            conn.execute(statement)
        assert caught.value.diag.constraint_name.endswith("_kept")
        assert contracts(conn) == ["SA-1"]
        # What may change still does: names, statuses.
        conn.execute(
            "update customers.customers set name = 'Z', status = 'closed' where id = 'C-2'"
        )
        conn.execute("update customers.products set status = 'retired' where code = 'BASE'")
        conn.execute("update ledger.accounts set status = 'closed' where id = 'A-2'")


def test_an_account_in_an_unknown_currency_is_refused(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        with pytest.raises(pg.ForeignKeyViolation) as caught:
            conn.execute(
                "insert into ledger.accounts (id, customer_id, currency)"
                " values ('A-3', 'C-1', 'XXX')"
            )
        assert caught.value.diag.constraint_name == "accounts_currency_fkey"
        with pytest.raises(pg.ForeignKeyViolation):
            conn.execute("update ledger.accounts set currency = 'XXX' where id = 'A-1'")


async def test_the_services_own_write_is_held_too(pool: Pool, db: str) -> None:
    """The service checks the account through ledger before it writes; were that check
    skipped, the store's insert is still refused, as a user error (a 4xx, not a 500)."""
    async with pool.connection() as conn:
        with pytest.raises(InvalidInput) as caught, user_errors():
            async with conn.transaction():
                await store.create_contract(
                    conn,
                    "SA-7",
                    customer="C-1",
                    account="A-404",
                    product="BASE",
                    start_date=date(2026, 1, 1),
                    actor="t",
                )
        assert caught.value.field == "contracts_account_id_fkey"
        async with conn.transaction():
            assert await store.create_contract(
                conn,
                "SA-8",
                customer="C-1",
                account="A-1",
                product="BASE",
                start_date=date(2026, 1, 1),
                actor="t",
            )


def test_an_update_checks_only_the_references_it_changed(db: str) -> None:
    """As a foreign key does: a contract that named a missing account before accounts
    were checked at all (written here with triggers off, as an old database may hold it)
    can still change status; pointing it at another missing account cannot."""
    with psycopg.connect(db, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("set local session_replication_role = replica")
            conn.execute(INSERT, ("SA-OLD", "C-1", "A-GONE", "BASE"))
        conn.execute("update customers.contracts set status = 'suspended' where sa_id = 'SA-OLD'")
        with pytest.raises(pg.ForeignKeyViolation):
            conn.execute(f"{UPDATE} account_id = 'A-GONE2' where sa_id = 'SA-OLD'")
        with pytest.raises(pg.ForeignKeyViolation):
            conn.execute(f"{UPDATE} sa_id = 'SA-OLD2' where sa_id = 'SA-OLD'")
        conn.execute(f"{UPDATE} account_id = 'A-1' where sa_id = 'SA-OLD'")
