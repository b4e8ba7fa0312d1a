"""Billing's mechanisms tested so that removing one fails a test: settlement applies
the staged items in the order they were taken (B4), across batches and across the two
kinds, whatever order their ids are in."""

from __future__ import annotations

import psycopg

from bossa.billing import bill, settle
from bossa.journal import Journal
from tests.billing.conftest import month, open_run
from tests.billing.test_concurrency import seed


async def test_settlement_applies_staged_items_in_the_order_taken(
    db_url: str, journal: Journal
) -> None:
    """60 deposits whose ids run against their time of receipt, and 10 write-offs
    between them, settled in batches of 7: the ledger postings follow the time each
    item was taken (B4), not the ids nor the kind."""
    seed(db_url, 40)
    run = await open_run(journal.pool, month(1))
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "insert into billing.staged_deposits (run_id, account_id, amount, idempotency_key,"
            " received_at, received_by)"
            " select %(run)s, 'A-' || (1 + i %% 40), 100 + i, 'dep-' || i,"
            "  now() + (61 - i) * interval '2 ms', 'front-office'"
            " from generate_series(1, 60) i",
            {"run": run},
        )
        conn.execute(
            "insert into billing.staged_writeoffs (run_id, account_id, amount, idempotency_key,"
            " received_at, received_by)"
            " select %(run)s, 'A-' || i, 1000, 'wo-' || i,"
            "  now() + (i * 3 + 1) * interval '1 ms', 'front-office'"
            " from generate_series(4, 40, 4) i",
            {"run": run},
        )
    await bill(journal.pool, run)
    assert await settle(journal.pool, run, batch=7) == 70
    with psycopg.connect(db_url) as conn:
        postings = [
            int(r[0])
            for r in conn.execute(
                "select transaction_id from ("
                " select received_at, 'deposit' as kind, id, transaction_id"
                " from billing.staged_deposits"
                " union all select received_at, 'writeoff', id, transaction_id"
                " from billing.staged_writeoffs) s"
                " order by received_at, kind, id"
            ).fetchall()
        ]
    assert len(postings) == 70
    assert postings == sorted(postings)  # posted in the order taken
