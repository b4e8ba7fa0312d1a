"""The named queries of billing, loaded once."""

from bossa.sql import load_queries

__all__ = ["QUERIES"]

QUERIES = load_queries("bossa.billing", "sql/queries.sql")
