"""service.api.answers: how a request notices its client leaving."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request
from starlette.types import Message

from service.api.answers import unless_client_leaves
from service.errors import ClientGone

pytestmark = pytest.mark.anyio

WAIT_S = 10.0  # upper bound for anything a test waits on; reaching it is a failure


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
    answer = await unless_client_leaves(client.request(), work, watch_after_s=WAIT_S)
    assert answer == 7
    assert client.receive_calls == 0


async def test_a_client_leaving_a_waiting_request_cancels_its_work() -> None:
    client = Client()
    work: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(unless_client_leaves(client.request(), work, watch_after_s=0.0))
    await asyncio.wait_for(client.receiving.wait(), WAIT_S)  # the watch has begun
    client.left.set()
    with pytest.raises(ClientGone):
        await asyncio.wait_for(waiting, WAIT_S)
    assert work.cancelled()  # a queued batcher request is then dropped before inference


async def test_an_answer_that_comes_while_watching_stops_the_watch() -> None:
    client = Client()
    work: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    before = asyncio.all_tasks()
    waiting = asyncio.create_task(unless_client_leaves(client.request(), work, watch_after_s=0.0))
    await asyncio.wait_for(client.receiving.wait(), WAIT_S)
    (watcher,) = asyncio.all_tasks() - before - {waiting}
    work.set_result(3)
    assert await asyncio.wait_for(waiting, WAIT_S) == 3
    await asyncio.wait({watcher}, timeout=WAIT_S)
    assert watcher.cancelled()  # nothing is left waiting on the client


async def test_cancelling_the_caller_cancels_the_work() -> None:
    client = Client()
    work: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(unless_client_leaves(client.request(), work, watch_after_s=0.0))
    await asyncio.wait_for(client.receiving.wait(), WAIT_S)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert work.cancelled()
