"""A request's way through the service, one named step each:
image bytes -> decode (thread pool) -> batch (the model's batcher) -> encode (response).

Routes compose these; nothing here knows about HTTP except how to notice a client that left.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from collections.abc import Awaitable
from functools import partial
from typing import TypeVar

import numpy as np
from starlette.requests import Request

from service import batcher
from service.errors import ServiceError
from service.preprocess import encode_png, preprocess
from service.repository import ServedModel
from service.runtime import Runtime
from service.schemas import EnsemblePrediction, ModelRef, Prediction, Timing

T = TypeVar("T")


class ClientGone(ServiceError):
    """The client disconnected before its answer was ready; nothing is sent back."""

    status = 499
    code = "client_closed_request"


async def decode(runtime: Runtime, data: bytes) -> np.ndarray:
    """Image bytes -> (28, 28) float32 MNIST-style, in the decode thread pool."""
    loop = asyncio.get_running_loop()
    job = partial(preprocess, data, max_pixels=runtime.settings.max_image_pixels)
    return await loop.run_in_executor(runtime.decode_pool, job)


def deadline_for(runtime: Runtime) -> float:
    """The ``time.monotonic()`` after which a still-queued request is dropped with a 504."""
    return time.monotonic() + runtime.settings.request_timeout_ms / 1000.0


def classify(
    model: ServedModel, image: np.ndarray, *, deadline: float
) -> asyncio.Future[batcher.Prediction]:
    """One image into the model's batcher; the future is set when its batch has run."""
    return model.batcher.enqueue(image, deadline=deadline)


def encode(
    model: ServedModel,
    result: batcher.Prediction,
    *,
    uncertain_below: float,
    received_at: float,
    image: np.ndarray | None = None,
) -> Prediction:
    """A batch row of probabilities -> the API's answer."""
    probabilities = [float(p) for p in result.output]
    digit = int(np.argmax(result.output))
    confidence = probabilities[digit]
    return Prediction(
        digit=digit,
        confidence=confidence,
        probabilities=probabilities,
        uncertain=confidence < uncertain_below,
        model=ModelRef(name=model.card.name, version=model.card.version),
        timing_ms=Timing(
            queue=round(result.queue_ms, 3),
            inference=round(result.inference_ms, 3),
            total=round((time.perf_counter() - received_at) * 1000.0, 3),
        ),
        batch_size=result.batch_size,
        image=base64.b64encode(encode_png(image)).decode("ascii") if image is not None else None,
    )


def combine(predictions: list[Prediction]) -> EnsemblePrediction:
    """Every model's answer -> the majority digit (ties go to the more confident side)."""
    votes = Counter(p.digit for p in predictions)
    best = max(
        votes,
        key=lambda d: (votes[d], max(p.confidence for p in predictions if p.digit == d)),
    )
    return EnsemblePrediction(digit=best, agree=len(votes) == 1, predictions=predictions)


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it (so a queued request is
    dropped before inference) and raise :class:`ClientGone`."""
    task = asyncio.ensure_future(work)
    if task.done():
        return task.result()
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if task.done():
        return task.result()
    task.cancel()
    raise ClientGone("client disconnected before the answer was ready")


async def _disconnect(request: Request) -> None:
    # Once the body has been read, the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
