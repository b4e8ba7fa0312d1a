"""SFTP to the legacy billing system through asyncssh: key login, the server's host key
checked against a known_hosts file, and the few file operations a safe transfer needs
(upload under a temporary name, fsync, rename without overwriting, read back)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType

import asyncssh

from bossa.partners.adapters.base import TransferError

__all__ = ["SftpTarget", "TransferError"]


class SftpTarget:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        user: str,
        key_file: Path,
        known_hosts: Path,
        folder: str,
        timeout_s: float,
        max_bytes_per_s: int | None = None,
    ) -> None:
        self.host, self.port, self.user = host, port, user
        self.key_file, self.known_hosts = key_file, known_hosts
        self.folder = folder.rstrip("/")
        self.timeout_s = timeout_s
        self.max_bytes_per_s = max_bytes_per_s
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None

    async def __aenter__(self) -> SftpTarget:
        try:
            self._conn = await asyncio.wait_for(
                asyncssh.connect(
                    self.host,
                    self.port,
                    username=self.user,
                    client_keys=[str(self.key_file)],
                    known_hosts=str(self.known_hosts),
                    agent_path=None,
                    password=None,
                    config=None,
                ),
                self.timeout_s,
            )
            self._sftp = await asyncio.wait_for(self._conn.start_sftp_client(), self.timeout_s)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            await self.close()
            raise TransferError(
                f"cannot open SFTP to {self.host}:{self.port}: {_why(exc)}"
            ) from None
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = None
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()
            self._conn = None

    def path(self, name: str) -> str:
        return f"{self.folder}/{name}"

    @property
    def sftp(self) -> asyncssh.SFTPClient:
        if self._sftp is None:
            raise TransferError("not connected")
        return self._sftp

    async def size(self, name: str) -> int | None:
        try:
            attrs = await asyncio.wait_for(self.sftp.stat(self.path(name)), self.timeout_s)
        except asyncssh.SFTPNoSuchFile:
            return None
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise TransferError(f"stat {name}: {_why(exc)}") from None
        return int(attrs.size or 0)

    async def read(self, name: str) -> bytes:
        try:
            async with self.sftp.open(self.path(name), "rb") as handle:
                data = await asyncio.wait_for(handle.read(), self.timeout_s)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise TransferError(f"read {name}: {_why(exc)}") from None
        assert isinstance(data, bytes)
        return data

    async def upload(self, name: str, content: bytes, *, chunk: int = 64 * 1024) -> None:
        """Write `content` to `name` (replacing a partial one) and fsync it on the server,
        at most `max_bytes_per_s` when set (a shared link to the billing system)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with self.sftp.open(self.path(name), "wb") as handle:
                for start in range(0, len(content), chunk):
                    await asyncio.wait_for(
                        handle.write(content[start : start + chunk], start), self.timeout_s
                    )
                    if self.max_bytes_per_s:
                        due = started + (start + chunk) / self.max_bytes_per_s
                        await asyncio.sleep(max(0.0, due - loop.time()))
                await asyncio.wait_for(handle.fsync(), self.timeout_s)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise TransferError(f"upload {name}: {_why(exc)}") from None

    async def rename(self, old: str, new: str) -> None:
        """Rename without overwriting: OpenSSH's SFTP rename fails when `new` exists."""
        try:
            await asyncio.wait_for(self.sftp.rename(self.path(old), self.path(new)), self.timeout_s)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise TransferError(f"rename {old} to {new}: {_why(exc)}") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    return str(exc) or type(exc).__name__
