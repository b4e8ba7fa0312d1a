"""Billing's service lane: the suspend and restore orders that dunning and arrears
payments queue (inside their own transactions), and the daemon that sends them to
provisioning as orders 4204 / 4205, in order per contract (the entry's key is SA_ID).

The lane is declared with owner 'billing' by billing's migration 0002.
"""

from __future__ import annotations

from collections.abc import Sequence

from bossa.billing import store
from bossa.billing.models import ServiceOrder
from bossa.db import Conn
from bossa.errors import UserError
from bossa.journal import Entry, HandlerError, Journal, NewEntry, Worker
from bossa.provisioning import Deliverer, OrderRequest, submit

__all__ = ["SERVICE_LANE", "ServiceDaemon", "enqueue_service_orders", "service_entry"]

#: Suspend and restore orders for contracts go to provisioning from this lane.
SERVICE_LANE = "billing.service"


def service_entry(order: ServiceOrder) -> NewEntry:
    return NewEntry(SERVICE_LANE, order.kind, order.to_payload(), key=order.sa_id)


async def enqueue_service_orders(
    journal: Journal, conn: Conn, orders: Sequence[ServiceOrder]
) -> None:
    """Queue the orders in the caller's transaction: they commit with the status change."""
    await journal.enqueue([service_entry(order) for order in orders], conn=conn)


class ServiceDaemon:
    """Consumes the service lane: each entry becomes a provisioning order, submitted with
    an idempotency key of the entry, so a retried entry never orders twice."""

    def __init__(
        self, journal: Journal, deliverer: Deliverer, *, listen_url: str | None = None
    ) -> None:
        self.journal = journal
        self.deliverer = deliverer
        handlers = {ServiceOrder.RESUME: self._send, ServiceOrder.SUSPEND: self._send}
        self.worker = Worker(
            journal, SERVICE_LANE, handlers, listen_url=listen_url, concurrency=2, batch_size=50
        )

    async def _send(self, entry: Entry) -> None:
        try:
            order = ServiceOrder.from_entry(entry)
        except ValueError as exc:  # an operator's edit broke the payload
            raise HandlerError("BadPayload", str(exc)) from exc
        request = OrderRequest.model_validate(
            {"product": order.product, "sa_id": order.sa_id, "intf_code": order.intf_code}
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
        if order.payment is not None:
            # The write-off that triggered the restore records when it was sent (B3).
            async with self.journal.pool.connection() as conn:
                await store.restore_sent(conn, payment=order.payment, sa_id=order.sa_id)

    async def run(self, *, once: bool = False, install_signal_handlers: bool = False) -> None:
        await self.worker.run(until_idle=once, install_signal_handlers=install_signal_handlers)

    def stop(self) -> None:
        self.worker.stop()
