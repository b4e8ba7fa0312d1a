"""Fixtures on real PostgreSQL.

The server is the one in BOSSA_TEST_DATABASE_URL when set, otherwise an embedded one
these fixtures start (one per xdist worker, fsync off). The schema is migrated once into
a template database; each test gets `CREATE DATABASE ... TEMPLATE` of it, which takes
milliseconds, instead of migrating again.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Generator, Iterator

import hypothesis
import psycopg
import pytest
import structlog
from psycopg import sql

from bossa import logs
from bossa.db import Pool, open_pool
from bossa.db.migrations import migrate
from bossa.journal import Journal, JournalSettings
from tests.support import (
    TEST_PASSWORDS,
    drop_database,
    own_postgres,
    scratch_database,
    sweep_orphans,
    with_database,
    xdist_worker,
)

# A test that runs the CLI in-process configures logging for the whole worker (the
# customers CLI tests at level error): each test starts from structlog's defaults, and no
# logger is cached, so a later test's structlog.testing.capture_logs sees its warnings
# whichever test ran before it.
logs.CACHE_LOGGERS = False


@pytest.fixture(autouse=True)
def default_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


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


# Random choices replay: each test seeds `random` (and so the chaos threads, the races'
# jitter) from BOSSA_TEST_SEED, or a fresh seed it prints with its failure. Hypothesis
# prints the blob that replays its failing example (@reproduce_failure).
hypothesis.settings.register_profile("bossa", print_blob=True)
hypothesis.settings.load_profile("bossa")
_SEED = pytest.StashKey[int]()


@pytest.fixture(autouse=True)
def test_seed(request: pytest.FixtureRequest) -> int:
    seed = int(os.environ.get("BOSSA_TEST_SEED") or random.SystemRandom().randrange(2**32))
    random.seed(seed)
    request.node.stash[_SEED] = seed
    request.node.user_properties.append(("seed", seed))
    return seed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _SEED in item.stash:
        report.sections.append(
            ("replay", f"BOSSA_TEST_SEED={item.stash[_SEED]} pytest '{item.nodeid}'")
        )
    return report


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A URL to the test server's maintenance database."""
    external = os.environ.get("BOSSA_TEST_DATABASE_URL")
    if external:
        sweep_orphans(external)  # what a killed run left behind
        yield external
        return
    with own_postgres(durable=False) as server:
        yield server.url("postgres")


@pytest.fixture(scope="session")
def template_name(pg_admin_url: str) -> Iterator[str]:
    """The migrated template, dropped at the session's end, whatever the outcome (a run
    killed outright leaves it to the next run's `sweep_orphans`)."""
    name = f"bossa_tpl_{xdist_worker()}_{os.getpid()}_"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        migrate(with_database(pg_admin_url, name))
        yield name
    finally:
        drop_database(pg_admin_url, name)


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
