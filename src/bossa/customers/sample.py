"""A small sample operator for the demo and the docs: the seed's three products, a few
customers and their contracts. Loading it twice changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from bossa.customers import store

__all__ = ["SampleOperator", "load_sample"]

# The seed's examples (KR 10-1512875): ADSL broadband, WiBro wireless, SoIP VoIP.
PRODUCTS = [
    ("ADSL", "ADSL broadband 20M", 2_500_000, "KRW"),
    ("WIBRO", "WiBro wireless data", 1_900_000, "KRW"),
    ("SOIP", "SoIP internet telephony", 900_000, "KRW"),
]
CUSTOMERS = [
    ("C-1001", "Kim Min-jun", "+821012340001"),
    ("C-1002", "Lee Seo-yeon", "+821012340002"),
    ("C-1003", "Park Ji-ho", "+821012340003"),
    ("C-1004", "Choi Ha-eun", "+821012340004"),
]
CONTRACTS = [
    ("SA-5001", "C-1001", "ADSL"),
    ("SA-5002", "C-1001", "SOIP"),
    ("SA-5003", "C-1002", "WIBRO"),
    ("SA-5004", "C-1003", "ADSL"),
    ("SA-5005", "C-1004", "SOIP"),
]


@dataclass(frozen=True)
class SampleOperator:
    products: int
    customers: int
    contracts: int
    #: Every contract: (SA_ID, CUST_ID, customer, product code, product name), for the tour.
    listing: tuple[tuple[str, str, str, str, str], ...] = ()


def load_sample(conn: psycopg.Connection[tuple[object, ...]]) -> SampleOperator:
    with conn.transaction():
        store.add_sample(conn, PRODUCTS, CUSTOMERS, CONTRACTS)
    return SampleOperator(
        len(PRODUCTS), len(CUSTOMERS), len(CONTRACTS), tuple(store.contract_listing(conn))
    )
