"""The provisioning chapter of `bossa demo`: an order completes while Redis is stopped,
and its command reaches Redis, in order, when Redis comes back.

The AAA division is a SQL database in the demo's embedded PostgreSQL; the HDS division
is a Redis server the tour starts on a free port of 127.0.0.1 and stops on purpose.
A division's URL names a host (never a local socket or file), so when the embedded
server listens on its Unix socket only, the tour reaches it through a TCP bridge of its
own on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console

from bossa.db import EmbeddedPostgres
from bossa.provisioning import service
from bossa.provisioning.models import OrderRequest
from bossa.provisioning.sample import AAA_TABLE, load_sample_plans
from bossa.provisioning.settings import ProvisioningSettings
from bossa.runtime import Runtime
from bossa.terminal import table

__all__ = ["chapter"]


class _Redis:
    """A throw-away redis-server of the tour's own."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@contextlib.contextmanager
def _redis() -> Iterator[_Redis]:
    with tempfile.TemporaryDirectory(prefix="bossa-demo-redis-") as folder:
        server = _Redis(Path(folder))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def _aaa_database(server: EmbeddedPostgres, name: str) -> None:
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    with psycopg.connect(server.url(name), autocommit=True) as conn:
        conn.execute(AAA_TABLE)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def _tcp_port(server: EmbeddedPostgres) -> AsyncIterator[int]:
    """A TCP port of 127.0.0.1 that reaches the embedded server: its own, or a bridge to
    its Unix socket for the length of the chapter."""
    if server.port:
        yield server.port
        return
    socket_path = server.socket_dir / ".s.PGSQL.5432"
    open_writers: set[asyncio.StreamWriter] = set()

    async def bridge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_unix_connection(socket_path)
        except OSError:
            writer.close()
            return
        pair = {writer, upstream_writer}
        open_writers.update(pair)
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            open_writers.difference_update(pair)

    listener = await asyncio.start_server(bridge, "127.0.0.1", 0)
    try:
        yield int(listener.sockets[0].getsockname()[1])
    finally:
        listener.close()
        for writer in list(open_writers):
            writer.close()


async def chapter(
    out: Console,
    runtime: Runtime,
    server: EmbeddedPostgres,
    then: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """The chapter; `then` runs afterwards while its servers are still up."""
    if shutil.which("redis-server") is None:
        out.print("redis-server is not installed here: this chapter needs it (scripts/system-deps)")
        return
    settings = runtime.settings(ProvisioningSettings)
    _aaa_database(server, "bossa_demo_aaa")
    async with _tcp_port(server) as port:
        aaa_url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/bossa_demo_aaa"
        await _tour(out, runtime, settings, aaa_url, then)


async def _tour(
    out: Console,
    runtime: Runtime,
    settings: ProvisioningSettings,
    aaa_url: str,
    then: Callable[[], Awaitable[None]] | None,
) -> None:
    with _redis() as redis_server:
        await load_sample_plans(runtime.pool, aaa_url=aaa_url, hds_url=redis_server.url)
        out.print(f"divisions: AAA (SQL, {aaa_url}), HDS (Redis, {redis_server.url})")

        async def order(sa_id: str, intf_code: str, speed: str | None = None) -> None:
            binds = {"speed": speed} if speed else {}
            request = OrderRequest(
                product="ADSL", sa_id=sa_id, intf_code=intf_code, bind_data=binds
            )
            result = await service.submit(
                runtime.journal, runtime.deliverer, request, channel="demo", settings=settings
            )
            routes = ", ".join(f"{d} {how}" for d, how in result["divisions"].items())
            out.print(
                f"  order {result['wo_no']} {sa_id} {intf_code}: {result['status']} ({routes})"
            )

        out.print("Both servers up: a new ADSL line is provisioned directly.")
        await order("SA-5001", "4201", "20M")
        out.print(
            "[bold]Redis stops.[/bold] Orders still complete; HDS commands wait in "
            "its buffer, per contract in order."
        )
        redis_server.stop()
        await order("SA-5004", "4201", "50M")
        await order("SA-5001", "4202", "100M")
        await order("SA-5004", "4204")
        waiting = [
            row.model_dump()
            for row in await service.buffer(runtime.pool, "HDS")
            if row.state != "done"
        ]
        table(waiting, ["entry_id", "division", "sa_id", "wo_no", "intf_code", "errcode", "state"])
        out.print("[bold]Redis is back.[/bold] The HDS backup daemon delivers its buffer.")
        redis_server.start()
        daemon = await service.backup_daemon(
            runtime.journal, runtime.deliverer, "HDS", concurrency=2
        )
        await daemon.run(once=True)
        import redis

        store = redis.Redis.from_url(redis_server.url, decode_responses=True)
        for sa_id in ("SA-5001", "SA-5004"):
            entries: list[str] = store.lrange(f"log:{sa_id}", 0, -1)  # type: ignore[assignment]
            history = " -> ".join(x.split()[1] for x in entries)
            out.print(f"  Redis {sa_id}: {store.hgetall(f'sub:{sa_id}')}  ({history})")
        store.close()
        delivered: Counter[tuple[str, str]] = Counter()
        for sa_id in ("SA-5001", "SA-5004"):
            for row in await service.delivery_log(runtime.pool, sa_id=sa_id):
                delivered[row.division, row.mode.value] += 1
        table(
            [
                {"division": division, "mode": mode, "commands": n}
                for (division, mode), n in sorted(delivered.items())
            ],
            ["division", "mode", "commands"],
        )
        if then is not None:
            await then()
