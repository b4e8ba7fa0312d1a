"""The FastAPI application: health, readiness, metrics, and the domain routers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bossa import __version__
from bossa.api.settings import ApiSettings
from bossa.billing import api as billing_api
from bossa.billing import gauges as billing_gauges
from bossa.errors import UserError
from bossa.journal import api as journal_api
from bossa.journal import gauges
from bossa.provisioning import api as provisioning_api
from bossa.runtime import Runtime, running

__all__ = ["create_app"]

RuntimeFactory = Callable[[], contextlib.AbstractAsyncContextManager[Runtime]]


def create_app(
    runtime_factory: RuntimeFactory | None = None, settings: ApiSettings | None = None
) -> FastAPI:
    settings = settings or ApiSettings()
    factory = runtime_factory or (lambda: running(actor="api"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with factory() as runtime:
            app.state.runtime = runtime
            yield

    app = FastAPI(
        title="bossa",
        version=__version__,
        summary="Telecom BSS core: orders, provisioning, billing, rating, alerts, partners",
        lifespan=lifespan,
    )

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.http_status,
            content={"error": str(exc), "field": exc.field, "reason": exc.reason},
        )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> JSONResponse:
        """PostgreSQL answers: 200, or 503 within the ready timeout."""
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
            return JSONResponse(
                status_code=503,
                content={"status": "unavailable", "database": str(exc) or "timeout"},
            )
        return JSONResponse({"status": "ready", "database": "ok"})

    @app.get("/metrics", tags=["health"])
    async def metrics(request: Request) -> Response:
        """Prometheus metrics, with the journal's table gauges read now."""
        runtime: Runtime = request.app.state.runtime
        with contextlib.suppress(Exception):  # metrics of the process still serve if the DB is down
            async with asyncio.timeout(settings.ready_timeout_s):
                await gauges.refresh(runtime.pool)
                await billing_gauges.refresh(runtime.pool)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(journal_api.router)
    app.include_router(provisioning_api.router)
    app.include_router(billing_api.router)
    return app
