"""The FastAPI application: health, readiness, metrics, the domain routers, and the rules
every route shares: who may call it, how big a request may be, and how errors look.

Every error is answered in one shape, `ErrorBody` (`{"error", "field", "reason"}`), the
same text the CLI prints, and `/openapi.json` documents it for every route and status.
Nothing reaches a 500 by design: user errors are typed, driver errors the caller caused
are translated (`bossa.db.translate`), a database that cannot be reached is a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest, start_http_server
from psycopg_pool import PoolTimeout
from pydantic import BaseModel

from bossa import __version__, heap
from bossa.access import Permission
from bossa.access import api as access_api
from bossa.access.api import guarded
from bossa.alerts import api as alerts_api
from bossa.api.limits import RequestLimits
from bossa.api.settings import ApiSettings
from bossa.billing import api as billing_api
from bossa.billing import metrics as billing_metrics
from bossa.customers import api as customers_api
from bossa.db import translate
from bossa.errors import ErrorBody, InvalidInput, UserError
from bossa.imports import api as imports_api
from bossa.journal import api as journal_api
from bossa.journal import metrics as journal_metrics
from bossa.logs import get_logger
from bossa.partners import api as partners_api
from bossa.partners import metrics as partners_metrics
from bossa.provisioning import api as provisioning_api
from bossa.provisioning import metrics as provisioning_metrics
from bossa.rating import api as rating_api
from bossa.rating import metrics as rating_metrics
from bossa.runtime import Runtime, running
from bossa.sync import metrics as sync_metrics

__all__ = ["create_app"]

RuntimeFactory = Callable[[], contextlib.AbstractAsyncContextManager[Runtime]]

log = get_logger("bossa.api")

ERRORS = Counter("bossa_api_errors_total", "API answers of 4xx and 5xx, by status", ["status"])

#: Statuses any route may answer, beside its own: documented on every operation.
_COMMON_ERRORS = {
    "400": "The request cannot be read (a malformed header or body)",
    "401": "No credential, or an unknown, expired or revoked one",
    "403": "The credential's role may not do this",
    "404": "What the request names does not exist",
    "409": "The request contradicts the current state",
    "413": "The body is larger than BOSSA_API_MAX_BODY_BYTES",
    "422": "A value fails validation; `field` names it",
    "503": "PostgreSQL cannot be reached now; retry",
}


class Health(BaseModel):
    status: str


def create_app(
    runtime_factory: RuntimeFactory | None = None,
    settings: ApiSettings | None = None,
    *,
    settle_heap: bool = False,
) -> FastAPI:
    """The app. `settle_heap`: for the server process (`bossa serve`), freeze what start-up
    built out of the garbage collector's reach once the runtime is up (`bossa.heap`)."""
    settings = settings or ApiSettings()
    factory = runtime_factory or (lambda: running(actor="api"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with factory() as runtime, _metrics_port(settings, runtime):
            app.state.runtime = runtime
            if settle_heap:
                log.info("api.heap_settled", frozen=heap.settle())
            yield

    app = FastAPI(
        title="bossa",
        version=__version__,
        summary="Telecom BSS core: orders, provisioning, billing, rating, alerts, partners",
        lifespan=lifespan,
    )

    def answer(exc: UserError) -> JSONResponse:
        ERRORS.labels(str(exc.http_status)).inc()
        return JSONResponse(status_code=exc.http_status, content=ErrorBody.of(exc).content())

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        return answer(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Every problem of the request at once (an order with three bad fields names three).
        problems = []
        for error in exc.errors() or [{"loc": (), "msg": "is not valid"}]:
            where = [str(part) for part in error.get("loc", ()) if part not in ("body",)]
            field = ".".join(where[1:] if where[:1] in (["query"], ["path"], ["header"]) else where)
            problems.append((field or "body", str(error.get("msg", "is not valid"))))
        return answer(InvalidInput.every(problems))

    @app.exception_handler(psycopg.Error)
    async def database_error(request: Request, exc: psycopg.Error) -> JSONResponse:
        translated = translate(exc)
        if translated is not None:
            return answer(translated)
        if isinstance(exc, psycopg.DataError):  # e.g. a NUL byte, refused by the driver
            return answer(InvalidInput("holds a value PostgreSQL cannot store", field="body"))
        if isinstance(exc, psycopg.OperationalError):
            return _unavailable(exc)
        raise exc

    @app.exception_handler(PoolTimeout)
    async def pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
        return _unavailable(exc)

    def _unavailable(exc: Exception) -> JSONResponse:
        ERRORS.labels("503").inc()
        log.warning("api.database_unavailable", error=type(exc).__name__)
        body = ErrorBody(error="database unavailable; retry", field=None, reason="unavailable")
        return JSONResponse(status_code=503, content=body.content(), headers={"Retry-After": "1"})

    @app.get("/healthz", tags=["health"])
    async def healthz() -> Health:
        """The process is up. No credential needed."""
        return Health(status="ok")

    @app.get("/readyz", tags=["health"], response_model=Health, responses={503: {"model": Health}})
    async def readyz(request: Request) -> Any:
        """PostgreSQL answers: 200, or 503 within the ready timeout. No credential needed,
        so it says nothing else (the reason is in the server log)."""
        runtime: Runtime = request.app.state.runtime
        try:
            async with asyncio.timeout(settings.ready_timeout_s):
                # Twice: the first pooled connection may be a stale one from before a
                # PostgreSQL restart (the pool then discards it).
                for attempt in (1, 2):
                    try:
                        async with runtime.pool.connection() as conn:
                            await conn.execute("select 1")
                        break
                    except psycopg.OperationalError:
                        if attempt == 2:
                            raise
        except Exception as exc:  # any failure to answer means not ready
            log.warning("api.not_ready", error=type(exc).__name__, detail=str(exc)[:200])
            return JSONResponse(status_code=503, content=Health(status="unavailable").model_dump())
        return Health(status="ready")

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=PlainTextResponse,
        **guarded(Permission.METRICS_READ),
    )
    async def metrics(request: Request) -> Response:
        """Prometheus metrics, with the table gauges read now. Needs metrics.read, unless
        BOSSA_API_METRICS_PORT serves them without a token on a separate bind."""
        runtime: Runtime = request.app.state.runtime
        await _refresh_gauges(runtime, settings)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # The partners' open interface first: it takes the load of outside callers, and a
    # request is matched against every route of each router before its own (with the
    # partners' routes last, route matching was the largest cost of a partner's run).
    app.include_router(partners_api.router)
    app.include_router(access_api.router)
    app.include_router(journal_api.router)
    app.include_router(provisioning_api.router)
    app.include_router(billing_api.router)
    app.include_router(customers_api.router)
    app.include_router(imports_api.router)
    app.include_router(alerts_api.router)
    app.include_router(rating_api.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.max_body_bytes,
        max_json_depth=settings.max_json_depth,
    )
    return app


async def _refresh_gauges(runtime: Runtime, settings: ApiSettings) -> None:
    # The process's own metrics still serve when the database is down.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(settings.ready_timeout_s):
            await journal_metrics.refresh(runtime.pool)
            await billing_metrics.refresh(runtime.pool)
            await provisioning_metrics.refresh(runtime.pool)
            await partners_metrics.refresh(runtime.pool)
            await rating_metrics.refresh(runtime.pool)
            await sync_metrics.refresh(runtime.pool)


#: How often the table gauges are read for a separate metrics bind, which cannot read
#: them at scrape time (its server runs in a thread, without the event loop).
_GAUGE_REFRESH_S = 10.0


@contextlib.asynccontextmanager
async def _metrics_port(settings: ApiSettings, runtime: Runtime) -> AsyncIterator[None]:
    if settings.metrics_port is None:
        yield
        return
    server, thread = start_http_server(settings.metrics_port, addr=settings.metrics_host)
    log.info("api.metrics_port", host=settings.metrics_host, port=settings.metrics_port)

    async def refresh() -> None:
        while True:
            await _refresh_gauges(runtime, settings)
            await asyncio.sleep(_GAUGE_REFRESH_S)

    refresher = asyncio.create_task(refresh())
    try:
        yield
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        server.shutdown()
        thread.join(timeout=5)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with bossa's error shape in place of FastAPI's 422 and every
    status a route may answer documented on it."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["ErrorBody"] = ErrorBody.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, operations in schema.get("paths", {}).items():
        public = path in ("/healthz", "/readyz")
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in _COMMON_ERRORS.items():
                if public and status not in ("400", "413"):
                    continue
                responses[status] = {"description": description, "content": error}
    app.openapi_schema = schema
    return schema
