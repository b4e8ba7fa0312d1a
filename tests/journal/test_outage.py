"""`Outage`, the database's absence as a daemon's loop sees it (the rating inbox, the
sync listener and pipeline): waited out with backoff while the database last answered
within the bound, then `DatabaseLost` naming the daemon and the setting. The clock is
the test's own (seconds passed in), not a mock of the database: the processes facing a
real outage are tests/sync/test_database_outage.py."""

from __future__ import annotations

import psycopg
import psycopg_pool
import pytest

from bossa.journal import DatabaseLost, Outage, metrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_waits_with_backoff_then_gives_up_past_the_bound() -> None:
    clock = Clock()
    outage = Outage("rating inbox", 10.0, clock=clock)
    error = psycopg.OperationalError("connection refused")
    clock.now += 1
    waits = [outage.failed(error)]
    clock.now += 4
    waits.append(outage.failed(error))
    clock.now += 4
    waits.append(outage.failed(error))
    assert waits == [0.2, 0.4, 0.8]
    clock.now += 1.5  # 10.5 s since it last answered
    with pytest.raises(DatabaseLost, match=r"rating inbox: the database has not answered for 10 s"):
        outage.failed(error)


def test_an_answer_starts_the_count_again() -> None:
    clock = Clock()
    outage = Outage("sync listener", 10.0, clock=clock)
    error = psycopg.OperationalError("server closed the connection")
    clock.now += 9
    assert outage.failed(error) == 0.2
    outage.answered()
    clock.now += 9
    assert outage.failed(error) == 0.2  # backoff reset too
    clock.now += 2
    with pytest.raises(DatabaseLost, match="BOSSA_JOURNAL_DATABASE_OUTAGE_S is 10"):
        outage.failed(error)


def test_a_closed_pool_gives_up_at_once() -> None:
    outage = Outage("sync pipeline", 300.0, clock=Clock())
    with pytest.raises(DatabaseLost, match="supervisor"):
        outage.failed(psycopg_pool.PoolClosed("the pool is closed"))


def test_the_outage_shows_in_the_metrics() -> None:
    clock = Clock()
    outage = Outage("sync listener of lane m", 10.0, clock=clock)
    unreachable = metrics.DATABASE_UNREACHABLE.labels("sync listener of lane m")
    down = metrics.DATABASE_DOWN.labels("sync listener of lane m")
    before = unreachable._value.get()
    outage.failed(psycopg.OperationalError("connection refused"))
    outage.failed(psycopg.OperationalError("connection refused"))
    assert unreachable._value.get() == before + 2
    assert down._value.get() == 1
    outage.answered()
    assert down._value.get() == 0
