"""Fixtures on real PostgreSQL.

The server is the one in BOSSA_TEST_DATABASE_URL when set, otherwise an embedded one
these fixtures start (one per xdist worker, fsync off). The schema is migrated once into
a template database; each test gets `CREATE DATABASE ... TEMPLATE` of it, which takes
milliseconds, instead of migrating again.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import sql

from bossa.db import Pool, open_pool
from bossa.db.migrations import migrate
from bossa.journal import Journal, JournalSettings
from tests.support import (
    TEST_PASSWORDS,
    own_postgres,
    scratch_database,
    with_database,
    xdist_worker,
)

# Secrets must never reach an output: every test's captured stdout, stderr and log (the
# in-process API's and CLI's among them) and its failure text are searched for the test
# passwords, and the run fails if one is found, whatever the test itself asserted.
_LEAKS: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    texts = [report.longreprtext, *(content for _, content in report.sections)]
    if any(secret in text for secret in TEST_PASSWORDS for text in texts):
        _LEAKS.append(f"{report.nodeid} ({report.when})")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _LEAKS:
        terminalreporter.section("secrets in test output", red=True)
        for where in _LEAKS:
            terminalreporter.line(f"a test password appeared in the output of {where}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _LEAKS:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A URL to the test server's maintenance database."""
    external = os.environ.get("BOSSA_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with own_postgres(durable=False) as server:
        yield server.url("postgres")


@pytest.fixture(scope="session")
def template_name(pg_admin_url: str) -> str:
    name = f"bossa_tpl_{xdist_worker()}_{os.getpid()}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    migrate(with_database(pg_admin_url, name))
    return name


@pytest.fixture
def db_url(pg_admin_url: str, template_name: str) -> Iterator[str]:
    """A migrated database of the test's own."""
    with scratch_database(pg_admin_url, template=template_name) as url:
        yield url


@pytest.fixture
def empty_db_url(pg_admin_url: str) -> Iterator[str]:
    """An empty database of the test's own (for migration tests)."""
    with scratch_database(pg_admin_url) as url:
        yield url


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[Pool]:
    async with open_pool(db_url, min_size=1, max_size=8) as opened:
        yield opened


@pytest.fixture
def journal_settings() -> JournalSettings:
    return JournalSettings(
        backoff_base_ms=10,
        backoff_max_ms=50,
        max_attempts=3,
        lease_ms=2_000,
        poll_interval_s=0.5,
        reap_interval_s=0.1,
    )


@pytest.fixture
async def journal(pool: Pool, journal_settings: JournalSettings) -> Journal:
    return Journal(pool, journal_settings, actor="test")
