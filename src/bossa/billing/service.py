"""The service daemon: sends the suspend and restore commands that billing queued
(dunning, arrears paid) to provisioning as orders 4204 / 4205, in order per contract."""

from __future__ import annotations

from bossa.billing.payments import SERVICE_LANE
from bossa.errors import UserError
from bossa.journal import Entry, HandlerError, Journal, Worker
from bossa.provisioning import Deliverer, OrderRequest, submit

__all__ = ["ServiceDaemon"]


class ServiceDaemon:
    def __init__(
        self, journal: Journal, deliverer: Deliverer, *, listen_url: str | None = None
    ) -> None:
        self.journal = journal
        self.deliverer = deliverer
        handlers = {"service.resume": self._send, "service.suspend": self._send}
        self.worker = Worker(
            journal, SERVICE_LANE, handlers, listen_url=listen_url, concurrency=2, batch_size=50
        )

    async def _send(self, entry: Entry) -> None:
        payload = entry.payload
        request = OrderRequest(
            product=payload["product"], sa_id=payload["sa_id"], intf_code=payload["intf_code"]
        )
        try:
            await submit(
                self.journal,
                self.deliverer,
                request,
                channel="billing",
                idempotency_key=f"billing-service:{entry.id}",
            )
        except UserError as exc:  # e.g. the product has no plan for 4204/4205
            raise HandlerError(type(exc).__name__, str(exc)) from exc

    async def run(self, *, once: bool = False, install_signal_handlers: bool = False) -> None:
        await self.worker.run(until_idle=once, install_signal_handlers=install_signal_handlers)

    def stop(self) -> None:
        self.worker.stop()
