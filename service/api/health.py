"""Liveness, readiness and metrics: open to probes and scrapers (no API key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from service.api.dependencies import RuntimeDep
from service.api.schemas import Health, Readiness
from service.inference.runtime import Runtime
from service.observability.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Alive")
async def healthz() -> Health:
    """200 while the process answers at all; a liveness probe."""
    return Health()


@router.get(
    "/readyz",
    summary="Ready to serve",
    responses={503: {"model": Readiness, "description": "Not ready: loading, or shutting down."}},
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """200 once every model package has been loaded, warmed up and self-tested and the default
    model serves; 503 before that, from the moment shutdown begins (SIGTERM: during the drain
    delay the service still answers requests, so load balancers can stop sending), when the
    default model failed, or while its batching worker is not running.
    Packages that failed (and are not the default) are listed as `failed` but do not hold
    readiness back: the others serve."""
    repo = runtime.registry
    states: dict[str, str] = {
        m.label: "ready" if m.batcher.is_running else "not_running" for m in repo.served()
    }
    states |= {f"{f.name}/{f.version}": "failed" for f in repo.failed()}
    reason = not_ready_because(runtime)
    body = Readiness(ready=reason is None, models=states, reason=reason)
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=200 if reason is None else 503
    )


def not_ready_because(runtime: Runtime) -> str | None:
    """Why the service is not ready (``None``: it is), for ``/readyz`` and
    ``/v2/health/ready``."""
    repo = runtime.registry
    if runtime.draining or runtime.shutting_down:
        return "shutting down"
    if not repo.loaded_once:
        return "loading models"
    if not repo.default_ready():
        return f"default model {runtime.settings.default_model!r} is not serving"
    return None


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    """Requests by route, model and status; latency, queue wait, inference time and batch size
    histograms; queue depth and capacity per model; requests dropped before inference."""
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)
