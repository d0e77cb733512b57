"""What the prediction routes share: a batch row -> the API's answer, every model's answers
-> the ensemble's, JSON out, when the request arrived and which model answers it, and noticing
a client that left while its request waited."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from collections.abc import Awaitable
from typing import TypeVar

import numpy as np
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.requests import Request

from service.api.schemas import EnsemblePrediction, ModelRef, Prediction, Timing
from service.errors import ClientGone
from service.imaging import encode_png
from service.inference.batcher import BatchResult
from service.inference.registry import ServedModel
from service.observability.logs import request_record

T = TypeVar("T")

#: A request still waiting for its answer this long starts watching for its client leaving.
#: Shorter waits are cheaper to finish than to watch (a watcher is a task per request).
WATCH_CLIENT_AFTER_S = 0.05


def arrived_at(request: Request) -> float:
    """When the edge received the request (``time.monotonic()``), else now."""
    arrived: float | None = request.scope.get("state", {}).get("arrived_at")
    return arrived if arrived is not None else time.monotonic()


def record_model(request: Request, served: ServedModel) -> None:
    """Name the model answering in the request's access-log record."""
    record = request_record(request.scope)
    record["model"] = served.card.name
    record["version"] = served.card.version


def json_response(body: BaseModel) -> Response:
    # The models are built and validated here; dumping once to bytes skips FastAPI's second
    # validation and encoding pass on the hot path.
    return Response(body.model_dump_json(exclude_none=True), media_type="application/json")


def prediction(
    model: ServedModel,
    result: BatchResult,
    *,
    uncertain_below: float,
    received_at: float,
    digits_seen: int = 1,
    image: np.ndarray | None = None,
) -> Prediction:
    """A batch row of probabilities -> the API's answer (``image``: the 28x28 the model saw,
    for ``explain``)."""
    probabilities: list[float] = result.output.tolist()
    digit = probabilities.index(max(probabilities))  # the first of equal maxima, as argmax
    confidence = probabilities[digit]
    return Prediction(
        digit=digit,
        confidence=confidence,
        probabilities=probabilities,
        uncertain=confidence < uncertain_below,
        model=ModelRef(name=model.card.name, version=model.card.version),
        timing_ms=timing(result, received_at),
        batch_size=result.batch_size,
        digits_seen=digits_seen,
        image=base64.b64encode(encode_png(image)).decode("ascii") if image is not None else None,
    )


def timing(result: BatchResult, received_at: float) -> Timing:
    """Where a request's time went: its batch's queue wait and forward pass, and the total
    since ``received_at`` (``time.perf_counter()``), in milliseconds."""
    return Timing(
        queue=round(result.queue_ms, 3),
        inference=round(result.inference_ms, 3),
        total=round((time.perf_counter() - received_at) * 1000.0, 3),
    )


def combine(predictions: list[Prediction]) -> EnsemblePrediction:
    """Every model's answer -> the majority digit (ties go to the more confident side)."""
    votes = Counter(p.digit for p in predictions)
    best = max(
        votes,
        key=lambda d: (votes[d], max(p.confidence for p in predictions if p.digit == d)),
    )
    return EnsemblePrediction(digit=best, agree=len(votes) == 1, predictions=predictions)


async def unless_client_leaves(
    request: Request, work: Awaitable[T], *, watch_after_s: float = WATCH_CLIENT_AFTER_S
) -> T:
    """Await ``work``; if the client disconnects first, cancel it (so a queued request is
    dropped before inference) and raise :class:`ClientGone`.

    Watching costs a task per request, so it starts only once the request has waited
    ``watch_after_s``: answers that come sooner are cheaper to finish than to watch, and a
    queue long enough for clients to give up is exactly where the watch begins.
    """
    future = asyncio.ensure_future(work)
    if future.done():
        return future.result()
    loop = asyncio.get_running_loop()
    watcher: asyncio.Task[None] | None = None

    def watch() -> None:
        nonlocal watcher
        watcher = loop.create_task(_disconnect(request))
        watcher.add_done_callback(lambda _: future.cancel())

    timer = loop.call_later(watch_after_s, watch)
    try:
        return await future
    except asyncio.CancelledError:
        if watcher is not None and watcher.done() and not watcher.cancelled():
            raise ClientGone("client disconnected before the answer was ready") from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def _disconnect(request: Request) -> None:
    # Once the body has been read, the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
