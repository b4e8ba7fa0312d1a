"""Upgrading a database that has products with a single monthly fee and contracts without
an account: each fee becomes the product's first monthly price, each contract gets its
customer's account in its product's currency (what bill runs charged it to), and the old
published view still answers."""

from __future__ import annotations

from datetime import date

import psycopg

from bossa.db.migrations import discover, migrate

NEW = {("customers", 3), ("ledger", 3)}


def test_upgrade_keeps_fees_as_prices_and_assigns_accounts(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "create schema bossa; create table bossa.migrations (module text, version integer,"
            " name text, checksum text, applied_at timestamptz not null default now(),"
            " applied_by text not null default current_user, primary key (module, version))"
        )
        for m in discover():
            if (m.module, m.version) in NEW or m.version > 3:
                continue
            conn.execute(m.sql.encode())
            conn.execute(
                "insert into bossa.migrations (module, version, name, checksum)"
                " values (%s, %s, %s, %s)",
                (m.module, m.version, m.name, m.checksum),
            )
        conn.execute(
            """
            insert into customers.products (code, name, monthly_fee, currency) values
                ('ADSL', 'ADSL', 2500000, 'KRW'), ('ROAM', 'Roaming', 999, 'USD');
            insert into customers.customers (id, name) values ('C-1', 'Kim'), ('C-2', 'Lee');
            insert into customers.contracts (sa_id, customer_id, product_code, created_at) values
                ('SA-1', 'C-1', 'ADSL', '2025-03-04 10:00+00'),
                ('SA-2', 'C-1', 'ROAM', '2025-05-06 10:00+00'),
                ('SA-3', 'C-2', 'ADSL', '2025-07-08 10:00+00');
            insert into ledger.accounts (id, customer_id, currency) values
                ('A-1U', 'C-1', 'USD'), ('A-1K', 'C-1', 'KRW');
            """
        )
    applied = {(m.module, m.version) for m in migrate(empty_db_url)}
    assert applied >= NEW
    with psycopg.connect(empty_db_url) as conn:
        terms = conn.execute(
            "select sa_id, account_id, start_date from customers.contract_terms order by sa_id"
        ).fetchall()
        prices = conn.execute(
            "select product_code, kind, period, amount, currency, valid_from, valid_to"
            " from customers.price_versions order by product_code"
        ).fetchall()
        fees = conn.execute(
            "select sa_id, monthly_fee, currency from customers.contract_fees order by sa_id"
        ).fetchall()
        account = conn.execute(
            "select credit_limit, dunning_profile, status from ledger.billing_accounts"
            " where id = 'A-1K'"
        ).fetchone()
    assert terms == [
        ("SA-1", "A-1K", date(2025, 3, 4)),
        ("SA-2", "A-1U", date(2025, 5, 6)),
        ("SA-3", None, date(2025, 7, 8)),  # C-2 has no account: billed nothing before either
    ]
    assert prices == [
        ("ADSL", "recurring", "monthly", 2500000, "KRW", date(1900, 1, 1), None),
        ("ROAM", "recurring", "monthly", 999, "USD", date(1900, 1, 1), None),
    ]
    assert fees == [("SA-1", 2500000, "KRW"), ("SA-2", 999, "USD"), ("SA-3", 2500000, "KRW")]
    assert account == (None, "standard", "active")
