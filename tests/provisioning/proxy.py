"""A TCP relay that counts the connections a division receives.

It sits between bossa and a real server of the test's own: every connection bossa opens
is counted (with its time), then relayed to the server; while the server is stopped the
relay's own connection to it is refused and it closes bossa's at once, which bossa sees
as the server closing the connection (an unreachable division). A test can so count the
calls a daemon made at a division that was down: the server's own logs cannot, as it
was not running. Nothing is answered on the server's behalf.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tests.support import free_port

__all__ = ["CountingRelay", "counting_relay"]


@dataclass
class CountingRelay:
    port: int
    target_port: int
    #: monotonic time of every connection accepted, and whether it reached the server
    connections: list[tuple[float, bool]] = field(default_factory=list)

    def count(self, *, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(1 for at, _ in self.connections if since <= at <= until)

    def refused(self, *, since: float = 0.0, until: float = float("inf")) -> int:
        """Connections in the window that found the server stopped."""
        return sum(1 for at, ok in self.connections if since <= at <= until and not ok)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError):
        writer.close()


@contextlib.asynccontextmanager
async def counting_relay(target_port: int) -> AsyncIterator[CountingRelay]:
    relay = CountingRelay(free_port(), target_port)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        at = time.monotonic()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            relay.connections.append((at, False))
            writer.close()
            return
        relay.connections.append((at, True))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for each in (writer, up_writer):
                with contextlib.suppress(ConnectionError, OSError):
                    each.close()

    def spawn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(handle(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(spawn, "127.0.0.1", relay.port)
    try:
        yield relay
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)
