"""customers' public face, as billing and provisioning call it inside their transactions."""

from __future__ import annotations

import psycopg
import pytest

from bossa import customers
from bossa.customers import ContractStatus, load_sample
from bossa.errors import InvalidInput, NotFound
from bossa.journal import Journal


@pytest.fixture
def sample(db_url: str) -> customers.SampleOperator:
    with psycopg.connect(db_url) as conn:
        return load_sample(conn)


async def test_names_are_checked(journal: Journal, sample: customers.SampleOperator) -> None:
    async with journal.pool.connection() as conn:
        assert await customers.product_exists(conn, "ADSL")
        assert not await customers.product_exists(conn, "ADSLX")
        assert await customers.customer_exists(conn, "C-1001")
        assert not await customers.customer_exists(conn, "C-9999")


async def test_contracts_and_their_status(
    journal: Journal, sample: customers.SampleOperator
) -> None:
    async with journal.pool.connection() as conn, conn.transaction():
        found = await customers.contracts_of_customer(conn, "C-1001")
        assert [(c.sa_id, c.product_code, c.status) for c in found] == [
            ("SA-5001", "ADSL", ContractStatus.ACTIVE),
            ("SA-5002", "SOIP", ContractStatus.ACTIVE),
        ]
        await customers.set_contract_status(conn, "SA-5001", "suspended", actor="dunning")
        with pytest.raises(NotFound, match="no contract SA-9999"):
            await customers.set_contract_status(conn, "SA-9999", "active", actor="t")
        with pytest.raises(InvalidInput, match="not a contract status"):
            await customers.set_contract_status(conn, "SA-5001", "paused", actor="t")
    async with journal.pool.connection() as conn:
        row = await (
            await conn.execute(
                "select status, status_changed_by from customers.contracts where sa_id = 'SA-5001'"
            )
        ).fetchone()
        assert row == {"status": "suspended", "status_changed_by": "dunning"}
        assert [c.sa_id for c in await customers.contracts_of_customer(conn, "C-9999")] == []


def test_sample_loads_twice_and_lists_its_contracts(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        first = load_sample(conn)
        again = load_sample(conn)
        codes = conn.execute("select code from customers.product_codes order by code").fetchall()
    assert first == again
    assert (first.products, first.customers, first.contracts) == (3, 4, 5)
    assert first.listing[0] == ("SA-5001", "C-1001", "Kim Min-jun", "ADSL", "ADSL broadband 20M")
    assert [c for (c,) in codes] == ["ADSL", "SOIP", "WIBRO"]
