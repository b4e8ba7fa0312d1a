"""Delivering one command to its division, the same way for direct and backup delivery.

Holds one adapter per division (rebuilt when the division's row changes), runs the
adapter's blocking call in a thread, keeps the division's known state (P4a: down after
an unreachable call, up after a success) and writes the provisioning log (P11).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from bossa.db import Conn, Pool
from bossa.logs import get_logger
from bossa.provisioning.adapters import adapter_for
from bossa.provisioning.adapters.base import Adapter, Command, DeliveryError
from bossa.provisioning.catalogue import QUERIES, division_from_row
from bossa.provisioning.settings import ProvisioningSettings

__all__ = ["Deliverer"]

_ROW_TTL_S = 1.0

log = get_logger("bossa.provisioning")


class Deliverer:
    def __init__(self, pool: Pool, settings: ProvisioningSettings | None = None) -> None:
        self.pool = pool
        self.settings = settings or ProvisioningSettings()
        self._adapters: dict[str, tuple[datetime, Adapter]] = {}
        self._rows: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = asyncio.Lock()

    async def division_row(self, division: str) -> dict[str, Any] | None:
        # Read at most once a second per division, not once per command.
        now = time.monotonic()
        cached = self._rows.get(division)
        if cached and now - cached[0] < _ROW_TTL_S:
            return cached[1]
        async with self.pool.connection() as conn:
            row = await (await conn.execute(QUERIES["division"], {"division": division})).fetchone()
        self._rows[division] = (now, row)
        return row

    async def _adapter(self, division: str) -> Adapter:
        row = await self.division_row(division)
        if row is None:
            raise DeliveryError("NO_DIVISION", f"division {division} is not in the division table")
        async with self._lock:
            cached = self._adapters.get(division)
            if cached and cached[0] == row["updated_at"]:
                return cached[1]
            if cached:
                await asyncio.to_thread(cached[1].close)
            adapter = adapter_for(division_from_row(row))
            self._adapters[division] = (row["updated_at"], adapter)
            return adapter

    async def deliver(self, command: Command) -> None:
        """Apply the command at its division; DeliveryError when it was not applied."""
        adapter = await self._adapter(command.division)
        try:
            await asyncio.to_thread(adapter.deliver, command)
        except DeliveryError as exc:
            if exc.unreachable:
                await self._mark(command.division, down=True, error=f"{exc.code}: {exc.message}")
            log.info(
                "delivery failed",
                division=command.division,
                sa_id=command.sa_id,
                wo_no=command.wo_no,
                code=exc.code,
                unreachable=exc.unreachable,
            )
            raise
        except Exception as exc:  # an adapter bug must not lose the command: it stays buffered
            raise DeliveryError(type(exc).__name__, str(exc) or repr(exc)) from exc
        await self._mark(command.division, down=False)

    async def deliver_many(
        self, division: str, commands: list[Command]
    ) -> dict[int, DeliveryError | None]:
        """A batch for one division: in one round trip where the adapter can, one call
        per command (at once, in threads) where it cannot."""
        adapter = await self._adapter(division)
        many = getattr(adapter, "deliver_many", None)
        if many is not None:
            try:
                results: dict[int, DeliveryError | None] = await asyncio.to_thread(many, commands)
            except Exception as exc:  # an adapter bug must not lose commands: they stay buffered
                failure = DeliveryError(type(exc).__name__, str(exc) or repr(exc))
                results = dict.fromkeys((c.entry_id for c in commands), failure)
        else:

            async def one(command: Command) -> DeliveryError | None:
                try:
                    await asyncio.to_thread(adapter.deliver, command)
                except DeliveryError as exc:
                    return exc
                except Exception as exc:
                    return DeliveryError(type(exc).__name__, str(exc) or repr(exc))
                return None

            outcomes = await asyncio.gather(*(one(c) for c in commands))
            results = {c.entry_id: o for c, o in zip(commands, outcomes, strict=True)}
        unreachable = next((r for r in results.values() if r is not None and r.unreachable), None)
        if unreachable is not None:
            await self._mark(
                division, down=True, error=f"{unreachable.code}: {unreachable.message}"
            )
        elif any(r is None for r in results.values()):
            await self._mark(division, down=False)
        return results

    async def _mark(self, division: str, *, down: bool, error: str | None = None) -> None:
        if not down:
            row = await self.division_row(division)
            if row is not None and row["down_until"] is None:
                return  # not marked down (as of a second ago): no write per success
        self._rows.pop(division, None)
        async with self.pool.connection() as conn:
            if down:
                await conn.execute(
                    QUERIES["mark_down"],
                    {"division": division, "error": error, "hold_s": self.settings.down_hold_s},
                )
            else:
                await conn.execute(QUERIES["mark_up"], {"division": division})

    async def log(self, conn: Conn, command: Command, *, mode: str, attempts: int) -> None:
        await conn.execute(
            QUERIES["log_delivery"],
            {
                "entry_id": command.entry_id,
                "division": command.division,
                "sa_id": command.sa_id,
                "wo_no": command.wo_no,
                "intf_code": command.intf_code,
                "mode": mode,
                "attempts": attempts,
            },
        )

    async def close(self) -> None:
        async with self._lock:
            for _, adapter in self._adapters.values():
                await asyncio.to_thread(adapter.close)
            self._adapters.clear()
