"""A request's way from image bytes to the model's queue: decode (tiny images on the event
loop, others in the decode thread pool; a number's candidate digits always in the pool),
within a deadline counted from the request's arrival. The API layer reads the body before,
enqueues the image on the model's batcher (:meth:`service.inference.batcher.Batcher.enqueue`,
``enqueue_rows`` for a number's candidates) and turns the rows into an answer after.
"""

from __future__ import annotations

import asyncio
import struct
from functools import partial

from service.imaging import FoundDigit, find_digit
from service.imaging.reading import Candidates, find_candidates
from service.inference.runtime import Runtime

#: Images preprocessed on the event loop rather than in the decode pool: see
#: :func:`is_tiny_image`. 28x28 is MNIST's size; 4 KiB holds any plain 28x28 PNG, even RGBA.
TINY_IMAGE_PIXELS = 28 * 28
TINY_IMAGE_BYTES = 4096
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_SIZE = struct.Struct(">II")  # IHDR width and height, after signature, length and type
_PNG_SIZE_END = 24


async def decode(runtime: Runtime, data: bytes) -> FoundDigit:
    """Image bytes -> the (28, 28) float32 MNIST-style digit, and how many digits the picture
    seemed to hold: tiny images on the event loop, the rest in the decode thread pool."""
    max_pixels = runtime.settings.max_image_pixels
    if is_tiny_image(data):
        return find_digit(data, max_pixels=max_pixels)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        runtime.decode_pool, partial(find_digit, data, max_pixels=max_pixels)
    )


async def read_candidates(runtime: Runtime, data: bytes) -> Candidates:
    """Image bytes -> the candidate digits of the number in them, in the decode thread pool
    (a number's segmentation is several digits' work: never on the event loop)."""
    settings = runtime.settings
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        runtime.decode_pool,
        partial(
            find_candidates,
            data,
            max_pixels=settings.max_image_pixels,
            max_digits=settings.max_read_digits,
        ),
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


def deadline_for(runtime: Runtime, arrived_at: float) -> float:
    """The ``time.monotonic()`` after which a request that arrived at ``arrived_at`` (also
    ``time.monotonic()``) is no longer run: a 504 instead."""
    return arrived_at + runtime.settings.request_timeout_ms / 1000.0
