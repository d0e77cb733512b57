"""``/read``: the whole number in one picture (a ZIP code, an amount, a meter reading)."""

from __future__ import annotations

import base64
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from service.api.answers import (
    arrived_at,
    json_response,
    record_model,
    timing,
    unless_client_leaves,
)
from service.api.dependencies import Accepting, ApiKey, RuntimeDep
from service.api.docs import ERRORS, IMAGE_BODY
from service.api.intake import image_from_request
from service.api.schemas import Box, ModelRef, ReadDigit, Reading
from service.errors import InvalidParameter
from service.imaging import encode_png
from service.imaging import reading as numbers
from service.inference import pipeline
from service.inference.batcher import BatchResult
from service.inference.registry import ServedModel
from service.observability.logs import request_record
from service.packages.card import NAME_PATTERN, VERSION_PATTERN

router = APIRouter(prefix="/read", tags=["read"], dependencies=[ApiKey, Accepting])


class ReadQuery(BaseModel):
    """The query of ``POST /read``."""

    model_config = ConfigDict(frozen=True)

    model: str | None = Field(
        default=None,
        description="Model name (default: the service's default model).",
        pattern=NAME_PATTERN,
        examples=["default"],
    )
    version: str | None = Field(
        default=None, description="Model version (default: the newest).", pattern=VERSION_PATTERN
    )
    length: int | None = Field(
        default=None,
        ge=1,
        description="The number of digits expected (e.g. 5 for a ZIP code): the best reading "
        "with exactly that many. If no reading has that many, the best of any length is "
        "returned with confidence 0 (and so uncertain). At most the service's "
        "DIGITS_MAX_READ_DIGITS (default 32).",
        examples=[5],
    )
    explain: bool = Field(
        default=False, description="Also return each digit's 28x28 image, as base64 PNG."
    )


@router.post(
    "",
    summary="Read the whole number in one image",
    response_model=Reading,
    responses=ERRORS,
    openapi_extra=IMAGE_BODY,
)
async def read(
    request: Request, runtime: RuntimeDep, query: Annotated[ReadQuery, Query()]
) -> Response:
    """Send one picture of a handwritten number: digits spaced, tight or touching, on a form's
    baseline, in a box or a comb of cells, on a canvas, a scan or a phone photo.

    The body is sent as to `POST /predict` (raw image bytes, multipart field `file`, or JSON
    `{"image": "<base64>"}`), with the same limits. The ink is split into candidate digits
    (touching digits are cut along the paths that cross the least ink, printed form lines are
    erased), every candidate is laid out as MNIST's digits were and classified in one batch,
    and the reading the model and the shapes agree on best is returned: `number` as a string
    (leading zeros kept), each digit with its confidence, probabilities and box (in pixels of
    the image as sent, after its EXIF orientation).

    `confidence` is the lower of the weakest digit's and that of the most doubtful split of
    the ink (the chosen split against the best one reading another number);
    `uncertain` is true below the service's threshold, as for `/predict`. A picture with no
    digit is 400 `no_digit`; more than `DIGITS_MAX_READ_DIGITS` digits (or marks) is 400
    `too_many_digits`.
    """
    settings = runtime.settings
    if query.length is not None and query.length > settings.max_read_digits:
        raise InvalidParameter(f"query.length: at most {settings.max_read_digits} digits are read")
    received_at = time.perf_counter()
    deadline = pipeline.deadline_for(runtime, arrived_at(request))
    with runtime.registry.lease(query.model, query.version) as served:
        record_model(request, served)
        data = await image_from_request(request, settings.max_body_bytes)
        candidates = await pipeline.read_candidates(runtime, data)
        result = await unless_client_leaves(
            request, served.batcher.enqueue_rows(candidates.images, deadline=deadline)
        )
        found = numbers.choose_reading(candidates, result.output, length=query.length)
        record = request_record(request.scope)
        record["batch_size"] = result.batch_size
        record["digits"] = len(found.digits)
        uncertain = found.confidence < settings.uncertain_below
        return json_response(
            _answer(served, result, found, candidates, received_at, uncertain, query.explain)
        )


def _answer(
    served: ServedModel,
    result: BatchResult,
    found: numbers.Reading,
    candidates: numbers.Candidates,
    received_at: float,
    uncertain: bool,
    explain: bool,
) -> Reading:
    digits = [
        ReadDigit(
            digit=d.digit,
            confidence=d.confidence,
            probabilities=d.probabilities.tolist(),
            box=Box(x=d.box[0], y=d.box[1], width=d.box[2], height=d.box[3]),
            image=_png(candidates, d.candidate) if explain else None,
        )
        for d in found.digits
    ]
    return Reading(
        number=found.number,
        confidence=found.confidence,
        uncertain=uncertain,
        digits=digits,
        model=ModelRef(name=served.card.name, version=served.card.version),
        timing_ms=timing(result, received_at),
        batch_size=result.batch_size,
        candidates=len(candidates.spans),
    )


def _png(candidates: numbers.Candidates, index: int) -> str:
    return base64.b64encode(encode_png(candidates.images[index])).decode("ascii")
