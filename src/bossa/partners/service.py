"""The partner platform's use cases: partners, templates, legacy systems and policies
(the operator's); runs (the partners', through the open interface); and the billing
processor's steps: collect, write MDR files, transmit them.

A sync run executes in one transaction: the steps' ledger writes, the run's result and
its billing log (a journal entry on `partners.billing`) commit together, so a run is
billed exactly when its result exists. A failed run keeps its result and writes no log.
Calls to legacy systems happen inside that transaction, each under its system's timeout
and breaker; what a legacy system did is not undone by a rollback, so each call carries
an idempotency key naming the run and the step.

`Platform` is a process's state: the rate-limit buckets, the quota blocks it reserved,
the legacy systems' clients and breakers. One per pool (`platform(pool, journal)`).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg import Rollback
from psycopg.errors import UniqueViolation

from bossa import customers, ledger
from bossa.access import Principal, Role
from bossa.access import service as access
from bossa.access import store as access_store
from bossa.db import Conn, Pool, masked_url, user_errors
from bossa.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated, UserError
from bossa.journal import Entry, Journal, NewEntry
from bossa.ledger import Book, Recipe
from bossa.logs import get_logger
from bossa.partners import metrics, store
from bossa.partners.adapters import (
    LegacyError,
    LegacySystem,
    RestSystem,
    SoapSystem,
    SqlSystem,
    TransferError,
)
from bossa.partners.models import (
    BILLING_KIND,
    END,
    OBJECTS,
    RUN_KIND,
    BillingLog,
    BillingPolicy,
    Breaker,
    CheckedTemplate,
    MdrFile,
    MdrHeader,
    PartnerInfo,
    PartnerRequest,
    PolicyRequest,
    RunAccepted,
    RunMode,
    RunResult,
    RunState,
    SystemKind,
    SystemRequest,
    TemplateInfo,
    TemplateRequest,
    TokenBucket,
    assemble_mdr,
    canonical,
    check_input,
    check_object_input,
    check_template,
    compare,
    parse_definition,
    parse_mdr,
    pick_policy,
    rate,
    resolve,
    verify_log,
)
from bossa.partners.settings import PartnersSettings

if TYPE_CHECKING:
    from bossa.partners.adapters.sftp import SftpTarget

__all__ = [
    "BILLING_LANE",
    "RUNS_LANE",
    "LegacyUnavailable",
    "PartnersSettings",
    "Platform",
    "QuotaExceeded",
    "RateLimited",
    "add_policy",
    "collect",
    "correct",
    "execute_queued",
    "get_run",
    "get_template",
    "list_files",
    "list_partners",
    "list_systems",
    "list_templates",
    "platform",
    "register_template",
    "run_object",
    "run_template",
    "set_partner",
    "set_system",
    "transmit",
    "write_error_file",
    "write_files",
]

log = get_logger("bossa.partners")

BILLING_LANE = "partners.billing"
RUNS_LANE = "partners.runs"
#: A partner's charge spends the subscriber's prepaid funds as revenue (the ledger's
#: "adjustment" kind: its schema lists the kinds it accepts).
_CHARGE = Recipe("adjustment", ((Book.PREPAID, 1), (Book.REVENUE, -1)))
_SMS_SEGMENT = 160
_TEMPLATE_TTL_S = 1.0
_TEMPLATE_CACHE_MAX = 10_000


class RateLimited(UserError):
    """Over a partner's or a template's runs per second."""

    http_status = 429


class QuotaExceeded(UserError):
    """A partner's or a template's daily quota is used up."""

    http_status = 429


class StepFailed(Exception):
    def __init__(self, step: str, error: str, reason: str) -> None:
        super().__init__(f"{step}: {error}: {reason}")
        self.step, self.error, self.reason = step, error, reason

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "field": f"steps.{self.step}", "reason": self.reason}


# -- the process's state -------------------------------------------------------------------


@dataclass
class _Quota:
    day: date
    left: int = 0
    #: The block being reserved, if any: a run that finds none left waits for it. One is
    #: started ahead, when half a block is left, so that under load no run waits for a
    #: reservation's round trip (and its commit) at all.
    refill: asyncio.Task[int] | None = None
    #: The quota at which a reservation last found nothing left: none is tried ahead
    #: again at that quota (it would cost a round trip per run until the block is used).
    dry_at: int | None = None


@dataclass
class _System:
    kind: str
    url: str
    timeout_ms: int
    statements: dict[str, str]
    client: LegacySystem
    breaker: Breaker


@dataclass
class Platform:
    pool: Pool
    journal: Journal
    settings: PartnersSettings
    buckets: dict[tuple[str, str], TokenBucket] = field(default_factory=dict)
    quotas: dict[tuple[str, str], _Quota] = field(default_factory=dict)
    systems: dict[str, _System] = field(default_factory=dict)
    systems_read_at: float = -math.inf
    templates: dict[tuple[str, int], CheckedTemplate] = field(default_factory=dict)
    template_rows: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    template_reads: dict[str, asyncio.Task[dict[str, Any] | None]] = field(default_factory=dict)
    writer: _RunWriter | None = None
    statuses: _StatusReader | None = None

    def admit(self, key: tuple[str, str], rate_per_s: int) -> None:
        now = time.monotonic()
        bucket = self.buckets.get(key)
        if bucket is None or bucket.rate != rate_per_s:
            bucket = self.buckets[key] = TokenBucket(rate_per_s, now)
        if not bucket.take(now):
            metrics.REFUSED.labels("rate").inc()
            what = "partner" if key[1] == "*" else "template"
            raise RateLimited(
                f"over {rate_per_s} runs per second for this {what}; retry in "
                f"{bucket.retry_after():.3f} s",
                field=what,
            )

    async def take_quota(self, partner: str, template: str, quota: int) -> None:
        """One run of the day's quota of a counter ('*' is the partner's): from this
        process's reserved block. The next block is reserved ahead, in the background,
        when half of one is left; a run waits only when none is left (the first run of
        the day, or a burst faster than a reservation), and never behind another
        counter's reservation."""
        today = datetime.now(UTC).date()
        key = (partner, template)
        held = self.quotas.get(key)
        if held is None or held.day != today:
            held = self.quotas[key] = _Quota(today)
        while held.left <= 0:
            got = await asyncio.shield(self._refill(held, partner, template, quota))
            if got == 0 and held.left <= 0:
                metrics.REFUSED.labels("quota").inc()
                what = "partner" if template == "*" else "template"
                log.warning("partners.quota_exhausted", partner=partner, template=template)
                raise QuotaExceeded(
                    f"the {what}'s daily quota of {quota} runs is used up", field=what
                )
        held.left -= 1
        if (
            held.left <= min(self.settings.quota_block, quota) // 2
            and held.refill is None
            and held.dry_at != quota
        ):
            self._refill(held, partner, template, quota)

    def _refill(self, held: _Quota, partner: str, template: str, quota: int) -> asyncio.Task[int]:
        """The counter's reservation under way, or a new one: a block (or, when a block
        would exceed the quota, one run) reserved in `partners.usage` and added to what
        the process holds. Its outcome is taken even if no run waits for it."""
        loop = asyncio.get_running_loop()
        if held.refill is not None and held.refill.get_loop() is loop:
            return held.refill

        async def reserve() -> int:
            try:
                block = min(self.settings.quota_block, quota)
                got = 0
                async with self.pool.connection() as conn:
                    for n in dict.fromkeys((block, 1)):
                        if await store.reserve(
                            conn, partner=partner, template=template, day=held.day, n=n, quota=quota
                        ):
                            got = n
                            break
            except Exception as exc:
                # Runs waiting for it get the error; one reserved ahead that no run
                # waited for is tried again by the next run that finds none left.
                log.warning(
                    "partners.quota_reserve_failed",
                    partner=partner,
                    template=template,
                    error=type(exc).__name__,
                )
                raise
            else:
                held.left += got
                held.dry_at = None if got else quota
                return got
            finally:
                if held.refill is asyncio.current_task():
                    held.refill = None

        task = held.refill = loop.create_task(reserve())
        task.add_done_callback(_retrieved)
        return task

    async def system(self, role: str) -> _System:
        if time.monotonic() - self.systems_read_at > 5.0:
            await self._read_systems()
        found = self.systems.get(role)
        if found is None:
            raise LegacyError("NO_SYSTEM", f"no legacy system for {role}", unreachable=False)
        return found

    async def _read_systems(self) -> None:
        async with self.pool.connection() as conn:
            rows = await store.systems(conn)
        self.systems_read_at = time.monotonic()
        for row in rows:
            old = self.systems.get(row["role"])
            same = old is not None and (old.kind, old.url, old.timeout_ms, old.statements) == (
                row["kind"],
                row["url"],
                row["timeout_ms"],
                row["statements"],
            )
            if same:
                continue
            if old is not None:
                await old.client.close()
            self.systems[row["role"]] = _System(
                row["kind"],
                row["url"],
                row["timeout_ms"],
                dict(row["statements"]),
                _client(row["kind"], row["url"], row["timeout_ms"], row["statements"]),
                Breaker(self.settings.breaker_threshold, self.settings.breaker_reset_s),
            )

    async def call(
        self, role: str, operation: str, params: dict[str, Any], *, key: str
    ) -> dict[str, Any]:
        """A call through the cooperation processor: breaker, timeout, metrics."""
        system = await self.system(role)
        now = time.monotonic()
        if not system.breaker.allow(now):
            metrics.LEGACY.labels(role, "open").inc()
            raise LegacyError("BREAKER_OPEN", f"{role} is failing; not called", unreachable=True)
        started = time.perf_counter()
        try:
            answer = await system.client.call(operation, params, idempotency_key=key)
        except LegacyError as exc:
            if exc.unreachable:
                before = system.breaker.state
                system.breaker.failure(time.monotonic())
                if system.breaker.state == "open" and before != "open":
                    log.warning("partners.breaker_open", system=role, error=exc.code)
            else:
                system.breaker.success()
            metrics.LEGACY.labels(role, "error").inc()
            raise
        finally:
            metrics.LEGACY_SECONDS.labels(role).observe(time.perf_counter() - started)
        system.breaker.success()
        metrics.LEGACY.labels(role, "ok").inc()
        return answer

    async def close(self) -> None:
        for system in self.systems.values():
            await system.client.close()
        self.systems.clear()


#: Runs written by one group commit at most (one statement for their rows, one for their
#: billing logs).
_GROUP_MAX = 500


class _RunWriter:
    """Group commit of sync runs: a run's row and billing log are handed here and the
    request waits until they are committed; runs that arrive while a commit is under way
    go together in the next one. Nothing waits on a timer: a lone run is written at once,
    and under load one transaction (and one WAL flush) carries many runs. Each request is
    answered only after the commit that holds its run, so durability is as before."""

    def __init__(self, plat: Platform) -> None:
        self.plat = plat
        self.pending: list[_Write] = []
        self.task: asyncio.Task[None] | None = None

    async def write(
        self, run: dict[str, Any], usage: _Usage, *, unconfirmed: str | None = None
    ) -> dict[str, Any]:
        """Commit a finished sync run and its billing log; `unconfirmed`, the id of a
        token the caller's principal was not yet confirmed with: the run is written only
        if that token is live in the same transaction (Unauthenticated otherwise)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[dict[str, Any]] = loop.create_future()
        done.add_done_callback(_retrieved)
        self.pending.append(_Write(run, usage, done, unconfirmed))
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._drain())
        # shield: a client that goes away does not cancel the others' commit.
        return await asyncio.shield(done)

    async def _drain(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:_GROUP_MAX], self.pending[_GROUP_MAX:]
            try:
                await self._commit(batch)
            except Exception as exc:
                for write in batch:
                    if not write.done.done():
                        write.done.set_exception(exc)

    async def _commit(self, batch: list[_Write]) -> None:
        plat = self.plat
        async with plat.pool.connection() as conn, conn.pipeline(), conn.transaction():
            tokens = sorted({w.unconfirmed for w in batch if w.unconfirmed is not None})
            if tokens:
                # In the transaction that writes the runs: a revocation committed before
                # a request arrived is seen here, and its run is not written.
                live = await access_store.live_tokens(conn, tokens)
                for write in batch:
                    if write.unconfirmed is not None and write.unconfirmed not in live:
                        write.done.set_exception(
                            Unauthenticated("this token was revoked or has expired")
                        )
                batch = [w for w in batch if not w.done.done()]
                if not batch:
                    return
            rows = await store.add_runs(conn, [w.run for w in batch])
            logs = [
                NewEntry(
                    BILLING_LANE,
                    BILLING_KIND,
                    BillingLog(
                        run_id=int(row["id"]),
                        partner=str(row["partner"]),
                        template=str(row["template"]),
                        version=int(row["version"]),
                        used_at=row["finished_at"] or row["created_at"],
                        units=usage.units,
                        charged=usage.charged,
                        currency=usage.currency,
                    ).to_payload(),
                )
                for row, usage in zip(rows, (w.usage for w in batch), strict=True)
                if row["state"] == RunState.DONE
            ]
            if logs:
                await plat.journal.enqueue(logs, conn=conn)
        for write, row in zip(batch, rows, strict=True):
            if not write.done.done():
                write.done.set_result(row)


@dataclass
class _Write:
    run: dict[str, Any]
    usage: _Usage
    done: asyncio.Future[dict[str, Any]]
    unconfirmed: str | None


class _StatusReader:
    """subscriber.status for runs outside a transaction: the lookups asked while one query
    is under way go together in the next (one query, one pooled connection), as the run
    writer does for commits. Each read is made after its run asked, so it is as fresh as
    a read of its own."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.pending: dict[str, list[asyncio.Future[list[customers.Contract]]]] = {}
        self.task: asyncio.Task[None] | None = None

    async def contracts(self, customer: str) -> list[customers.Contract]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[customers.Contract]] = loop.create_future()
        done.add_done_callback(_retrieved)
        self.pending.setdefault(customer, []).append(done)
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._drain())
        return await asyncio.shield(done)

    async def _drain(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, {}
            try:
                async with self.pool.connection() as conn:
                    found = await customers.contracts_of_customers(conn, list(batch))
            except Exception as exc:
                for waiting in batch.values():
                    for done in waiting:
                        if not done.done():
                            done.set_exception(exc)
                continue
            for customer, waiting in batch.items():
                for done in waiting:
                    if not done.done():
                        done.set_result(found.get(customer, []))


def _retrieved(done: asyncio.Future[Any]) -> None:
    # The caller may have gone away (its await cancelled, the shielded future not): its
    # outcome is still taken, so that no "exception was never retrieved" is logged.
    if not done.cancelled():
        done.exception()


def _client(kind: str, url: str, timeout_ms: int, statements: dict[str, str]) -> LegacySystem:
    timeout_s = timeout_ms / 1000
    if kind == SystemKind.REST:
        return RestSystem(url, timeout_s=timeout_s)
    if kind == SystemKind.SOAP:
        return SoapSystem(url, timeout_s=timeout_s)
    return SqlSystem(url, statements, timeout_s=timeout_s)


_PLATFORMS: weakref.WeakKeyDictionary[Pool, Platform] = weakref.WeakKeyDictionary()


def platform(pool: Pool, journal: Journal, settings: PartnersSettings | None = None) -> Platform:
    """The process's platform for this pool (built on first use)."""
    found = _PLATFORMS.get(pool)
    if found is None:
        found = _PLATFORMS[pool] = Platform(pool, journal, settings or PartnersSettings())
    return found


# -- the operator's use cases ----------------------------------------------------------------


async def set_partner(pool: Pool, request: PartnerRequest, *, actor: str) -> PartnerInfo:
    async with pool.connection() as conn, conn.transaction():
        with user_errors():
            return await store.set_partner(
                conn,
                name=request.name,
                display_name=request.display_name,
                rate_per_s=request.rate_per_s,
                daily_quota=request.daily_quota,
                actor=actor,
            )


async def list_partners(pool: Pool, *, limit: int = 1000) -> list[PartnerInfo]:
    async with pool.connection() as conn:
        return await store.partners(conn, limit=limit)


async def register_template(pool: Pool, request: TemplateRequest, *, actor: str) -> TemplateInfo:
    """Check a template and store it as its name's next version (the first: version 1)."""
    data = parse_definition(request.definition)
    checked = check_template(data)
    definition = json.loads(canonical(checked.to_json()))
    limits = request.limits
    async with pool.connection() as conn, conn.transaction():
        with user_errors():
            if await store.partner(conn, request.partner) is None:
                raise NotFound(f"no partner {request.partner}", field="partner")
            head = await store.lock_template(conn, request.name)
            if head is None and await store.new_template(
                conn,
                name=request.name,
                partner=request.partner,
                rate_per_s=limits.rate_per_s,
                daily_quota=limits.daily_quota,
                actor=actor,
            ):
                version = 1
            else:
                head = head or await store.lock_template(conn, request.name)
                assert head is not None
                if head["partner"] != request.partner:
                    raise Conflict(
                        f"template {request.name} belongs to another partner", field="name"
                    )
                version = await store.bump_template(
                    conn,
                    name=request.name,
                    rate_per_s=limits.rate_per_s,
                    daily_quota=limits.daily_quota,
                )
            await store.add_version(
                conn, name=request.name, version=version, definition=definition, actor=actor
            )
            row = await store.template(conn, request.name, version)
    assert row is not None
    log.info("partners.template_registered", template=request.name, version=version)
    return TemplateInfo.model_validate(row)


def _may_see(principal: Principal, partner: str) -> bool:
    return principal.role is not Role.PARTNER or principal.name == partner


async def get_template(
    pool: Pool, name: str, *, principal: Principal, version: int | None = None
) -> TemplateInfo:
    async with pool.connection() as conn:
        row = await store.template(conn, name, version)
    # Another partner's template reads as unknown: its existence is not the caller's.
    if row is None or not _may_see(principal, row["partner"]):
        raise NotFound(f"no template {name}", field="template")
    return TemplateInfo.model_validate(row)


async def list_templates(
    pool: Pool, *, principal: Principal, partner: str | None = None, limit: int = 1000
) -> list[TemplateInfo]:
    if principal.role is Role.PARTNER:
        if partner not in (None, principal.name):
            raise Forbidden("a partner lists its own templates only", field="partner")
        partner = principal.name
    async with pool.connection() as conn:
        return await store.templates(conn, partner=partner, limit=limit)


async def set_system(pool: Pool, request: SystemRequest, *, actor: str) -> dict[str, Any]:
    if request.kind is not SystemKind.SQL and request.statements:
        raise InvalidInput("only SQL systems have statements", field="statements")
    if not request.url.startswith(
        ("postgresql://", "postgres://")
        if request.kind is SystemKind.SQL
        else ("http://", "https://")
    ):
        raise InvalidInput(f"not a URL a {request.kind} system is reached at", field="url")
    async with pool.connection() as conn, conn.transaction():
        with user_errors():
            return _masked(
                await store.set_system(
                    conn,
                    role=request.role,
                    kind=request.kind.value,
                    url=request.url,
                    timeout_ms=request.timeout_ms,
                    statements=request.statements,
                    actor=actor,
                )
            )


def _masked(row: dict[str, Any]) -> dict[str, Any]:
    # A system's URL may carry a password (a SQL system's): never in a listing.
    return {**row, "url": masked_url(str(row["url"]))}


async def list_systems(pool: Pool) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return [_masked(row) for row in await store.systems(conn)]


async def add_policy(pool: Pool, request: PolicyRequest, *, actor: str) -> BillingPolicy:
    async with pool.connection() as conn, conn.transaction():
        with user_errors():
            if await store.partner(conn, request.partner) is None:
                raise NotFound(f"no partner {request.partner}", field="partner")
            try:
                async with conn.transaction():
                    return await store.add_policy(conn, request.model_dump(), actor=actor)
            except UniqueViolation:
                raise Conflict(
                    "a policy for this partner and template already starts that day",
                    field="valid_from",
                ) from None


# -- runs (the open interface) ----------------------------------------------------------------


async def _template(plat: Platform, name: str) -> tuple[dict[str, Any], CheckedTemplate]:
    """The template's latest version and its limits, read at most once a second per
    process: a new version or new limits reach runs within a second. Once the row is half
    a second old it is read again in the background, so that under load no run waits
    for that read (before, every run that found it a second old read it itself)."""
    now = time.monotonic()
    cached = plat.template_rows.get(name)
    if cached is not None and now - cached[0] < _TEMPLATE_TTL_S:
        row: dict[str, Any] | None = cached[1]
        if now - cached[0] > _TEMPLATE_TTL_S / 2 and name not in plat.template_reads:
            task = asyncio.get_running_loop().create_task(_read_template(plat, name))
            plat.template_reads[name] = task
            task.add_done_callback(lambda _: plat.template_reads.pop(name, None))
            task.add_done_callback(_retrieved)
    else:
        row = await _read_template(plat, name)
    if row is None:
        raise NotFound(f"no template {name}", field="template")
    key = (name, int(row["version"]))
    checked = plat.templates.get(key)
    if checked is None:
        checked = plat.templates[key] = check_template(row["definition"])
    return row, checked


async def _read_template(plat: Platform, name: str) -> dict[str, Any] | None:
    """A template's row read now, and remembered (as old as the moment it was asked for)."""
    read_at = time.monotonic()
    async with plat.pool.connection() as conn:
        row = await store.template(conn, name)
    if row is None:
        plat.template_rows.pop(name, None)
    else:
        if len(plat.template_rows) >= _TEMPLATE_CACHE_MAX:
            plat.template_rows.clear()
        plat.template_rows[name] = (read_at, row)
    return row


async def run_template(
    plat: Platform,
    name: str,
    raw_input: Any,
    *,
    principal: Principal,
    mode: RunMode = RunMode.SYNC,
) -> RunResult | RunAccepted:
    """Run a template for the caller: a partner runs its own templates only (another's
    reads as unknown); an operator's run is billed to the owner. Input, rate and quota are
    checked before anything runs, so a refused request changes nothing and bills nothing."""
    size = len(json.dumps(raw_input, separators=(",", ":")))
    if size > plat.settings.max_input_bytes:
        raise InvalidInput(f"{size} bytes; at most {plat.settings.max_input_bytes}", field="input")
    row, checked = await _template(plat, name)
    partner = str(row["partner"])
    if not _may_see(principal, partner):
        metrics.REFUSED.labels("not-own").inc()
        raise NotFound(f"no template {name}", field="template")
    values = check_input(checked, raw_input)
    # A deferred principal's token is confirmed before anything with an effect: for a run
    # that only reads (no legacy system, no ledger), in the transaction that writes it;
    # for any other, now, before its quota is taken.
    unconfirmed = None if principal.confirmed else principal.token_id
    if unconfirmed is not None and (mode is RunMode.ASYNC or not _reads_only(checked)):
        await access.confirm(plat.pool, principal)
        unconfirmed = None
    plat.admit((partner, "*"), int(row["partner_rate_per_s"]))
    plat.admit((partner, name), int(row["rate_per_s"]))
    await plat.take_quota(partner, "*", int(row["partner_daily_quota"]))
    await plat.take_quota(partner, name, int(row["daily_quota"]))
    version = int(row["version"])
    if mode is RunMode.ASYNC:
        async with plat.pool.connection() as conn, conn.transaction():
            run = await store.add_run(
                conn,
                partner=partner,
                template=name,
                version=version,
                mode=mode.value,
                state=RunState.QUEUED.value,
                input=values,
                output=None,
                error=None,
                actor=principal.actor,
            )
            await plat.journal.enqueue(
                [NewEntry(RUNS_LANE, RUN_KIND, {"run_id": int(run["id"])})], conn=conn
            )
        metrics.RUNS.labels(name, "queued").inc()
        return RunAccepted(
            id=int(run["id"]), state=RunState.QUEUED, location=f"/partners/runs/{run['id']}"
        )
    return await _execute(
        plat, checked, partner, name, version, values, principal.actor, unconfirmed=unconfirmed
    )


def _reads_only(checked: CheckedTemplate) -> bool:
    """No step reaches a legacy system or writes to the ledger."""
    return all(
        OBJECTS[step.object].legacy is None and step.object != "balance.charge"
        for step in checked.steps
    )


async def _execute(
    plat: Platform,
    checked: CheckedTemplate,
    partner: str,
    name: str,
    version: int,
    values: dict[str, Any],
    actor: str,
    *,
    run_id: int | None = None,
    unconfirmed: str | None = None,
) -> RunResult:
    started = time.perf_counter()
    writes = any(step.object == "balance.charge" for step in checked.steps)
    # A run's idempotency keys for legacy calls: the queued run's id, or a fresh token.
    token = f"run:{run_id}" if run_id is not None else f"req:{os.urandom(8).hex()}"
    if run_id is None and not writes:
        # Nothing of the run's own to commit with its result (no ledger posting): its
        # steps read outside a transaction (under READ COMMITTED each statement reads
        # its own snapshot either way), and its row and billing log go to the group
        # commit.
        run = await _grouped(
            plat, checked, partner, name, version, values, actor, token, unconfirmed
        )
        metrics.RUNS.labels(name, str(run["state"])).inc()
        metrics.RUN_SECONDS.observe(time.perf_counter() - started)
        return RunResult.model_validate(run)
    # Pipeline mode: BEGIN travels with the first statement and the journal's savepoint
    # release with COMMIT, so a run costs its own statements' round trips and few more.
    async with plat.pool.connection() as conn, conn.pipeline(), conn.transaction():
        failure: StepFailed | None = None
        output: dict[str, Any] | None = None
        usage = _Usage()
        try:
            if writes:
                async with conn.transaction():  # a savepoint: a failed run's charges undone
                    output = await _steps(plat, conn, checked, values, usage, token)
            else:
                output = await _steps(plat, conn, checked, values, usage, token)
        except StepFailed as exc:
            failure = exc
        state = RunState.FAILED if failure is not None else RunState.DONE
        error = failure.body() if failure is not None else None
        if run_id is None:
            run = await store.add_run(
                conn,
                partner=partner,
                template=name,
                version=version,
                mode=RunMode.SYNC.value,
                state=state.value,
                input=values,
                output=output if failure is None else None,
                error=error,
                actor=actor,
            )
        else:
            found = await store.finish_run(
                conn, run_id, state=state.value, output=output, error=error
            )
            if found is None:  # already finished by an earlier delivery of its entry
                raise Conflict(f"run {run_id} is already finished", field="run")
            run = found
        if failure is None:
            billing = BillingLog(
                run_id=int(run["id"]),
                partner=partner,
                template=name,
                version=version,
                used_at=run["finished_at"] or run["created_at"],
                units=usage.units,
                charged=usage.charged,
                currency=usage.currency,
            )
            await plat.journal.enqueue(
                [NewEntry(BILLING_LANE, BILLING_KIND, billing.to_payload())], conn=conn
            )
    metrics.RUNS.labels(name, state.value).inc()
    metrics.RUN_SECONDS.observe(time.perf_counter() - started)
    return RunResult.model_validate(run)


async def _grouped(
    plat: Platform,
    checked: CheckedTemplate,
    partner: str,
    name: str,
    version: int,
    values: dict[str, Any],
    actor: str,
    token: str,
    unconfirmed: str | None,
) -> dict[str, Any]:
    usage = _Usage()
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    try:
        # No connection: subscriber.status reads through the platform's coalescing reader.
        output = await _steps(plat, None, checked, values, usage, token)
    except StepFailed as exc:
        error = exc.body()
    if plat.writer is None:
        plat.writer = _RunWriter(plat)
    run = {
        "partner": partner,
        "template": name,
        "version": version,
        "state": (RunState.FAILED if error is not None else RunState.DONE).value,
        "input": values,
        "output": output if error is None else None,
        "error": error,
        "actor": actor,
    }
    return await plat.writer.write(run, usage, unconfirmed=unconfirmed)


@dataclass
class _Usage:
    units: int = 0
    charged: int = 0
    currency: str | None = None


async def _steps(
    plat: Platform,
    conn: Conn | None,
    checked: CheckedTemplate,
    values: dict[str, Any],
    usage: _Usage,
    token: str,
) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    steps = checked.steps
    i: int | None = 0
    while i is not None:
        step = steps[i]
        args = {k: resolve(v, values, results) for k, v in step.with_.items()}
        nxt: str | None = step.next
        if step.object == "branch":
            nxt = step.then if args["condition"] else step.else_
            results[step.id] = {}
        else:
            results[step.id] = await _object(plat, conn, step.id, step.object, args, usage, token)
        if nxt is None:
            i = i + 1 if i + 1 < len(steps) else None
        else:
            i = None if nxt == END else checked.target(nxt)
    return {key: resolve(ref, values, results) for key, ref in checked.definition.outputs.items()}


async def _object(
    plat: Platform,
    conn: Conn | None,
    step: str,
    name: str,
    args: dict[str, Any],
    usage: _Usage,
    token: str,
) -> dict[str, Any]:
    spec = OBJECTS[name]
    if name == "compare":
        return {"result": compare(args["left"], args["op"], args["right"])}
    if name == "subscriber.status":
        subscriber = str(args["subscriber"])
        if conn is not None:
            contracts = await customers.contracts_of_customer(conn, subscriber)
        else:
            if plat.statuses is None:
                plat.statuses = _StatusReader(plat.pool)
            contracts = await plat.statuses.contracts(subscriber)
        states = {str(c.status) for c in contracts}
        status = next((s for s in ("active", "suspended", "terminated") if s in states), "unknown")
        return {"status": status, "contracts": len(contracts)}
    if name == "balance.charge":
        assert conn is not None
        return await _charge(conn, step, args, usage, token)
    assert spec.legacy is not None
    key = f"{token}:{step}"
    try:
        if name == "sms.send":
            text = str(args["text"])
            if not text:
                raise StepFailed(step, "InvalidInput", "an SMS needs text")
            answer = await plat.call(
                spec.legacy, "send_sms", {"to": args["to"], "text": text}, key=key
            )
            segments = max(1, math.ceil(len(text) / _SMS_SEGMENT))
            usage.units += segments
            return {"message_id": str(answer.get("message_id", ""))[:100], "segments": segments}
        if name == "device.locate":
            answer = await plat.call(spec.legacy, "locate", {"msisdn": args["msisdn"]}, key=key)
            usage.units += 1
            cell = str(answer.get("cell") or "")[:100]
            found = str(answer.get("found", bool(cell))).lower() in ("true", "1")
            return {"cell": cell, "found": found}
    except LegacyError as exc:
        raise StepFailed(
            step,
            "LegacyUnavailable" if exc.unreachable else "LegacyRefused",
            f"{spec.legacy}: {exc.code}: {exc.message}",
        ) from None
    raise StepFailed(step, "UnknownObject", name)  # pragma: no cover  check_template forbids it


async def _charge(
    conn: Conn, step: str, args: dict[str, Any], usage: _Usage, token: str
) -> dict[str, Any]:
    account_id, amount = str(args["account"]), int(args["amount"])
    if not 0 < amount <= ledger.MAX_MINOR:
        raise StepFailed(step, "InvalidInput", f"amount must be 1 to {ledger.MAX_MINOR}")
    try:
        account = await ledger.account(conn, account_id, lock=True)
    except NotFound:
        raise StepFailed(step, "NotFound", f"no account {account_id}") from None
    if usage.currency not in (None, account.currency):
        raise StepFailed(step, "InvalidInput", "one run charges in one currency")
    funds = ledger.available(await ledger.balances(conn, account_id))
    if funds < amount:
        return {"charged": False, "available": funds}
    await ledger.post(
        conn, account_id, _CHARGE, amount, actor="partners", reference=f"partners:{token}:{step}"
    )
    usage.charged += amount
    usage.currency = account.currency
    return {"charged": True, "available": funds - amount}


async def run_object(plat: Platform, name: str, raw_input: Any, *, actor: str) -> dict[str, Any]:
    """The infra channel (O4): a legacy system asks to run one biz object, which may
    cooperate with another legacy system. Not a partner's use: nothing is billed. A
    failure is the caller's 4xx/5xx in the one error shape, naming the object."""
    values = check_object_input(name, raw_input)
    usage = _Usage()
    token = f"infra:{os.urandom(8).hex()}"
    try:
        async with plat.pool.connection() as conn, conn.transaction():
            output = await _object(plat, conn, "object", name, values, usage, token)
    except StepFailed as exc:
        metrics.INFRA.labels(name, "failed").inc()
        error = LegacyUnavailable if exc.error == "LegacyUnavailable" else InvalidInput
        raise error(exc.reason, field="object") from None
    metrics.INFRA.labels(name, "done").inc()
    log.info("partners.infra_object", object=name, actor=actor)
    return output


class LegacyUnavailable(UserError):
    """The legacy system an object needs is not answering (or its breaker is open)."""

    http_status = 502


async def execute_queued(plat: Platform, run_id: int) -> RunResult | None:
    """Execute an asynchronous run (the runs lane's daemon); None when it is not queued."""
    async with plat.pool.connection() as conn:
        run = await store.run(conn, run_id)
    if run is None or run["state"] != RunState.QUEUED:
        return None
    async with plat.pool.connection() as conn:
        row = await store.template(conn, run["template"], run["version"])
    if row is None:
        raise NotFound(f"no template {run['template']} v{run['version']}", field="template")
    key = (str(run["template"]), int(run["version"]))
    checked = plat.templates.get(key) or check_template(row["definition"])
    plat.templates[key] = checked
    try:
        return await _execute(
            plat,
            checked,
            str(run["partner"]),
            str(run["template"]),
            int(run["version"]),
            dict(run["input"]),
            "partners.runs",
            run_id=run_id,
        )
    except Conflict:
        return None


async def get_run(pool: Pool, run_id: int, *, principal: Principal) -> RunResult:
    async with pool.connection() as conn:
        run = await store.run(conn, run_id)
    if run is None or not _may_see(principal, run["partner"]):
        raise NotFound(f"no run {run_id}", field="run")
    return RunResult.model_validate(run)


# -- the billing processor (O5) --------------------------------------------------------------


async def collect(conn: Conn, entries: Sequence[Entry], settings: PartnersSettings) -> None:
    """Verify, standardise and rate billing logs, in the transaction that acks their
    entries: a log becomes one record (or one reject) exactly when its entry is done."""
    now = datetime.now(UTC)
    max_age = timedelta(days=settings.max_log_age_days)
    skew = timedelta(seconds=settings.max_clock_skew_s)
    good: list[tuple[Entry, BillingLog]] = []
    rejects: list[tuple[Entry, str]] = []
    for entry in entries:
        found, reason = verify_log(entry.payload, now=now, max_age=max_age, max_skew=skew)
        if found is None:
            rejects.append((entry, reason or "malformed"))
        else:
            good.append((entry, found))
    policies = await store.policies(conn, sorted({b.partner for _, b in good}))
    columns: dict[str, list[Any]] = {
        k: []
        for k in [
            "entry_ids",
            "run_ids",
            "kinds",
            "partners",
            "templates",
            "versions",
            "used_ats",
            "units",
            "charged",
            "fees",
            "shares",
            "currencies",
            "policy_ids",
        ]
    }
    seen: set[int] = set()
    for entry, billing in good:
        policy = pick_policy(policies, billing.partner, billing.template, billing.used_at.date())
        if policy is None:
            rejects.append(
                (
                    entry,
                    f"policy: none for {billing.partner}/{billing.template} "
                    f"on {billing.used_at.date()}",
                )
            )
            continue
        rated = rate(billing, policy)
        if isinstance(rated, str):
            rejects.append((entry, rated))
            continue
        if billing.run_id in seen:
            rejects.append((entry, f"duplicate: a second billing log of run {billing.run_id}"))
            continue
        seen.add(billing.run_id)
        for key, value in (
            ("entry_ids", entry.id),
            ("run_ids", billing.run_id),
            ("kinds", "U"),
            ("partners", billing.partner),
            ("templates", billing.template),
            ("versions", billing.version),
            ("used_ats", billing.used_at),
            ("units", billing.units),
            ("charged", billing.charged),
            ("fees", rated.fee),
            ("shares", rated.share),
            ("currencies", policy.currency),
            ("policy_ids", policy.id),
        ):
            columns[key].append(value)
    inserted = await store.add_records(conn, columns) if columns["entry_ids"] else set()
    by_id = {entry.id: billing for entry, billing in good}
    for entry_id in columns["entry_ids"]:
        if entry_id not in inserted:
            run = by_id[entry_id].run_id
            rejects.append(
                (
                    next(e for e, _ in good if e.id == entry_id),
                    f"duplicate: run {run} is already billed",
                )
            )
    rejects.sort(key=lambda item: item[0].id)  # the error file lists them in log order
    await store.add_rejects(
        conn,
        [e.id for e, _ in rejects],
        [e.payload if _jsonable(e.payload) else repr(e.payload) for e, _ in rejects],
        [reason for _, reason in rejects],
    )
    metrics.RECORDS.inc(len(inserted))
    if rejects:
        metrics.REJECTS.inc(len(rejects))
        log.warning("partners.billing_logs_rejected", count=len(rejects), first=rejects[0][1])


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


async def correct(pool: Pool, run_id: int, *, actor: str) -> int:
    """Reverse a billed run: a correction record (negated amounts) in a later file; the
    sent record is never changed. Returns the correction's record id."""
    async with pool.connection() as conn, conn.transaction():
        use = await store.use_record(conn, run_id)
        if use is None:
            raise NotFound(f"run {run_id} has no billing record (yet)", field="run")
        record = await store.add_correction(conn, run_id)
        if record is None:
            raise Conflict(f"run {run_id} is already corrected", field="run")
    log.info("partners.correction", run=run_id, record=record, actor=actor)
    return record


def _spool(settings: PartnersSettings) -> Path:
    folder = settings.spool_dir
    (folder / "sent").mkdir(parents=True, exist_ok=True)
    (folder / "errors").mkdir(parents=True, exist_ok=True)
    return folder


def _write_atomically(path: Path, content: bytes) -> None:
    partial = path.with_name(f".{path.name}.part")
    with partial.open("wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


async def write_files(pool: Pool, settings: PartnersSettings, *, max_files: int = 100) -> list[int]:
    """Write MDR files of the records not yet in one: each file's sequence number and its
    records are assigned in one transaction (no gap, no duplicate), then its bytes go to
    the spool under a temporary name and are renamed when complete."""
    folder = _spool(settings)
    written: list[int] = []
    for _ in range(max_files):
        mdr: MdrFile | None = None
        async with pool.connection() as conn, conn.transaction() as tx:
            seq, after = await store.next_seq(conn)
            # The file takes a range of record ids rather than marking each record: under
            # SHARE no record below the range's end can still be on its way.
            await store.lock_records(conn)
            totals = await store.claim_range(conn, after, settings.records_per_file)
            upto = totals.pop("upto")
            if upto is None:
                raise Rollback(tx)  # nothing to write: the sequence number is undone too
            await store.set_filed_to(conn, upto)
            header = MdrHeader(
                settings.sender,
                settings.recipient,
                seq,
                datetime.now(UTC).replace(microsecond=0),
                settings.test_files,
            )
            mdr = await _render(conn, header, store.FileRange(seq, after, upto), totals)
            await store.add_file(
                conn,
                {
                    "seq": seq,
                    "name": mdr.name,
                    "sender": header.sender,
                    "recipient": header.recipient,
                    "test": header.test,
                    "created_at": header.created_at,
                    "records": mdr.records,
                    "units": mdr.units,
                    "charged": mdr.charged,
                    "fee": mdr.fee,
                    "share": mdr.share,
                    "checksum": mdr.checksum,
                    "bytes": len(mdr.content),
                    "after_id": after,
                    "upto_id": upto,
                },
            )
        if mdr is None:
            break
        await asyncio.to_thread(_write_atomically, folder / mdr.name, mdr.content)
        metrics.FILES_WRITTEN.inc()
        log.info("partners.mdr_written", seq=seq, records=mdr.records, name=mdr.name)
        written.append(seq)
    return written


async def _render(
    conn: Conn, header: MdrHeader, where: store.FileRange, totals: dict[str, Any] | None = None
) -> MdrFile:
    """A file's bytes: its record lines rendered and streamed by the server (COPY)."""
    totals = totals or await store.file_totals(conn, where)
    lines = await store.file_lines(conn, where)
    return assemble_mdr(header, lines, **totals)


async def _content(pool: Pool, settings: PartnersSettings, seq: int) -> tuple[str, bytes]:
    """A written file's bytes: from the spool, or rendered again from its records (the
    writer may have died before the spool copy); either way checked against its row."""
    async with pool.connection() as conn:
        row = await store.file(conn, seq)
        assert row is not None
        path = settings.spool_dir / row["name"]
        if path.exists():
            content = await asyncio.to_thread(path.read_bytes)
        else:
            header = MdrHeader(row["sender"], row["recipient"], seq, row["created_at"], row["test"])
            content = (await _render(conn, header, store.FileRange.of(row))).content
    _, _, trailer = parse_mdr(content)
    if trailer[6] != row["checksum"] or len(content) != row["bytes"]:
        raise TransferError(f"{row['name']} in the spool does not match its record")
    if not path.exists():
        await asyncio.to_thread(_write_atomically, path, content)
    return str(row["name"]), content


async def transmit(pool: Pool, settings: PartnersSettings) -> list[int]:
    """Send written files in sequence order, each: upload under a temporary name, fsync,
    check the final name is free (a retried rename may have happened), rename, check,
    then mark it sent. A failure stops the round: a later file never overtakes one."""
    async with pool.connection() as conn:
        todo = await store.unsent_files(conn)
    if not todo:
        return []
    if not (settings.sftp_host and settings.sftp_key_file and settings.sftp_known_hosts):
        log.warning("partners.no_sftp", unsent=len(todo))
        return []
    from bossa.partners.adapters.sftp import SftpTarget  # asyncssh: only where files move

    sent: list[int] = []
    target = SftpTarget(
        settings.sftp_host,
        settings.sftp_port,
        user=settings.sftp_user,
        key_file=settings.sftp_key_file,
        known_hosts=settings.sftp_known_hosts,
        folder=settings.sftp_dir,
        timeout_s=settings.sftp_timeout_s,
        max_bytes_per_s=settings.sftp_max_bytes_per_s,
    )
    seq = todo[0]
    try:
        async with target:
            for seq in todo:
                name, content = await _content(pool, settings, seq)
                await _send(target, name, content)
                async with pool.connection() as conn, conn.transaction():
                    await store.mark_sent(conn, seq)
                spooled = settings.spool_dir / name
                if spooled.exists():
                    spooled.replace(settings.spool_dir / "sent" / name)
                metrics.FILES_SENT.inc()
                log.info("partners.mdr_sent", seq=seq, name=name)
                sent.append(seq)
    except TransferError as exc:
        metrics.TRANSFER_FAILURES.inc()
        log.warning("partners.transfer_failed", seq=seq, error=str(exc))
        async with pool.connection() as conn, conn.transaction():
            await store.note_attempt(conn, seq, str(exc))
    return sent


async def _send(target: SftpTarget, name: str, content: bytes) -> None:
    partial = f".{name}.part"
    if await _already_there(target, name, content):
        return
    await target.upload(partial, content)
    if await _already_there(target, name, content):  # the rename of an earlier try landed
        return
    await target.rename(partial, name)
    if not await _already_there(target, name, content):
        raise TransferError(f"{name} is not on the server after its rename")


async def _already_there(target: SftpTarget, name: str, content: bytes) -> bool:
    size = await target.size(name)
    if size is None:
        return False
    if size == len(content) and await target.read(name) == content:
        return True
    # Something else holds the final name: never overwrite what a receiver may have read.
    raise TransferError(f"{name} on the server differs from the file bossa wrote")


async def write_error_file(pool: Pool, settings: PartnersSettings) -> str | None:
    """Rejected billing logs to an error file in the spool's errors/ folder, one line
    each: entry id, reason, payload (JSON). The name follows from the rejects' ids, so a
    crash before they are marked writes the same file again."""
    folder = _spool(settings) / "errors"
    async with pool.connection() as conn, conn.transaction():
        rows = await store.unfiled_rejects(conn, limit=100_000)
        if not rows:
            return None
        name = f"ERR_{settings.sender}_{rows[0]['id']:012d}_{rows[-1]['id']:012d}.txt"
        lines = "".join(
            f"{r['entry_id']}\t{r['reason']}\t{json.dumps(r['payload'], sort_keys=True)}\n"
            for r in rows
        )
        await asyncio.to_thread(_write_atomically, folder / name, lines.encode())
        await store.file_rejects(conn, [int(r["id"]) for r in rows], name)
    log.warning("partners.error_file", name=name, rejects=len(rows))
    return name


async def list_files(pool: Pool, *, limit: int = 100) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await store.files(conn, limit=limit)
