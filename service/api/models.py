"""``/models``: what the service serves, and reloading it without a restart."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.dependencies import AdminKey, ApiKey, RuntimeDep
from service.api.docs import ADMIN_ERRORS, READ_ERRORS
from service.api.schemas import (
    BatchingInfo,
    ModelInfo,
    ModelRef,
    ModelsResponse,
    QueueInfo,
    ReloadResponse,
)
from service.errors import NotFound
from service.inference.registry import FailedPackage, ModelRegistry, ServedModel
from service.inference.runtime import Runtime
from service.packages.card import NAME_PATTERN

router = APIRouter(prefix="/models", tags=["models"])

# /models/{name} would match GET /models/reload as a model named "reload": get_model answers
# it as the reload route would, 405 with Allow: POST.


@router.get("", summary="List every model", responses=READ_ERRORS, dependencies=[ApiKey])
async def list_models(runtime: RuntimeDep) -> ModelsResponse:
    """Every model package found: its card (architecture, parameters, test accuracy,
    calibration, input spec, creation time, sha256), the device it runs on, whether it is the
    default, the batching settings in force, and its queue depth and capacity. Packages that
    failed to load are listed with `status: failed` and the reason."""
    return ModelsResponse(default_model=runtime.settings.default_model, models=_all(runtime))


@router.post(
    "/reload",
    summary="Load new or changed packages",
    responses=ADMIN_ERRORS,
    dependencies=[AdminKey],
)
async def reload_models(runtime: RuntimeDep) -> ReloadResponse:
    """Re-scan the model folder: new and changed packages are loaded, verified (sha256),
    warmed up and self-tested *before* they are swapped in; a package that fails leaves the
    version that was serving in place. Requests already holding a replaced or removed version
    are answered by it; it stops once they are, and its memory is released.

    Takes an admin key (`DIGITS_ADMIN_KEYS`), not a prediction key; with no keys configured
    at all, it is open."""
    report = await runtime.registry.reload()
    return ReloadResponse(
        loaded=[ModelRef(name=n, version=v) for n, v in report.loaded],
        unchanged=[ModelRef(name=n, version=v) for n, v in report.unchanged],
        removed=[ModelRef(name=n, version=v) for n, v in report.removed],
        failed=[_failed_info(f, runtime.settings.default_model) for f in report.failed],
    )


@router.get(
    "/{name}", summary="One model, every version", responses=READ_ERRORS, dependencies=[ApiKey]
)
async def get_model(
    runtime: RuntimeDep,
    name: Annotated[str, Path(description="Model name.", pattern=NAME_PATTERN)],
) -> ModelsResponse:
    """The versions of one model, as in `GET /models`."""
    if name == "reload":  # GET /models/reload: the route is reload's, which takes POST only
        raise StarletteHTTPException(405, "Method Not Allowed", headers={"Allow": "POST"})
    models = [m for m in _all(runtime) if m.name == name]
    if not models:
        raise NotFound(f"no model {name}")
    return ModelsResponse(default_model=runtime.settings.default_model, models=models)


def _all(runtime: Runtime) -> list[ModelInfo]:
    repo = runtime.registry
    infos = [_served_info(m, repo, runtime.settings.default_model) for m in repo.served()]
    infos += [_failed_info(f, runtime.settings.default_model) for f in repo.failed()]
    return sorted(infos, key=lambda i: (i.name, int(i.version)))


def _served_info(model: ServedModel, repo: ModelRegistry, default_model: str) -> ModelInfo:
    card = model.card
    stale = repo.stale_error(model)
    return ModelInfo(
        name=card.name,
        version=card.version,
        status="ready" if model.batcher.is_running else "not_running",
        error=None
        if stale is None
        else f"serving the copy loaded before; its changed files on disk failed: {stale}",
        default=card.name == default_model,
        newest=repo.newest_version(card.name) == card.version,
        architecture=card.architecture,
        description=card.description,
        parameters=card.parameters,
        input=card.input,
        labels=card.labels,
        metrics=card.metrics,
        calibration=card.calibration,
        created_at=card.created_at,
        sha256=card.sha256,
        device=str(model.device),
        batching=BatchingInfo(**model.batching.model_dump()),
        queue=QueueInfo(depth=model.batcher.queue_depth, capacity=model.batcher.queue_capacity),
    )


def _failed_info(failed: FailedPackage, default_model: str) -> ModelInfo:
    return ModelInfo(
        name=failed.name,
        version=failed.version,
        status="failed",
        error=failed.error,
        default=failed.name == default_model,
        newest=False,
    )
