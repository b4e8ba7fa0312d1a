"""The streamed COPY of rated rows (store.copy_from_writer): the engine writes CSV to a
pipe in a thread while PostgreSQL takes it. Neither side's failure may commit a part of
the rows or leave the other side blocked on the pipe."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from bossa.db import open_pool
from bossa.rating import store

_COPY = "copy copy_probe (n, label) from stdin (format csv)"


async def test_rows_stream_through_the_pipe(db_url: str) -> None:
    async with open_pool(db_url, max_size=1) as pool, pool.connection() as conn:
        await conn.execute("create temp table copy_probe (n integer primary key, label text)")

        def write(path: Path) -> None:
            # Several times a pipe's buffer (64 KiB), so the writer waits for the reader.
            with path.open("w") as f:
                f.writelines(f"{i},row {i}\n" for i in range(200_000))

        await store.copy_from_writer(conn, _COPY, write)
        row = await (await conn.execute("select count(*) as n from copy_probe")).fetchone()
        assert row is not None
        assert row["n"] == 200_000


async def test_a_writer_that_fails_midway_commits_no_row(db_url: str) -> None:
    async with open_pool(db_url, max_size=1) as pool, pool.connection() as conn:
        await conn.execute("create temp table copy_probe (n integer primary key, label text)")

        def write(path: Path) -> None:
            with path.open("w") as f:
                f.writelines(f"{i},row {i}\n" for i in range(50_000))
            raise RuntimeError("the engine failed after writing some rows")

        with pytest.raises(RuntimeError, match="engine failed"):
            async with conn.transaction():
                await store.copy_from_writer(conn, _COPY, write)
        row = await (await conn.execute("select count(*) as n from copy_probe")).fetchone()
        assert row is not None
        assert row["n"] == 0


async def test_a_copy_that_fails_does_not_leave_the_writer_blocked(db_url: str) -> None:
    async with open_pool(db_url, max_size=1) as pool, pool.connection() as conn:
        await conn.execute("create temp table copy_probe (n integer primary key, label text)")
        written: list[int] = []

        def write(path: Path) -> None:
            with path.open("w") as f:
                f.write("1,first\n1,the same key again\n")  # PostgreSQL refuses the copy here
                for i in range(2, 300_000):  # far more than the pipe holds
                    f.write(f"{i},row {i}\n")
                written.append(i)

        with pytest.raises(psycopg.errors.UniqueViolation):
            async with conn.transaction():
                await store.copy_from_writer(conn, _COPY, write)
        # The writer ran to its end (the pipe was drained), and the connection is usable.
        assert written == [299_999]
        row = await (await conn.execute("select count(*) as n from copy_probe")).fetchone()
        assert row is not None
        assert row["n"] == 0
