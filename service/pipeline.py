"""A request's way through the service, one named step each:
image bytes -> decode (tiny images on the event loop, others in the decode thread pool)
-> batch (the model's batcher) -> encode (response).

Routes compose these; nothing here knows about HTTP except how to notice a client that left.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections import Counter
from collections.abc import Awaitable
from functools import partial
from typing import TypeVar

import numpy as np
from starlette.requests import Request

from service import batcher
from service.errors import ClientGone
from service.imaging import encode_png, preprocess
from service.repository import ServedModel
from service.runtime import Runtime
from service.schemas import EnsemblePrediction, ModelRef, Prediction, Timing

T = TypeVar("T")

#: Images preprocessed on the event loop rather than in the decode pool: see
#: :func:`is_tiny_image`. 28x28 is MNIST's size; 4 KiB holds any plain 28x28 PNG, even RGBA.
TINY_IMAGE_PIXELS = 28 * 28
TINY_IMAGE_BYTES = 4096
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_SIZE = struct.Struct(">II")  # IHDR width and height, after signature, length and type
_PNG_SIZE_END = 24

#: A request still waiting for its answer this long starts watching for its client leaving.
#: Shorter waits are cheaper to finish than to watch (a watcher is a task per request).
WATCH_CLIENT_AFTER_S = 0.05


async def decode(runtime: Runtime, data: bytes) -> np.ndarray:
    """Image bytes -> (28, 28) float32 MNIST-style: tiny images on the event loop, the rest
    in the decode thread pool."""
    max_pixels = runtime.settings.max_image_pixels
    if is_tiny_image(data):
        return preprocess(data, max_pixels=max_pixels)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        runtime.decode_pool, partial(preprocess, data, max_pixels=max_pixels)
    )


def is_tiny_image(data: bytes) -> bool:
    """Whether ``data`` is a PNG of at most :data:`TINY_IMAGE_PIXELS` pixels (by its header)
    and :data:`TINY_IMAGE_BYTES` bytes: one that costs less to preprocess on the event loop
    than to hand to the decode pool.

    An exact-MNIST 28x28 PNG preprocesses in ~0.1 ms and one of another layout in ~0.9 ms
    (2026-12-01, BENCHMARKS.md); a hop to a pool thread costs about as much as the former,
    and a pool thread competes with the loop for the GIL at every imaging call. Both bounds
    are needed: the header bounds the pixels, the byte count bounds everything else a PNG
    may carry (text and metadata chunks).
    """
    if len(data) > TINY_IMAGE_BYTES or len(data) < _PNG_SIZE_END:
        return False
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return False
    width, height = _PNG_SIZE.unpack_from(data, 16)
    pixels: int = width * height
    return 0 < pixels <= TINY_IMAGE_PIXELS


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
    probabilities: list[float] = result.output.tolist()
    digit = probabilities.index(max(probabilities))  # the first of equal maxima, as argmax
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
