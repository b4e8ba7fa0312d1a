"""Hostile division servers: a fake PostgreSQL and a fake MySQL that ask the client for
its password in clear text, and record every byte the client sends them.

A division's stored password was stolen this way (issue 11): `server_url` pointed at a
fake PostgreSQL that answered the startup message with AuthenticationCleartextPassword.
Each fake speaks just enough of its protocol to get there; `received` holds what each
connection sent, so a test can assert that the password never arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

__all__ = ["FakeServer", "fake_mysql", "fake_postgres"]

#: PostgreSQL: the requests a client may send before its StartupMessage.
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
#: AuthenticationCleartextPassword: "send me your password as it is".
_AUTH_CLEARTEXT = 3

#: MySQL capability flags the fake offers: protocol 4.1, secure connection, plugin auth,
#: connect with a database; no TLS (so a client cannot hide behind it).
_MYSQL_CAPS = 0x1 | 0x4 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x80000
_READ_S = 1.5


@dataclass
class FakeServer:
    port: int = 0
    #: What each connection sent, in order of arrival (filled as bytes arrive).
    received: list[bytearray] = field(default_factory=list)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    def everything(self) -> bytes:
        return b"".join(bytes(r) for r in self.received)

    async def settled(self) -> None:
        """Wait until every connection so far has been handled to its end."""
        if self.handlers:
            await asyncio.wait(self.handlers, timeout=2 * _READ_S + 1)

    def connection(self) -> bytearray:
        task = asyncio.current_task()
        if task is not None:
            self.handlers.add(task)
            task.add_done_callback(self.handlers.discard)
        got = bytearray()
        self.received.append(got)
        return got


async def _rest(reader: asyncio.StreamReader, got: bytearray) -> None:
    """Whatever the client sends next (until it closes, or a few seconds pass)."""
    with contextlib.suppress(TimeoutError, ConnectionError, asyncio.IncompleteReadError):
        while data := await asyncio.wait_for(reader.read(65536), _READ_S):
            got += data


@contextlib.asynccontextmanager
async def fake_postgres() -> AsyncIterator[FakeServer]:
    """A PostgreSQL that answers SSL and GSS requests with N, then asks for a cleartext
    password (AuthenticationCleartextPassword, code 3) and records the reply."""
    server = FakeServer()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = server.connection()
        try:
            while True:
                head = await reader.readexactly(8)
                length, code = struct.unpack("!II", head)
                got += head + await reader.readexactly(length - 8)
                if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                    writer.write(b"N")
                    await writer.drain()
                    continue
                break  # the StartupMessage
            writer.write(b"R" + struct.pack("!II", 8, _AUTH_CLEARTEXT))
            await writer.drain()
            await _rest(reader, got)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    server.port = int(listener.sockets[0].getsockname()[1])
    try:
        yield server
        await server.settled()
    finally:
        listener.close()


def _packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


@contextlib.asynccontextmanager
async def fake_mysql(plugin: bytes = b"mysql_clear_password") -> AsyncIterator[FakeServer]:
    """A MySQL that greets with mysql_native_password, takes the handshake response, then
    switches to `plugin` (mysql_clear_password: "send me your password as it is") and
    records the reply."""
    server = FakeServer()
    greeting = (
        b"\x0a"
        + b"5.7.99-fake\x00"
        + struct.pack("<I", 7)
        + b"abcdefgh"
        + b"\x00"
        + struct.pack("<H", _MYSQL_CAPS & 0xFFFF)
        + bytes([33])
        + struct.pack("<H", 2)
        + struct.pack("<H", _MYSQL_CAPS >> 16)
        + bytes([21])
        + b"\x00" * 10
        + b"ijklmnopqrst\x00"
        + b"mysql_native_password\x00"
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = server.connection()
        try:
            writer.write(_packet(0, greeting))
            await writer.drain()
            head = await reader.readexactly(4)
            length = int.from_bytes(head[:3], "little")
            got += head + await reader.readexactly(length)  # the handshake response
            writer.write(_packet(head[3] + 1, b"\xfe" + plugin + b"\x00" + b"0123456789\x00"))
            await writer.drain()
            await _rest(reader, got)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    server.port = int(listener.sockets[0].getsockname()[1])
    try:
        yield server
        await server.settled()
    finally:
        listener.close()
