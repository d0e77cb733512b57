"""``create_app()``: the composition root. It builds the FastAPI application from the layers
(the edge's middleware around the API's routers), and its lifespan starts and stops what the
routes share (:class:`service.inference.runtime.Runtime`)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from service import __doc__ as service_doc
from service.api import health, inference_protocol, models, page, predict, read
from service.http.admission import Admission, ConcurrencyLimit, MemoryBudget
from service.http.context import RequestContext
from service.http.fast_path import PredictFastPath
from service.http.openapi import install_openapi
from service.http.responses import install_error_handlers
from service.inference.registry import ModelRegistry
from service.inference.runtime import Runtime
from service.inference.selftest import shipped_selftest_digits
from service.observability.metrics import ServiceMetrics
from service.packages.loading import resolve_device
from service.settings import Settings

logger = logging.getLogger(__name__)

API_VERSION = "1.0.0"


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
    app.include_router(read.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(inference_protocol.router)
    app.include_router(page.router)
    install_error_handlers(app)
    install_openapi(app)
    # Outermost last: RequestContext (arrival, id, log, metrics) -> CORS -> Admission (of the
    # routes that do the work: /predict, /read, /v2/.../infer) -> fast path of POST /predict,
    # or else FastAPI's routes.
    app.add_middleware(PredictFastPath)
    limit, memory = admission_for(settings)
    metrics.watch_admission(lambda: (limit.limit, limit.in_flight, memory.reserved))
    work = [*predict.router.routes, *read.router.routes, *inference_protocol.INFER_ROUTES]
    app.add_middleware(Admission, limit=limit, memory=memory, routes=work)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestContext, metrics=metrics)
    return app


def admission_for(settings: Settings) -> tuple[ConcurrencyLimit, MemoryBudget]:
    """The admission limits the settings ask for (see :mod:`service.http.admission`)."""
    memory = MemoryBudget(
        capacity=settings.body_budget_bytes, max_body_bytes=settings.max_body_bytes
    )
    if settings.max_in_flight:
        return ConcurrencyLimit.fixed(settings.max_in_flight), memory
    limit = ConcurrencyLimit(
        target_s=settings.latency_target_ms / 1000.0,
        minimum=settings.min_in_flight,
        maximum=settings.queue_size + settings.max_batch_size,
        limit=float(settings.initial_in_flight),
    )
    return limit, memory


async def start(settings: Settings, metrics: ServiceMetrics) -> Runtime:
    """Load, verify, warm and self-test every package; fail fast on what a user must fix."""
    settings.check_model_dir()
    torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    digits = shipped_selftest_digits(settings.max_image_pixels) if settings.selftest else []
    registry = ModelRegistry(
        settings,
        device,
        digits,
        on_batch=metrics.observe_batch,
        on_worker_failure=metrics.observe_worker_failure,
    )
    runtime = Runtime(
        settings=settings,
        registry=registry,
        metrics=metrics,
        decode_pool=ThreadPoolExecutor(settings.preprocess_threads, thread_name_prefix="decode"),
    )
    metrics.watch_queues(runtime.queue_readings)
    report = await registry.reload()
    if settings.require_default_model and not registry.default_ready():
        why = next((f.error for f in report.failed if f.name == settings.default_model), None)
        await registry.close()
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
            "models": [m.label for m in registry.served()],
            "failed": [f"{f.name}/{f.version}" for f in registry.failed()],
            "device": str(device),
        },
    )
    return runtime


async def stop(runtime: Runtime) -> None:
    """Refuse new work, answer what was accepted, release threads."""
    runtime.draining = True
    runtime.shutting_down = True
    for task in runtime.background:
        task.cancel()
    await runtime.registry.close()
    runtime.decode_pool.shutdown(wait=False, cancel_futures=True)
    logger.info("service stopped")
