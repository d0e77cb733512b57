"""``/predict``: one image, a batch of files, or every model at once."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from service import batcher, pipeline
from service.dependencies import Accepting, ApiKey, RuntimeDep
from service.errors import BadImage, InvalidParameter, ServiceError, Unavailable
from service.intake import image_from_request, uploads_from_multipart
from service.middleware import request_log
from service.modelcard import NAME_PATTERN, VERSION_PATTERN
from service.openapi_docs import ERRORS, IMAGE_BODY, MULTIPART_FILES_BODY
from service.repository import ServedModel
from service.runtime import Runtime
from service.schemas import (
    BatchItem,
    BatchPredictionResponse,
    EnsemblePrediction,
    ErrorDetail,
    Prediction,
)

router = APIRouter(prefix="/predict", tags=["predict"], dependencies=[ApiKey, Accepting])

ALL_MODELS = "all"

ModelQuery = Annotated[
    str | None,
    Query(
        description="Model name (default: the service's default model), or `all` for every "
        "model's answer.",
        pattern=f"({NAME_PATTERN})|(^{ALL_MODELS}$)",
        examples=["default"],
    ),
]
VersionQuery = Annotated[
    str | None,
    Query(description="Model version (default: the newest).", pattern=VERSION_PATTERN),
]
ExplainQuery = Annotated[
    bool, Query(description="Also return the 28x28 image the model saw, as base64 PNG.")
]


def _json(body: Any) -> Response:
    # The models are built and validated here; dumping once to bytes skips FastAPI's second
    # validation and encoding pass on the hot path.
    return Response(body.model_dump_json(exclude_none=True), media_type="application/json")


@router.post(
    "",
    summary="Recognise the digit in one image",
    response_model=Prediction | EnsemblePrediction,
    responses=ERRORS,
    openapi_extra=IMAGE_BODY,
)
async def predict(
    request: Request,
    runtime: RuntimeDep,
    model: ModelQuery = None,
    version: VersionQuery = None,
    explain: ExplainQuery = False,
) -> Response:
    """Send one picture of a digit: a phone photo, a scan, a canvas export or an MNIST image.

    The body is the image itself (`image/png`, `image/jpeg`, `image/webp`, `image/bmp`,
    `image/tiff`, `image/gif`, or `application/octet-stream` — the format is sniffed from the
    bytes, and curl's default `application/x-www-form-urlencoded` is read the same way), or
    `multipart/form-data` with the image in a field `file`, or JSON `{"image": "<base64>"}`.
    The picture is cleaned up the way MNIST was made (grey, white ink on black, cropped,
    scaled to 20 px, centred by mass in 28x28) and classified.

    The answer holds the digit, its calibrated confidence, all ten probabilities, whether the
    confidence is under the service's threshold (`uncertain`: send it to a person), which model
    answered, and where the time went. With `model=all` every model answers and the reply says
    whether they agree.
    """
    if model == ALL_MODELS:
        if version is not None:
            raise InvalidParameter("version cannot be combined with model=all")
        return _json(await _predict_all(request, runtime, explain))
    return await answer_one(request, runtime, model, version, explain=explain)


async def answer_one(
    request: Request,
    runtime: Runtime,
    model: str | None,
    version: str | None,
    *,
    explain: bool = False,
) -> Response:
    """One image, one model: body -> decode -> batch -> encode. Both this route and the fast
    path (:mod:`service.fast_path`) answer with it."""
    received_at = time.perf_counter()
    deadline = pipeline.deadline_for(runtime)
    served = runtime.repository.get(model, version)
    request_log(request.scope)["model"] = f"{served.card.name}/{served.card.version}"
    data = await image_from_request(request, runtime.settings.max_body_bytes)
    image = await pipeline.decode(runtime, data)
    result = await pipeline.unless_client_leaves(
        request,
        pipeline.classify(served, image, deadline=deadline),
    )
    request_log(request.scope)["batch_size"] = result.batch_size
    return _json(_answer(runtime, served, result, received_at, image if explain else None))


async def _predict_all(request: Request, runtime: Runtime, explain: bool) -> EnsemblePrediction:
    received_at = time.perf_counter()
    deadline = pipeline.deadline_for(runtime)
    models = [runtime.repository.get(n, None) for n in _served_names(runtime)]
    if not models:
        raise Unavailable("no model is serving", code="no_models")
    request_log(request.scope)["model"] = ALL_MODELS
    data = await image_from_request(request, runtime.settings.max_body_bytes)
    image = await pipeline.decode(runtime, data)
    results = await pipeline.unless_client_leaves(
        request,
        asyncio.gather(*(pipeline.classify(m, image, deadline=deadline) for m in models)),
    )
    shown = image if explain else None
    return pipeline.combine(
        [_answer(runtime, m, r, received_at, shown) for m, r in zip(models, results, strict=True)]
    )


def _served_names(runtime: Runtime) -> list[str]:
    return sorted({m.card.name for m in runtime.repository.served()})


@router.post(
    "/batch",
    summary="Recognise the digits in several files",
    response_model=BatchPredictionResponse,
    responses=ERRORS,
    openapi_extra=MULTIPART_FILES_BODY,
)
async def predict_batch(
    request: Request,
    runtime: RuntimeDep,
    model: Annotated[
        str | None,
        Query(description="Model name (default: the default model).", pattern=NAME_PATTERN),
    ] = None,
    version: VersionQuery = None,
    explain: ExplainQuery = False,
) -> Response:
    """Send several images as `multipart/form-data`, each in a field named `files`.

    The reply lists one entry per file, in the order sent: its prediction, or its own error
    (a file that is not an image fails alone; the others are still answered). The request
    as a whole fails only when it is malformed, too large, or names an unknown model.
    """
    received_at = time.perf_counter()
    deadline = pipeline.deadline_for(runtime)
    served = runtime.repository.get(model, version)
    request_log(request.scope)["model"] = f"{served.card.name}/{served.card.version}"
    settings = runtime.settings
    uploads = await uploads_from_multipart(
        request, settings.max_body_bytes, field="files", max_files=settings.max_batch_files
    )
    if not uploads:
        raise BadImage("multipart body has no field 'files' holding an image", code="no_file")

    async def one(data: bytes) -> Prediction:
        if not data:
            raise BadImage("the image is empty", code="empty_body")
        image = await pipeline.decode(runtime, data)
        result = await pipeline.classify(served, image, deadline=deadline)
        return _answer(runtime, served, result, received_at, image if explain else None)

    outcomes = await pipeline.unless_client_leaves(
        request,
        asyncio.gather(*(one(u.data) for u in uploads), return_exceptions=True),
    )
    items: list[BatchItem] = []
    for upload, outcome in zip(uploads, outcomes, strict=True):
        if isinstance(outcome, ServiceError):
            items.append(BatchItem(filename=upload.filename, error=_detail(outcome)))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            items.append(BatchItem(filename=upload.filename, prediction=outcome))
    request_log(request.scope)["files"] = len(items)
    return _json(BatchPredictionResponse(results=items))


def _answer(
    runtime: Runtime,
    model: ServedModel,
    result: batcher.Prediction,
    received_at: float,
    image: np.ndarray | None,
) -> Prediction:
    """One batch row -> the API's answer, with the service's uncertainty threshold."""
    return pipeline.encode(
        model,
        result,
        uncertain_below=runtime.settings.uncertain_below,
        received_at=received_at,
        image=image,
    )


def _detail(error: ServiceError) -> ErrorDetail:
    return ErrorDetail(status=error.status, code=error.code, message=error.message)
