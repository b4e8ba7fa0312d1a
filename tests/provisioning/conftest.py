"""Session-wide real divisions: one of each server per test session (per xdist worker).

A fault test that stops a server starts it again before it ends (see `restarted`).

Every division password in tests/provisioning is `PASSWORD` (one of `TEST_PASSWORDS`):
tests/conftest.py fails the run when it appears in any test's output, log or failure
text, and tests/provisioning/test_secrets.py looks for it in each answer and error.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.provisioning import servers
from tests.support import TEST_PASSWORDS

__all__ = ["PASSWORD", "TEST_PASSWORDS"]

#: The one password every division in these tests is given.
PASSWORD = TEST_PASSWORDS[0]


@pytest.fixture(scope="session")
def soap_server() -> Iterator[servers.SoapServer]:
    """spyne division; .url is the WSDL URL, .applied() the calls it applied, in order."""
    with servers.soap_server() as server:
        yield server


@pytest.fixture(scope="session")
def rest_server() -> Iterator[servers.RestServer]:
    """HTTP division; .url is the base URL, .applied() the requests it applied, in order."""
    with servers.rest_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[servers.ServerProcess]:
    """redis-server of our own; .url is redis://127.0.0.1:N/0."""
    with servers.redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[servers.MariaDbServer]:
    """mariadbd of our own; .url is mysql+pymysql://root@127.0.0.1:N/test."""
    with servers.mariadb_server() as server:
        yield server


@pytest.fixture(scope="session")
def pg_target() -> Iterator[servers.PostgresTarget]:
    """A PostgreSQL division of our own (embedded, stoppable)."""
    with servers.postgres_target() as target:
        yield target


@pytest.fixture(scope="session")
def pg_target_url(pg_target: servers.PostgresTarget) -> str:
    """postgresql+psycopg://postgres@127.0.0.1:N/bossa"""
    return pg_target.url
