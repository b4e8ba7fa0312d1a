"""The provisioning daemons.

- The order daemon (P1, P2): one per product, fetching its receive table oldest first
  (several instances are safe: receipts are locked, and a contract's later receipt waits
  for its earlier one), accepting each order and provisioning it.
- The backup daemon (P6): one per division, delivering that division's buffer oldest
  first, per contract in order; ENDDATE on success, ERRCODE/ERRMSG/ERRDATE on error, and
  on to the next contract. It is a journal worker on the division's lane.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bossa.errors import UserError
from bossa.journal import Entry, Journal, Worker
from bossa.journal.store import Failure
from bossa.logs import get_logger
from bossa.provisioning.catalogue import QUERIES
from bossa.provisioning.delivery import Deliverer
from bossa.provisioning.orders import OrderRequest, accept, command_of, deliver_direct, lane_of
from bossa.provisioning.settings import ProvisioningSettings

__all__ = ["BackupDaemon", "OrderDaemon"]

log = get_logger("bossa.provisioning.daemons")


class BackupDaemon:
    """Delivers one division's buffer (P6)."""

    def __init__(
        self,
        journal: Journal,
        deliverer: Deliverer,
        division: str,
        *,
        listen_url: str | None = None,
        concurrency: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        settings = deliverer.settings
        self.journal = journal
        self.deliverer = deliverer
        self.division = division
        self.worker = Worker(
            journal,
            lane_of(division),
            {},
            listen_url=listen_url,
            concurrency=concurrency or settings.backup_concurrency,
            batch_size=batch_size or settings.backup_batch,
            gate=self._division_in_use,
            after_ack=self._log,
            batch_handler=self._deliver_batch,
        )

    async def _division_in_use(self) -> bool:
        # SERVER_USED off: the buffer keeps filling and nothing is sent until it is on
        # again. The row is the deliverer's, read at most once a second.
        row = await self.deliverer.division_row(self.division)
        return bool(row and row["server_used"])

    async def _deliver_batch(self, entries: list[Entry]) -> dict[int, Failure | None]:
        # One entry per contract in a batch: delivered together, in one round trip where
        # the adapter can (a Lua pipeline, one SQL transaction with a savepoint each).
        commands = [command_of(e.id, e.key or "", e.payload) for e in entries]
        results = await self.deliverer.deliver_many(self.division, commands)
        return {
            entry_id: None if error is None else Failure(entry_id, error.code, error.message)
            for entry_id, error in results.items()
        }

    async def _log(self, conn: Any, entries: list[Entry]) -> None:
        # P11, written with the ack: a logged delivery is an acked one.
        await conn.execute(QUERIES["log_deliveries"], {"ids": [e.id for e in entries]})

    async def run(self, *, once: bool = False, install_signal_handlers: bool = False) -> None:
        await self.worker.run(until_idle=once, install_signal_handlers=install_signal_handlers)

    def stop(self) -> None:
        self.worker.stop()


class OrderDaemon:
    """Processes one product's receive table (P1, P2)."""

    def __init__(
        self,
        journal: Journal,
        deliverer: Deliverer,
        product: str,
        settings: ProvisioningSettings | None = None,
    ) -> None:
        self.journal = journal
        self.deliverer = deliverer
        self.product = product
        self.settings = settings or ProvisioningSettings()
        self.processed = 0
        self.rejected = 0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run_once(self) -> int:
        """One pass over what is waiting; returns how many receipts were handled."""
        handled = 0
        while not self._stopping.is_set():
            done = await self._batch()
            handled += done
            if done == 0:
                return handled
        return handled

    async def run(self) -> None:
        while not self._stopping.is_set():
            await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.receipt_poll_s)

    async def _batch(self) -> int:
        pending: list[Any] = []
        async with self.journal.pool.connection() as conn, conn.transaction():
            receipts = await (
                await conn.execute(
                    QUERIES["take_receipts"],
                    {"product": self.product, "limit": self.settings.receipt_batch},
                )
            ).fetchall()
            for receipt in receipts:
                try:
                    async with conn.transaction():
                        request = OrderRequest.parse(
                            {
                                "product": receipt["product_code"],
                                "sa_id": receipt["sa_id"],
                                "intf_code": receipt["intf_code"],
                                "cust_id": receipt["cust_id"],
                                "wo_no": receipt["wo_no"],
                                "bind_data": receipt["bind_data"],
                            }
                        )
                        accepted = await accept(
                            conn,
                            self.journal,
                            request,
                            channel="receive-table",
                            idempotency_key=f"receipt:{self.product}:{receipt['id']}",
                            settings=self.settings,
                        )
                except UserError as exc:
                    self.rejected += 1
                    log.warning(
                        "receipt rejected", product=self.product, id=receipt["id"], error=str(exc)
                    )
                    await self._finish(conn, receipt, "rejected", str(exc), None)
                    continue
                await self._finish(conn, receipt, "done", None, accepted.wo_no)
                pending.append(accepted)
        # Committed: the orders and their entries are safe; now the direct calls.
        for accepted in pending:
            if not accepted.replay:
                await deliver_direct(
                    self.journal.pool.connection, self.journal, self.deliverer, accepted
                )
            self.processed += 1
        return len(receipts)

    async def _finish(
        self, conn: Any, receipt: Any, status: str, error: str | None, wo_no: str | None
    ) -> None:
        await conn.execute(
            QUERIES["finish_receipt"],
            {
                "status": status,
                "error": error,
                "wo_no": wo_no,
                "product": self.product,
                "id": receipt["id"],
            },
        )
