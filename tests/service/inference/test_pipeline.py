"""service.inference.pipeline: where images are decoded, and the deadline."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
import pytest
import torch
from PIL import Image

from service.inference import pipeline
from service.inference.registry import ModelRegistry
from service.inference.runtime import Runtime
from service.observability.metrics import ServiceMetrics
from service.settings import Settings
from tests.service.conftest import digit_png

pytestmark = pytest.mark.anyio


def png(width: int, height: int, mode: str = "L", **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG", **save)
    return buffer.getvalue()


# ---- which images are decoded on the event loop -----------------------------------------


def test_an_mnist_png_is_tiny() -> None:
    assert pipeline.is_tiny_image(digit_png(7))
    assert pipeline.is_tiny_image(png(28, 28, "RGBA"))


@pytest.mark.parametrize(
    "data",
    [
        png(29, 28),  # one column too many
        png(280, 280, "RGBA"),  # a canvas export
        b"\xff\xd8\xff\xe0" + bytes(300),  # a JPEG signature: only PNG headers are read
        png(28, 28)[:20],  # truncated before the size
        b"",
    ],
    ids=["29x28", "canvas", "jpeg", "truncated", "empty"],
)
def test_other_images_are_not_tiny(data: bytes) -> None:
    assert not pipeline.is_tiny_image(data)


def test_a_28x28_png_carrying_large_chunks_is_not_tiny() -> None:
    # Text chunks are decompressed by the decoder: their size, not the pixels, sets the cost.
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("comment", "x" * pipeline.TINY_IMAGE_BYTES)
    assert not pipeline.is_tiny_image(png(28, 28, pnginfo=info))


@asynccontextmanager
async def closed_pool_runtime() -> AsyncIterator[Runtime]:
    """A runtime whose decode pool accepts no work: whatever decodes, decoded on the loop."""
    settings = Settings()
    pool = ThreadPoolExecutor(1)
    pool.shutdown()
    yield Runtime(
        settings=settings,
        registry=ModelRegistry(settings, torch.device("cpu"), []),
        metrics=ServiceMetrics(),
        decode_pool=pool,
    )


async def test_tiny_images_are_decoded_on_the_event_loop() -> None:
    async with closed_pool_runtime() as runtime:
        found = await pipeline.decode(runtime, digit_png(3))
    assert found.image.shape == (28, 28) and found.image.dtype == np.float32
    assert found.digits_seen == 1


async def test_larger_images_go_to_the_decode_pool() -> None:
    async with closed_pool_runtime() as runtime:
        with pytest.raises(RuntimeError, match="shutdown"):
            await pipeline.decode(runtime, png(280, 280, "RGBA"))


async def test_a_number_is_read_in_the_decode_pool_even_when_tiny() -> None:
    async with closed_pool_runtime() as runtime:
        with pytest.raises(RuntimeError, match="shutdown"):
            await pipeline.read_candidates(runtime, digit_png(3))


def test_the_deadline_counts_from_arrival() -> None:
    runtime = Runtime(
        settings=Settings(request_timeout_ms=250),
        registry=ModelRegistry(Settings(), torch.device("cpu"), []),
        metrics=ServiceMetrics(),
        decode_pool=ThreadPoolExecutor(1),
    )
    assert pipeline.deadline_for(runtime, arrived_at=100.0) == pytest.approx(100.25)
