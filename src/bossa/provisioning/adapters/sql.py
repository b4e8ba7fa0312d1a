"""SQL divisions (P3: direct SQL on the division's database) through SQLAlchemy Core.

Once-only effect: the entry id goes into `bossa_applied_commands` in the same target
transaction as the command, so a repeat hits the primary key and is skipped.

The division's password never goes to a server that asks for it in clear text: on
PostgreSQL libpq is told `require_auth=!password` (so a server asking for
AuthenticationCleartextPassword is refused before anything is sent), and on MySQL and
MariaDB PyMySQL's `mysql_clear_password` and `dialog` plugins (the two that send the
password as it is) are replaced by ones that refuse.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import defaultdict
from typing import Any

import psycopg
import psycopg.pq
import pymysql.err  # type: ignore[import-untyped]
from sqlalchemy import Connection, Engine, create_engine, make_url, text
from sqlalchemy import exc as sa_exc

from bossa.provisioning.adapters.base import Command, DeliveryError, Division, first_line

__all__ = ["MARKER_TABLE", "PG_REQUIRE_AUTH", "SqlAdapter"]

#: libpq's authentication methods bossa refuses: `password` is the cleartext one (the
#: server would receive the division's password as it is). Needs libpq 16 or later.
PG_REQUIRE_AUTH = "!password"
_LIBPQ_REQUIRE_AUTH = 160000
#: The SQLAlchemy drivers of the schemes a SQL division's URL may name.
_DRIVERS = {"postgresql": "postgresql+psycopg"}

MARKER_TABLE = "bossa_applied_commands"

# The marker table's name is written out (MARKER_TABLE): no statement is built from text.
_CREATE_MARKER = text(
    "CREATE TABLE IF NOT EXISTS bossa_applied_commands ("
    " entry_id BIGINT NOT NULL PRIMARY KEY,"
    " division VARCHAR(64) NOT NULL,"
    " applied_at TIMESTAMP NOT NULL)"
)
_INSERT_MARKER = text(
    "INSERT INTO bossa_applied_commands (entry_id, division, applied_at)"
    " VALUES (:entry_id, :division, CURRENT_TIMESTAMP)"
)
# PostgreSQL: a batch's markers in one statement, the ids as one array parameter. (An
# executemany costs psycopg a round of parameter handling per row; PyMySQL already
# folds an executemany of INSERT ... VALUES into one multi-row statement.)
_INSERT_MARKERS_PG = text(
    "INSERT INTO bossa_applied_commands (entry_id, division, applied_at)"
    " SELECT unnest(CAST(:entry_ids AS BIGINT[])), :division, CURRENT_TIMESTAMP"
)
# Duplicate key: PostgreSQL SQLSTATE, MySQL/MariaDB error number.
_DUPLICATE_CODES = {"23505", "1062"}
# MySQL/MariaDB errors that say the server cannot take any call now rather than "this
# command is refused": client errors (can't connect 2002/2003, unknown host 2005, gone
# away 2006, lost connection 2013/2055), too many connections (1040, 1203), shutting
# down (1053), read-only (1290 --read-only, 1836 read-only mode), and a statement cut
# by max_execution_time (3024), like a timeout.
_MYSQL_UNREACHABLE = {
    "2002", "2003", "2005", "2006", "2013", "2055", "1040", "1203", "1053", "1290", "1836",
    "3024",
}  # fmt: skip
# PostgreSQL SQLSTATEs of the same kind: connection exceptions (class 08), insufficient
# resources (class 53: too many connections, out of memory, disk full), the server
# shutting down or starting (57P01-57P03), a statement cut by statement_timeout (57014,
# the division's call timeout), and a read-only server (25006: a standby after a
# failover, not the primary the division names).
_PG_UNREACHABLE_CLASSES = ("08", "53")
_PG_UNREACHABLE = {"57P01", "57P02", "57P03", "57014", "25006"}
_PROBE = text("SELECT 1")
_COMPILED_CACHE = 1024
#: Connections a PostgreSQL division's batches hold at once on the event loop (as the
#: thread path's pool: pool_size 8 + max_overflow 8), and how many are kept idle.
_ASYNC_MAX = 16
_ASYNC_IDLE = 8


class SqlAdapter:
    """Delivers SQL text with `:name` binds; values are always bound, never spliced."""

    def __init__(self, division: Division) -> None:
        if not division.server_url:
            raise ValueError(f"division {division.name} has no SERVER_URL")
        url = make_url(division.server_url)
        url = url.set(drivername=_DRIVERS.get(url.drivername, url.drivername))
        username = division.credentials.get("username")
        if username is not None:
            url = url.set(username=username)
        password = division.credentials.get("password")
        if password is not None:
            url = url.set(password=password)
        self.division = division
        self._postgres = url.get_backend_name() == "postgresql"
        if self._postgres and psycopg.pq.version() < _LIBPQ_REQUIRE_AUTH:
            raise ValueError(
                f"libpq {psycopg.pq.version()} cannot refuse cleartext password "
                "authentication (require_auth needs 16 or later): upgrade psycopg[binary]"
            )
        # No pre-ping (a round trip per command): a connection lost to a restart fails its
        # command as unreachable, SQLAlchemy discards it, and the retry gets a fresh one.
        self._engine: Engine = create_engine(
            url,
            pool_size=8,
            max_overflow=8,
            pool_timeout=division.timeout_s,
            connect_args=_connect_args(url.get_backend_name(), division.timeout_s),
        )
        self._marker_ready = False
        self._marker_lock = threading.Lock()
        #: Templates as the driver's SQL (plan versions never change; bounded all the same).
        self._compiled: dict[str, str] = {}
        # PostgreSQL batches run on the caller's event loop (adeliver_many): libpq's
        # arguments as SQLAlchemy would pass them (its adapters map included, so values
        # are dumped the same way), a few idle connections of that loop kept.
        self._pg_args: tuple[str, dict[str, Any]] = ("", {})
        if self._postgres:
            cargs, ckwargs = self._engine.dialect.create_connect_args(url)
            ckwargs.update(_connect_args("postgresql", division.timeout_s))
            self._pg_args = (str(cargs[0]) if cargs else "", dict(ckwargs))
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._aslots = asyncio.Semaphore(_ASYNC_MAX)
        self._aidle: list[psycopg.AsyncConnection[Any]] = []
        #: Templates as psycopg's SQL with the bind names each needs.
        self._pg_compiled: dict[str, tuple[str, frozenset[str]]] = {}
        self._pg_marker = str(_INSERT_MARKER.compile(dialect=self._engine.dialect))
        self._pg_markers = str(_INSERT_MARKERS_PG.compile(dialect=self._engine.dialect))

    def deliver(self, command: Command) -> None:
        try:
            conn = self._engine.connect()
        except sa_exc.TimeoutError as exc:
            # Every pooled connection is busy for longer than the call timeout: the
            # division cannot take this call now, which says nothing of the command.
            raise DeliveryError("POOL_BUSY", first_line(exc), unreachable=True) from exc
        except (sa_exc.DBAPIError, OSError) as exc:
            raise DeliveryError("CONNECT", first_line(exc), unreachable=True) from exc
        with conn:
            try:
                self._ensure_marker(conn)
                with conn.begin():
                    self._mark(conn, command)
                    conn.execute(text(command.template), command.bind_data)
            except _AlreadyApplied:
                return  # the at-least-once repeat of an applied entry is a no-op
            except sa_exc.DBAPIError as exc:
                raise _delivery_error(exc) from exc
            except sa_exc.StatementError as exc:  # a bind the template needs is missing
                raise DeliveryError("BIND", first_line(exc)) from exc

    def deliver_many(self, commands: list[Command]) -> dict[int, DeliveryError | None]:
        """A backup daemon's batch in ONE target transaction (one commit, one WAL flush):
        first all at once (markers and each template in executemany); if the server
        refuses anything, again with a savepoint per command, so a refused one fails alone."""
        try:
            conn = self._engine.connect()
        except sa_exc.TimeoutError as exc:
            busy = DeliveryError("POOL_BUSY", first_line(exc), unreachable=True)
            return dict.fromkeys((c.entry_id for c in commands), busy)
        except (sa_exc.DBAPIError, OSError) as exc:
            down = DeliveryError("CONNECT", first_line(exc), unreachable=True)
            return dict.fromkeys((c.entry_id for c in commands), down)
        results: dict[int, DeliveryError | None] = {}
        with conn:
            try:
                self._ensure_marker(conn)
                with conn.begin():
                    self._apply_all(conn, commands)
                return dict.fromkeys((c.entry_id for c in commands), None)
            except sa_exc.DBAPIError as exc:
                if _delivery_error(exc).unreachable or conn.invalidated:
                    return dict.fromkeys((c.entry_id for c in commands), _delivery_error(exc))
                # One command (or a twin's marker) was refused and the whole try rolled
                # back: redo the batch a savepoint per command, so only that one fails.
            except sa_exc.StatementError:
                pass  # a missing bind: found and reported per command below
            try:
                with conn.begin():
                    for command in commands:
                        results[command.entry_id] = self._apply_in_savepoint(conn, command)
            except sa_exc.DBAPIError as exc:  # the connection or the commit failed: none applied
                failure = _delivery_error(exc)
                return dict.fromkeys((c.entry_id for c in commands), failure)
        return results

    async def adeliver_many(self, commands: list[Command]) -> dict[int, DeliveryError | None]:
        """deliver_many on the caller's event loop, with the same outcome. PostgreSQL:
        psycopg's async connection, the batch's statements pipelined, no thread (in a
        thread, the libpq wait after each row of an executemany handed the GIL to the
        event loop and back: a batch's wall time was ten times its CPU). Other
        databases: deliver_many in a thread."""
        if not self._postgres:
            return await asyncio.to_thread(self.deliver_many, commands)
        try:
            conn = await self._acquire()
        except DeliveryError as exc:
            return dict.fromkeys((c.entry_id for c in commands), exc)
        reusable = False
        try:
            results = await self._adeliver(conn, commands)
            reusable = True
        finally:
            self._release(conn, reusable=reusable)
        return results

    async def _adeliver(
        self, conn: psycopg.AsyncConnection[Any], commands: list[Command]
    ) -> dict[int, DeliveryError | None]:
        ids = [c.entry_id for c in commands]
        try:
            await self._aensure_marker(conn)
            # A command missing a bind goes straight to the savepoint path (BIND there).
            if all(self._pg_sql(c.template)[1] <= c.bind_data.keys() for c in commands):
                await self._aapply_all(conn, commands)
                return dict.fromkeys(ids, None)
        except psycopg.Error as exc:
            failure = _pg_delivery_error(exc, conn)
            if failure.unreachable:
                return dict.fromkeys(ids, failure)
            # Refused (or a twin's marker exists) and all rolled back: a savepoint each.
        results: dict[int, DeliveryError | None] = {}
        try:
            async with conn.transaction():
                for command in commands:
                    results[command.entry_id] = await self._aapply_in_savepoint(conn, command)
        except psycopg.Error as exc:  # the connection or the commit failed: none applied
            return dict.fromkeys(ids, _pg_delivery_error(exc, conn))
        return results

    async def _aapply_all(
        self, conn: psycopg.AsyncConnection[Any], commands: list[Command]
    ) -> None:
        """_apply_all's fast path on psycopg: BEGIN, the markers, each template's
        executemany and COMMIT in one pipeline."""
        by_template: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for command in commands:
            by_template[command.template].append(command.bind_data)
        async with conn.pipeline(), conn.transaction():
            cursor = conn.cursor()
            await cursor.execute(
                self._pg_markers,
                {"entry_ids": [c.entry_id for c in commands], "division": self.division.name[:64]},
            )
            for template, binds in by_template.items():
                await cursor.executemany(self._pg_sql(template)[0], binds)

    async def _aapply_in_savepoint(
        self, conn: psycopg.AsyncConnection[Any], command: Command
    ) -> DeliveryError | None:
        sql, names = self._pg_sql(command.template)
        if missing := sorted(names - command.bind_data.keys()):
            return DeliveryError("BIND", f"A value is required for bind parameter {missing[0]!r}")
        params = {"entry_id": command.entry_id, "division": self.division.name[:64]}
        try:
            async with conn.transaction():  # a savepoint, rolled back on any error
                try:
                    await conn.execute(self._pg_marker, params)
                except psycopg.errors.UniqueViolation as exc:
                    raise _AlreadyApplied from exc
                await conn.execute(sql, command.bind_data)
        except _AlreadyApplied:
            return None
        except psycopg.Error as exc:
            failure = _pg_delivery_error(exc, conn)
            if failure.unreachable:
                raise  # the whole batch fails; nothing is committed
            return failure
        return None

    def _pg_sql(self, template: str) -> tuple[str, frozenset[str]]:
        found = self._pg_compiled.get(template)
        if found is None:
            if len(self._pg_compiled) >= _COMPILED_CACHE:
                self._pg_compiled.clear()
            compiled = text(template).compile(dialect=self._engine.dialect)
            found = (str(compiled), frozenset(compiled.binds))
            self._pg_compiled[template] = found
        return found

    async def _aensure_marker(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self._marker_ready:
            return
        try:
            async with conn.transaction():
                await conn.execute(str(_CREATE_MARKER))
        except psycopg.errors.UniqueViolation:
            pass  # another process created it at the same moment
        self._marker_ready = True

    async def _acquire(self) -> psycopg.AsyncConnection[Any]:
        loop = asyncio.get_running_loop()
        if loop is not self._aloop:  # connections (and waiters) belong to one loop
            self._drop_idle()
            self._aloop = loop
            self._aslots = asyncio.Semaphore(_ASYNC_MAX)
        slots = self._aslots
        try:
            await asyncio.wait_for(slots.acquire(), self.division.timeout_s)
        except TimeoutError as exc:
            # As the thread path's pool timeout: the division cannot take this call now.
            raise DeliveryError(
                "POOL_BUSY",
                f"all {_ASYNC_MAX} connections busy for {self.division.timeout_s:g} s",
                unreachable=True,
            ) from exc
        while self._aidle:
            conn = self._aidle.pop()
            if not conn.closed and not conn.broken:
                return conn
        conninfo, kwargs = self._pg_args
        try:
            return await psycopg.AsyncConnection.connect(conninfo, autocommit=True, **kwargs)
        except BaseException as exc:
            slots.release()
            if isinstance(exc, psycopg.Error | OSError):
                raise DeliveryError("CONNECT", first_line(exc), unreachable=True) from exc
            raise

    def _release(self, conn: psycopg.AsyncConnection[Any], *, reusable: bool) -> None:
        if (
            reusable
            and not conn.broken
            and not conn.closed
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            and len(self._aidle) < _ASYNC_IDLE
        ):
            self._aidle.append(conn)
        else:
            if conn.broken:
                # A restart broke every connection from before it (as SQLAlchemy drops
                # its pool): the next batch connects anew instead of failing on each.
                self._drop_idle()
            # Cancelled or broken mid-batch: closing it rolls back whatever it held.
            conn.pgconn.finish()
        self._aslots.release()

    def _drop_idle(self) -> None:
        idle, self._aidle = self._aidle, []
        for conn in idle:
            conn.pgconn.finish()  # what AsyncConnection.close does, without awaiting

    def _apply_all(self, conn: Connection, commands: list[Command]) -> None:
        """The fast path: markers in one executemany, then each distinct template once
        with executemany over its commands (a batch has one command per contract, so
        their order within the batch does not matter). Any refusal raises, a marker
        that exists already too (a repeat after a crash): the savepoint path sorts it out."""
        division = self.division.name[:64]
        if self._postgres:
            conn.execute(
                _INSERT_MARKERS_PG,
                {"entry_ids": [c.entry_id for c in commands], "division": division},
            )
        else:
            conn.execute(
                _INSERT_MARKER, [{"entry_id": c.entry_id, "division": division} for c in commands]
            )
        by_template: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for command in commands:
            by_template[command.template].append(command.bind_data)
        for template, binds in by_template.items():
            # The template compiled once (as conn.execute(text(template)) compiles it:
            # the same driver SQL, values still bound) and the batch handed to the
            # driver's executemany as it is: SQLAlchemy's per-row parameter handling
            # cost a third of the adapter's time. A missing bind fails here in the
            # driver instead; the savepoint path then names it (BIND), as before.
            conn.exec_driver_sql(self._driver_sql(conn, template), binds)

    def _driver_sql(self, conn: Connection, template: str) -> str:
        compiled = self._compiled.get(template)
        if compiled is None:
            if len(self._compiled) >= _COMPILED_CACHE:
                self._compiled.clear()
            compiled = str(text(template).compile(dialect=conn.dialect))
            self._compiled[template] = compiled
        return compiled

    def _apply_in_savepoint(self, conn: Connection, command: Command) -> DeliveryError | None:
        savepoint = conn.begin_nested()
        try:
            self._mark(conn, command)
            conn.execute(text(command.template), command.bind_data)
        except _AlreadyApplied:
            savepoint.rollback()
            return None
        except sa_exc.DBAPIError as exc:
            failure = _delivery_error(exc)
            if failure.unreachable:
                raise  # the whole batch fails; nothing is committed
            savepoint.rollback()
            return failure
        except sa_exc.StatementError as exc:
            savepoint.rollback()
            return DeliveryError("BIND", first_line(exc))
        savepoint.commit()
        return None

    def probe(self) -> None:
        """SELECT 1 on a pooled connection. A pooled connection from before a restart
        fails once (SQLAlchemy then drops the pool's old connections): the probe asks
        again on a new one rather than report a server that is back as down."""
        for attempt in (1, 2):
            try:
                with self._engine.connect() as conn:
                    conn.execute(_PROBE)
            except sa_exc.TimeoutError as exc:
                raise DeliveryError("POOL_BUSY", first_line(exc), unreachable=True) from exc
            except sa_exc.DBAPIError as exc:
                if exc.connection_invalidated and attempt == 1:
                    continue
                error = _delivery_error(exc)
                if error.unreachable or conn_failed(exc):
                    raise DeliveryError(error.code, error.message, unreachable=True) from exc
                return  # the server answered, with an error: it is there
            except OSError as exc:
                raise DeliveryError("CONNECT", first_line(exc), unreachable=True) from exc
            else:
                return

    def close(self) -> None:
        self._drop_idle()
        self._engine.dispose()

    def _ensure_marker(self, conn: Connection) -> None:
        # Own transaction: MySQL's DDL commits implicitly, so keep it out of the command's.
        with self._marker_lock:
            if self._marker_ready:
                return
            try:
                with conn.begin():
                    conn.execute(_CREATE_MARKER)
            except sa_exc.IntegrityError:
                pass  # PostgreSQL: another process created it at the same moment
            self._marker_ready = True

    def _mark(self, conn: Connection, command: Command) -> None:
        """Insert the marker row first: a repeat stops here (and waits for an in-flight twin)."""
        params = {"entry_id": command.entry_id, "division": self.division.name[:64]}
        try:
            conn.execute(_INSERT_MARKER, params)
        except sa_exc.IntegrityError as exc:
            if _dbapi_code(exc) in _DUPLICATE_CODES:
                raise _AlreadyApplied from exc
            raise


def conn_failed(exc: sa_exc.DBAPIError) -> bool:
    """Did the error come before the server answered anything (connecting, logging in)?
    A probe that cannot log in finds the division as unusable as one that is down."""
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)


class _AlreadyApplied(Exception):
    """Leaves the transaction (rolling it back) when the marker row exists already."""


def _connect_args(backend: str, timeout_s: float) -> dict[str, Any]:
    seconds = max(1, math.ceil(timeout_s))
    if backend == "postgresql":
        # libpq's connect_timeout; statement_timeout bounds a hung statement too; and no
        # cleartext password (connect_args win over the URL's query, which may not name
        # require_auth anyway: models.URL_QUERY).
        return {
            "connect_timeout": max(2, seconds),
            "options": f"-c statement_timeout={int(timeout_s * 1000)}",
            "require_auth": PG_REQUIRE_AUTH,
        }
    if backend in {"mysql", "mariadb"}:
        return {
            "connect_timeout": seconds,
            "read_timeout": seconds,
            "write_timeout": seconds,
            "auth_plugin_map": dict(_REFUSED_MYSQL_PLUGINS),
        }
    return {}


class _RefusedPlugin:
    """A MySQL authentication plugin that would send the password as it is: refused
    before anything is written to the server."""

    name = "cleartext"

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def authenticate(self, packet: Any) -> Any:
        raise pymysql.err.OperationalError(
            2059,  # CR_AUTH_PLUGIN_CANNOT_LOAD
            f"the server asked for the {self.name} authentication plugin, which would "
            "send the password in clear text: refused",
        )

    def prompt(self, echo: bool, prompt: bytes) -> bytes:
        return self.authenticate(None)  # type: ignore[no-any-return]


class _RefusedClearPassword(_RefusedPlugin):
    name = "mysql_clear_password"


class _RefusedDialog(_RefusedPlugin):
    name = "dialog"


#: PyMySQL's plugins that send the password in clear text, each replaced by a refusal.
_REFUSED_MYSQL_PLUGINS: dict[str, type[_RefusedPlugin]] = {
    "mysql_clear_password": _RefusedClearPassword,
    "dialog": _RefusedDialog,
}


def _dbapi_code(exc: sa_exc.DBAPIError) -> str | None:
    """MySQL's error number (1062) before any SQLSTATE; PostgreSQL's SQLSTATE (23505)."""
    orig = exc.orig
    args: tuple[Any, ...] = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return str(args[0])
    for attr in ("sqlstate", "pgcode"):
        code = getattr(orig, attr, None)
        if code:
            return str(code)
    return None


def _unreachable_code(code: str | None) -> bool:
    if code is None:
        return False
    return (
        code in _MYSQL_UNREACHABLE
        or code in _PG_UNREACHABLE
        or (len(code) == 5 and code.startswith(_PG_UNREACHABLE_CLASSES))
    )


def _pg_delivery_error(exc: psycopg.Error, conn: psycopg.AsyncConnection[Any]) -> DeliveryError:
    """_delivery_error for psycopg's own errors (the event loop's path): the same rule."""
    return _classified(
        exc.sqlstate,
        first_line(exc),
        broken=conn.broken or conn.closed,
        no_answer=isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError),
        name=type(exc).__name__,
    )


def _delivery_error(exc: sa_exc.DBAPIError) -> DeliveryError:
    """A driver error as the buffer records it: unreachable (not counted, the division
    is down) when the connection broke or the server cannot take any call now (its code
    is then kept: 57P01, 53300, 2013...); otherwise the server's refusal of this command,
    its SQLSTATE or error number as ERRCODE."""
    return _classified(
        _dbapi_code(exc),
        first_line(exc.orig if exc.orig is not None else exc),
        broken=exc.connection_invalidated,
        no_answer=isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError),
        name=type(exc.orig).__name__,
    )


def _classified(
    code: str | None, message: str, *, broken: bool, no_answer: bool, name: str
) -> DeliveryError:
    """The rule of both paths: a broken connection, a code of a server that cannot take
    any call now, or a driver error with no code from the server is unreachable; any
    other error is the server's refusal of this command (ERRCODE its code, else `name`)."""
    if broken:
        return DeliveryError(code or "CONNECT", message, unreachable=True)
    if code is not None and _unreachable_code(code):
        return DeliveryError(code, message, unreachable=True)
    if code is None and no_answer:
        return DeliveryError("CONNECT", message, unreachable=True)
    return DeliveryError(code or name, message)
