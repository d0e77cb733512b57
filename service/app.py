"""``create_app()``: the FastAPI application, its routers, error handling and lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __doc__ as service_doc
from service.error_responses import (
    error_response,
    service_error_response,
    unexpected_error_response,
)
from service.errors import ServiceError
from service.fast_path import PredictFastPath
from service.imaging import preprocess
from service.metrics import ServiceMetrics
from service.middleware import AdmissionLimit, RequestContext
from service.repository import ModelRepository, SelfTestDigit, resolve_device
from service.routes import health, models, page, predict
from service.runtime import Runtime
from service.schemas import ImageJSON
from service.settings import Settings

logger = logging.getLogger(__name__)

API_VERSION = "1.0.0"
_SELFTEST_NAME = re.compile(r"^digit(\d)_.+\.(png|jpe?g)$")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service as an ASGI app; models load in its lifespan (start-up), not here."""
    settings = settings or Settings()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await start(settings, metrics)
        app.state.runtime = runtime
        try:
            yield
        finally:
            await stop(runtime)

    # FastAPIOffline serves Swagger UI and ReDoc from package files instead of a CDN, so /docs
    # works on machines without internet access.
    app = FastAPIOffline(
        title="digits",
        version=API_VERSION,
        summary="Handwritten-digit recognition over HTTP.",
        description=service_doc or "",
        lifespan=lifespan,
    )
    app.include_router(predict.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(page.router)
    _install_error_handlers(app)
    # Outermost last: RequestContext (id, log, metrics) -> CORS -> AdmissionLimit -> fast path
    # of POST /predict, or else FastAPI's routes.
    app.add_middleware(PredictFastPath)
    app.add_middleware(AdmissionLimit, limit=settings.in_flight_limit)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestContext, metrics=metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


async def start(settings: Settings, metrics: ServiceMetrics) -> Runtime:
    """Load, verify, warm and self-test every package; fail fast on what a user must fix."""
    settings.check_model_dir()
    torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    repository = ModelRepository(
        settings, device, shipped_selftest_digits(settings), on_batch=metrics.observe_batch
    )
    runtime = Runtime(
        settings=settings,
        repository=repository,
        metrics=metrics,
        decode_pool=ThreadPoolExecutor(settings.preprocess_threads, thread_name_prefix="decode"),
    )
    metrics.watch_queues(runtime.queue_readings)
    report = await repository.reload()
    if settings.require_default_model and not repository.default_ready():
        why = next((f.error for f in report.failed if f.name == settings.default_model), None)
        await repository.close()
        raise SystemExit(
            f"the default model {settings.default_model!r} cannot be served from "
            f"{settings.model_dir}: {why or 'no package of that name'}. Set "
            "DIGITS_DEFAULT_MODEL to a model that exists, or DIGITS_REQUIRE_DEFAULT_MODEL=false."
        )
    if settings.reload_interval_s > 0:
        runtime.background.append(asyncio.create_task(runtime.watch_model_dir()))
    # Everything loaded so far lives as long as the process: keep it out of the collector's
    # full passes, which otherwise take tens of milliseconds with torch loaded.
    gc.collect()
    gc.freeze()
    logger.info(
        "service ready",
        extra={
            "models": [f"{m.card.name}/{m.card.version}" for m in repository.served()],
            "failed": [f"{f.name}/{f.version}" for f in repository.failed()],
            "device": str(device),
        },
    )
    return runtime


async def stop(runtime: Runtime) -> None:
    """Refuse new work, answer what was accepted, release threads."""
    runtime.shutting_down = True
    for task in runtime.background:
        task.cancel()
    await runtime.repository.close()
    runtime.decode_pool.shutdown(wait=False, cancel_futures=True)
    logger.info("service stopped")


def shipped_selftest_digits(settings: Settings) -> list[SelfTestDigit]:
    """The labelled digits in ``service/selftest/``, preprocessed once."""
    if not settings.selftest:
        return []
    digits: list[SelfTestDigit] = []
    for entry in sorted(resources.files("service").joinpath("selftest").iterdir(), key=str):
        match = _SELFTEST_NAME.match(entry.name)
        if match:
            image = preprocess(entry.read_bytes(), max_pixels=settings.max_image_pixels)
            digits.append((entry.name, image, int(match.group(1))))
    return digits


# ---- errors: one shape everywhere ----------------------------------------------------------


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        fields = [str(p["loc"][-1]) for p in problems if p.get("loc")]
        message = "; ".join(
            f"{'.'.join(str(x) for x in p.get('loc', ()))}: {p.get('msg')}" for p in problems
        )
        return error_response(422, "invalid_parameter", message, fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response()


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ImageJSON"] = ImageJSON.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        app.openapi_schema = schema
    return app.openapi_schema
