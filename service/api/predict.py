"""``/predict``: one image, a batch of files, or every model at once."""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from service.api.answers import (
    arrived_at,
    combine,
    json_response,
    prediction,
    record_model,
    unless_client_leaves,
)
from service.api.dependencies import Accepting, ApiKey, RuntimeDep
from service.api.docs import ERRORS, IMAGE_BODY, MULTIPART_FILES_BODY
from service.api.intake import image_from_request, uploads_from_multipart
from service.api.schemas import (
    BatchItem,
    BatchPredictionResponse,
    EnsemblePrediction,
    ErrorDetail,
    Prediction,
)
from service.errors import BadImage, InvalidParameter, ServiceError, Unavailable
from service.imaging import FoundDigit
from service.inference import pipeline
from service.inference.batcher import BatchResult
from service.inference.registry import ServedModel
from service.inference.runtime import Runtime
from service.observability.logs import request_record
from service.packages.card import NAME_PATTERN, VERSION_PATTERN

router = APIRouter(prefix="/predict", tags=["predict"], dependencies=[ApiKey, Accepting])

ALL_MODELS = "all"

_MODEL = "Model name (default: the service's default model)"
_VERSION = "Model version (default: the newest)."
_EXPLAIN = "Also return the 28x28 image the model saw, as base64 PNG."


class PredictQuery(BaseModel):
    """The query of ``POST /predict``; the fast path validates a query with it too."""

    model_config = ConfigDict(frozen=True)

    model: str | None = Field(
        default=None,
        description=f"{_MODEL}, or `all` for every model's answer.",
        pattern=f"({NAME_PATTERN})|(^{ALL_MODELS}$)",
        examples=["default"],
    )
    version: str | None = Field(default=None, description=_VERSION, pattern=VERSION_PATTERN)
    explain: bool = Field(default=False, description=_EXPLAIN)


@router.post(
    "",
    summary="Recognise the digit in one image",
    response_model=Prediction | EnsemblePrediction,
    responses=ERRORS,
    openapi_extra=IMAGE_BODY,
)
async def predict(
    request: Request, runtime: RuntimeDep, query: Annotated[PredictQuery, Query()]
) -> Response:
    """Send one picture of a digit: a phone photo, a scan, a canvas export or an MNIST image.

    The body is the image itself, as any of the image types listed below or
    `application/octet-stream` (the format is sniffed from the bytes, and curl's default
    `application/x-www-form-urlencoded` is read the same way), or `multipart/form-data` with
    the image in a field `file`, or JSON `{"image": "<base64>"}`. The picture is cleaned up
    the way MNIST was made (grey, white ink on black, cropped, scaled to 20 px, centred by
    mass in 28x28) and classified.

    The answer holds the digit, its calibrated confidence, all ten probabilities, whether the
    confidence is under the service's threshold (`uncertain`: send it to a person), which model
    answered, and where the time went. With `model=all` every model answers and the reply says
    whether they agree.

    One digit per picture: in a picture of several (a ZIP code, an amount) the largest is
    answered, and `digits_seen` says how many there were. `POST /read` reads them all.
    """
    if query.model == ALL_MODELS:
        if query.version is not None:
            raise InvalidParameter("version cannot be combined with model=all")
        return json_response(await _predict_all(request, runtime, query.explain))
    return json_response(await _predict_one(request, runtime, query))


async def _predict_one(request: Request, runtime: Runtime, query: PredictQuery) -> Prediction:
    """One image, one model: body -> decode -> batch -> answer."""
    received_at = time.perf_counter()
    deadline = pipeline.deadline_for(runtime, arrived_at(request))
    with runtime.registry.lease(query.model, query.version) as served:
        record_model(request, served)
        data = await image_from_request(request, runtime.settings.max_body_bytes)
        found = await pipeline.decode(runtime, data)
        result = await unless_client_leaves(
            request, served.batcher.enqueue(found.image, deadline=deadline)
        )
        request_record(request.scope)["batch_size"] = result.batch_size
        return _answer(runtime, served, result, received_at, found, query.explain)


async def _predict_all(request: Request, runtime: Runtime, explain: bool) -> EnsemblePrediction:
    received_at = time.perf_counter()
    deadline = pipeline.deadline_for(runtime, arrived_at(request))
    names = sorted({m.card.name for m in runtime.registry.served()})
    if not names:
        raise Unavailable("no model is serving", code="no_models")
    with ExitStack() as leases:
        models = [leases.enter_context(runtime.registry.lease(n, None)) for n in names]
        request_record(request.scope)["model"] = ALL_MODELS
        data = await image_from_request(request, runtime.settings.max_body_bytes)
        found = await pipeline.decode(runtime, data)
        results = await unless_client_leaves(
            request,
            asyncio.gather(*(m.batcher.enqueue(found.image, deadline=deadline) for m in models)),
        )
        return combine(
            [
                _answer(runtime, m, r, received_at, found, explain)
                for m, r in zip(models, results, strict=True)
            ]
        )


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
        Query(description=f"{_MODEL}.", pattern=NAME_PATTERN),
    ] = None,
    version: Annotated[str | None, Query(description=_VERSION, pattern=VERSION_PATTERN)] = None,
    explain: Annotated[bool, Query(description=_EXPLAIN)] = False,
) -> Response:
    """Send several images as `multipart/form-data`, each in a field named `files`.

    The reply lists one entry per file, in the order sent: its prediction, or its own error
    (a file that is not an image fails alone; the others are still answered). The request
    as a whole fails only when it is malformed, too large, or names an unknown model.
    """
    received_at = time.perf_counter()
    deadline = pipeline.deadline_for(runtime, arrived_at(request))
    settings = runtime.settings
    with runtime.registry.lease(model, version) as served:
        record_model(request, served)
        uploads = await uploads_from_multipart(
            request, settings.max_body_bytes, field="files", max_files=settings.max_batch_files
        )
        if not uploads:
            raise BadImage("multipart body has no field 'files' holding an image", code="no_file")

        async def one(data: bytes) -> Prediction:
            if not data:
                raise BadImage("the image is empty", code="empty_body")
            found = await pipeline.decode(runtime, data)
            result = await served.batcher.enqueue(found.image, deadline=deadline)
            return _answer(runtime, served, result, received_at, found, explain)

        outcomes = await unless_client_leaves(
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
    request_record(request.scope)["files"] = len(items)
    return json_response(BatchPredictionResponse(results=items))


def _answer(
    runtime: Runtime,
    served: ServedModel,
    result: BatchResult,
    received_at: float,
    found: FoundDigit,
    explain: bool,
) -> Prediction:
    """A batch row -> the answer, with the service's uncertainty threshold."""
    return prediction(
        served,
        result,
        uncertain_below=runtime.settings.uncertain_below,
        received_at=received_at,
        digits_seen=found.digits_seen,
        image=found.image if explain else None,
    )


def _detail(error: ServiceError) -> ErrorDetail:
    return ErrorDetail(status=error.status, code=error.code, message=error.message)
