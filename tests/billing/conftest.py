"""Billing fixtures: the sample operator's products and customers, and accounts."""

from __future__ import annotations

import psycopg
import pytest

from bossa.customers import load_sample
from bossa.journal import Journal
from bossa.ledger import AccountRequest, open_account


@pytest.fixture
async def accounts(journal: Journal, db_url: str) -> list[str]:
    """A KRW account per sample customer (C-1001..C-1004): A-1001..A-1004."""
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    ids = []
    async with journal.pool.connection() as conn:
        for n in range(1001, 1005):
            request = AccountRequest(account=f"A-{n}", customer=f"C-{n}", currency="KRW")
            await open_account(conn, request, actor="test")
            ids.append(f"A-{n}")
    return ids
