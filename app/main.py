"""The HTTP application: webhook receivers, email links, the admin's JSON API, health."""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arq import create_pool
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError

from app.admin.endpoints import router as admin_router
from app.api import activity, analytics, flows, login, privacy, shop
from app.api.auth import PageAuthError
from app.api.errors import request_validation_errors
from app.db import SessionDep, dispose_engine
from app.inbox.endpoints import router as webhooks_router
from app.inbox.writer import InboxWriter, WriterStopped
from app.links.endpoints import router as links_router
from app.links.pages import InvalidLink, invalid_link_page
from app.mail.bounces import router as bounces_router
from app.redis import RedisDep, redis_settings
from app.settings import get_settings
from integrations.shopify.install import router as shopify_install_router
from integrations.woocommerce.connect import router as woocommerce_connect_router

RETRY_AFTER_SECONDS = 30


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.redis = await create_pool(redis_settings(get_settings()))
    app.state.inbox_writer = InboxWriter(app.state.redis)
    _freeze_startup_objects()
    try:
        yield
    finally:
        await app.state.inbox_writer.stop()
        await app.state.redis.aclose()
        await dispose_engine()


def _freeze_startup_objects() -> None:
    """Keep what start-up made (modules, routes, SQLAlchemy's tables: about 170k objects) out of
    the garbage collector's full passes, which walk every object. Under the ingest benchmark's
    load one came every 1-3 s and held every request for 120-180 ms, the p99 tail; with these
    frozen a pass takes 6-10 ms. Once a process (the tests start many apps)."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # 503, not 500: platforms retry a webhook that got a 5xx, and nothing was stored.
    return JSONResponse(
        {"detail": "database unavailable, try again"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _queue_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # Redis holds sign-in nonces and signed-out sessions: without it, "try again", not a 500.
    return JSONResponse(
        {"detail": "queue unavailable, try again"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _server_stopping(request: Request, exc: Exception) -> JSONResponse:
    # A delivery the inbox writer could not store before the server stopped: 503, so the
    # platform sends it again (to this server once it is back, or another).
    return JSONResponse(
        {"detail": "the server is stopping, try again"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _page_not_signed_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageAuthError)
    return exc.response


def create_app() -> FastAPI:
    app = FastAPI(title="Rebound", lifespan=lifespan)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InterfaceError, _database_unavailable)
    app.add_exception_handler(RedisError, _queue_unavailable)
    app.add_exception_handler(WriterStopped, _server_stopping)
    app.add_exception_handler(RequestValidationError, request_validation_errors)
    app.add_exception_handler(PageAuthError, _page_not_signed_in)
    app.add_exception_handler(InvalidLink, invalid_link_page)
    app.include_router(webhooks_router)
    app.include_router(bounces_router)
    app.include_router(links_router)
    app.include_router(login.router)
    app.include_router(admin_router)
    for api in (shop, flows, activity, privacy, analytics):
        app.include_router(api.router)
    app.include_router(shopify_install_router)
    app.include_router(woocommerce_connect_router)

    @app.get("/healthz", tags=["health"])
    async def healthz(session: SessionDep, redis: RedisDep) -> JSONResponse:
        checks = {"database": "ok", "redis": "ok"}
        try:
            await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        try:
            await redis.ping()
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
        healthy = all(value == "ok" for value in checks.values())
        return JSONResponse(checks, status_code=200 if healthy else 503)

    return app
