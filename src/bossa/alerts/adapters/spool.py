"""The local durable spool: what happens while the database is down, on local disk.

An append-only file of JSON lines (`spool.jsonl`): missed calls, the message-1 notices sent
for them, and delivery receipts. `append` returns once its line is written and fsynced;
concurrent appends share one fsync (group commit), so the SIP answer, which waits for
`append`, never comes before the record is durable and a burst costs one disk flush, not
one per call. A line torn by a crash (the process killed mid-write) was never
acknowledged and is skipped on reading.

Replay seals the active file (renames it to `spool-<n>.sealed` and starts a new one), so
appends go on while sealed files are written to PostgreSQL; a sealed file is deleted only
after its transaction committed. Replaying a file twice is harmless: every record carries
an id that the database keeps unique.

The registration copy (`registry.json`) is written to a temporary file, fsynced and renamed
over the old one: a crash leaves the old copy or the new, never half of one.

A plain file rather than SQLite or a queue: the spool must work when everything but the
local disk is gone, is read back in full on every replay, and is small (an outage's calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bossa.alerts import metrics

__all__ = ["Spool"]


class Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.active = folder / "spool.jsonl"
        self._fd = os.open(self.active, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flushing = False
        self._lock = asyncio.Lock()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)

    async def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((line, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                async with self._lock:
                    try:
                        await asyncio.to_thread(self._write, b"".join(line for line, _ in batch))
                    except OSError as exc:
                        for _, future in batch:
                            if not future.done():
                                future.set_exception(exc)
                        continue
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._flushing = False

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        metrics.SPOOL_FSYNCS.inc()

    # -- reading and replay ----------------------------------------------------------

    @staticmethod
    def read(path: Path) -> Iterator[dict[str, Any]]:
        with path.open("rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    return  # torn by a crash: never acknowledged
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record

    def records(self) -> list[dict[str, Any]]:
        """Everything not yet replayed: sealed files first, then the active one."""
        found: list[dict[str, Any]] = []
        for path in [*self.sealed(), self.active]:
            if path.exists():
                found.extend(self.read(path))
        return found

    def sealed(self) -> list[Path]:
        return sorted(self.folder.glob("spool-*.sealed"), key=lambda p: int(p.name[6:-7]))

    async def seal(self) -> list[Path]:
        """Close the active file under a new name (when it holds anything) and start a new
        one; the sealed files, oldest first."""
        async with self._lock:
            if self.active.stat().st_size > 0:
                numbers = [int(p.name[6:-7]) for p in self.sealed()]
                target = self.folder / f"spool-{max(numbers, default=0) + 1}.sealed"
                os.close(self._fd)
                self.active.rename(target)
                self._fd = os.open(self.active, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                _fsync_dir(self.folder)
        return self.sealed()

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        _fsync_dir(self.folder)

    # -- the registration copy ---------------------------------------------------------

    def save_registry(self, registry: dict[str, str]) -> None:
        target = self.folder / "registry.json"
        temporary = self.folder / "registry.json.tmp"
        with temporary.open("w") as handle:
            json.dump(registry, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(target)
        _fsync_dir(self.folder)

    def load_registry(self) -> dict[str, str]:
        target = self.folder / "registry.json"
        try:
            loaded = json.loads(target.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
