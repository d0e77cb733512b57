"""service.pipeline: where images are decoded, and how a request notices its client leaving."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
import pytest
import torch
from PIL import Image
from starlette.requests import Request
from starlette.types import Message

from service import pipeline
from service.errors import ClientGone
from service.metrics import ServiceMetrics
from service.repository import ModelRepository
from service.runtime import Runtime
from service.settings import Settings
from tests.service.conftest import digit_png

pytestmark = pytest.mark.anyio

WAIT_S = 10.0  # upper bound for anything a test waits on; reaching it is a failure


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
        repository=ModelRepository(settings, torch.device("cpu"), []),
        metrics=ServiceMetrics(),
        decode_pool=pool,
    )


async def test_tiny_images_are_decoded_on_the_event_loop() -> None:
    async with closed_pool_runtime() as runtime:
        image = await pipeline.decode(runtime, digit_png(3))
    assert image.shape == (28, 28) and image.dtype == np.float32


async def test_larger_images_go_to_the_decode_pool() -> None:
    async with closed_pool_runtime() as runtime:
        with pytest.raises(RuntimeError, match="shutdown"):
            await pipeline.decode(runtime, png(280, 280, "RGBA"))


# ---- noticing a client that leaves --------------------------------------------------------


class Client:
    """The ASGI receive side of a request whose body has been read: the next message is the
    disconnect, sent when the test says the client leaves."""

    def __init__(self) -> None:
        self.left = asyncio.Event()
        self.receiving = asyncio.Event()
        self.receive_calls = 0

    async def receive(self) -> Message:
        self.receive_calls += 1
        self.receiving.set()
        await self.left.wait()
        return {"type": "http.disconnect"}

    def request(self) -> Request:
        return Request({"type": "http", "method": "POST", "headers": []}, self.receive)


async def test_a_quick_answer_is_returned_without_watching_the_client() -> None:
    client = Client()
    work: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(work.set_result, 7)
    answer = await pipeline.unless_client_leaves(client.request(), work, watch_after_s=WAIT_S)
    assert answer == 7
    assert client.receive_calls == 0


async def test_a_client_leaving_a_waiting_request_cancels_its_work() -> None:
    client = Client()
    work: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(
        pipeline.unless_client_leaves(client.request(), work, watch_after_s=0.0)
    )
    await asyncio.wait_for(client.receiving.wait(), WAIT_S)  # the watch has begun
    client.left.set()
    with pytest.raises(ClientGone):
        await asyncio.wait_for(waiting, WAIT_S)
    assert work.cancelled()  # a queued batcher request is then dropped before inference


async def test_an_answer_that_comes_while_watching_stops_the_watch() -> None:
    client = Client()
    work: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    before = asyncio.all_tasks()
    waiting = asyncio.create_task(
        pipeline.unless_client_leaves(client.request(), work, watch_after_s=0.0)
    )
    await asyncio.wait_for(client.receiving.wait(), WAIT_S)
    (watcher,) = asyncio.all_tasks() - before - {waiting}
    work.set_result(3)
    assert await asyncio.wait_for(waiting, WAIT_S) == 3
    await asyncio.wait({watcher}, timeout=WAIT_S)
    assert watcher.cancelled()  # nothing is left waiting on the client


async def test_cancelling_the_caller_cancels_the_work() -> None:
    client = Client()
    work: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(
        pipeline.unless_client_leaves(client.request(), work, watch_after_s=0.0)
    )
    await asyncio.wait_for(client.receiving.wait(), WAIT_S)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert work.cancelled()
