"""The partner platform's lanes and daemons.

- `partners.billing` (kind billing-log): every finished run's billing log, enqueued in
  the run's transaction. The collector acks a batch and records it (verified, rated, or
  rejected with its reason) in one transaction, so each log becomes exactly one record
  or reject.
- `partners.runs` (kind run): asynchronous runs, executed by the runs daemon.

`BillingProcessor` is the billing processor of O5: collect, write MDR files and error
files, transmit, again every `interval_s`. Both lanes are declared with owner 'partners'
by the module's migration.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from bossa.db import Conn
from bossa.journal import Entry, Failure, HandlerError, Journal, Worker
from bossa.logs import get_logger
from bossa.partners import service
from bossa.partners.models import BILLING_KIND, RUN_KIND
from bossa.partners.service import BILLING_LANE, RUNS_LANE, Platform
from bossa.partners.settings import PartnersSettings

__all__ = ["BILLING_LANE", "RUNS_LANE", "BillingProcessor", "RunDaemon", "collector"]

log = get_logger("bossa.partners.lanes")


def collector(journal: Journal, settings: PartnersSettings) -> Worker:
    """The worker that collects billing logs (until idle when run with `until_idle`)."""

    async def accept(entries: list[Entry]) -> dict[int, Failure | None]:
        # Verification happens in the ack's transaction (after_ack): nothing fails here.
        return {entry.id: None for entry in entries}

    async def record(conn: Conn, entries: list[Entry]) -> None:
        await service.collect(conn, entries, settings)

    return Worker(
        journal,
        BILLING_LANE,
        {BILLING_KIND: lambda entry: None},
        batch_handler=accept,
        after_ack=record,
        batch_size=settings.collect_batch,
        concurrency=1,
    )


class RunDaemon:
    """Executes asynchronous runs from `partners.runs`."""

    def __init__(self, plat: Platform, *, concurrency: int = 4) -> None:
        self.platform = plat
        self.worker = Worker(
            plat.journal, RUNS_LANE, {RUN_KIND: self._run}, concurrency=concurrency
        )

    async def _run(self, entry: Entry) -> None:
        try:
            run_id = int(entry.payload["run_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise HandlerError("BadPayload", "a run entry names its run_id") from exc
        await service.execute_queued(self.platform, run_id)

    async def run(self, *, once: bool = False) -> None:
        await self.worker.run(until_idle=once)

    def stop(self) -> None:
        self.worker.stop()


class BillingProcessor:
    """Collect, write, transmit; then again after `interval_s`."""

    def __init__(self, journal: Journal, settings: PartnersSettings) -> None:
        self.journal = journal
        self.settings = settings
        self._stop = asyncio.Event()

    async def round(self) -> tuple[list[int], list[int]]:
        """One pass: every waiting log collected, files written, error file, transfer.
        Returns the file sequence numbers written and sent."""
        await collector(self.journal, self.settings).run(until_idle=True)
        pool = self.journal.pool
        written = await service.write_files(pool, self.settings)
        await service.write_error_file(pool, self.settings)
        sent = await service.transmit(pool, self.settings)
        return written, sent

    async def run(
        self, *, once: bool = False, interval_s: float = 10.0, install_signal_handlers: bool = False
    ) -> None:
        if install_signal_handlers:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._stop.set)
        while True:
            written, sent = await self.round()
            if written or sent:
                log.info("partners.billing_round", written=written, sent=sent)
            if once or self._stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval_s)
            if self._stop.is_set():
                return

    def stop(self) -> None:
        self._stop.set()
