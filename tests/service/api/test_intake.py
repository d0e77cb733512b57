"""service.api.intake: reading request bodies."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.types import Message

from service.api.intake import read_body
from service.errors import ClientGone, PayloadTooLarge

pytestmark = pytest.mark.anyio


def request_sending(
    *messages: Message, headers: list[tuple[bytes, bytes]] | None = None
) -> Request:
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0)

    return Request({"type": "http", "method": "POST", "headers": headers or []}, receive)


async def test_a_body_in_chunks_is_joined() -> None:
    request = request_sending(
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    )
    assert await read_body(request, limit=1024) == b"abcd"


async def test_a_client_leaving_mid_body_is_client_gone_not_a_server_error() -> None:
    request = request_sending(
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.disconnect"},
    )
    with pytest.raises(ClientGone):
        await read_body(request, limit=1024)


async def test_a_body_over_the_limit_is_refused_while_it_streams() -> None:
    request = request_sending(
        {"type": "http.request", "body": b"x" * 600, "more_body": True},
        {"type": "http.request", "body": b"x" * 600, "more_body": False},
    )
    with pytest.raises(PayloadTooLarge):
        await read_body(request, limit=1024)
