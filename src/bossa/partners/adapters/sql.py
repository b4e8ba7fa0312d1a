"""SQL legacy systems (PostgreSQL) through psycopg: each operation is a statement the
operator configured for the system, run with the call's parameters bound (never spliced),
under a statement timeout; the first row is the answer."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bossa.partners.adapters.base import LegacyError

__all__ = ["SqlSystem"]


class SqlSystem:
    def __init__(self, url: str, statements: dict[str, str], *, timeout_s: float) -> None:
        self._url = url
        self._statements = dict(statements)
        self._timeout_s = timeout_s
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self._conn is None or self._conn.closed:
            ms = int(self._timeout_s * 1000)
            self._conn = await psycopg.AsyncConnection.connect(
                self._url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=max(1, int(self._timeout_s)),
                options=f"-c statement_timeout={ms}",
            )
        return self._conn

    async def call(
        self, operation: str, params: dict[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        statement = self._statements.get(operation)
        if statement is None:
            raise LegacyError("NO_STATEMENT", f"no statement for {operation}", unreachable=False)
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout_s + 1):
                    conn = await self._connection()
                    cursor = await conn.execute(
                        # The operator's configured statement; values are bound, never spliced.
                        statement,
                        {**params, "idempotency_key": idempotency_key},
                    )
                    row = await cursor.fetchone() if cursor.description else None
            except TimeoutError:
                await self._drop()
                raise LegacyError("TIMEOUT", "no answer in time", unreachable=True) from None
            except psycopg.errors.QueryCanceled:
                raise LegacyError("TIMEOUT", "statement timeout", unreachable=True) from None
            except psycopg.OperationalError as exc:
                await self._drop()
                raise LegacyError("CONNECT", type(exc).__name__, unreachable=True) from None
            except psycopg.Error as exc:
                raise LegacyError(
                    exc.sqlstate or "SQL", type(exc).__name__, unreachable=False
                ) from None
        return {} if row is None else {str(k): v for k, v in row.items()}

    async def _drop(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def close(self) -> None:
        await self._drop()
