"""The fast path of POST /predict: which requests take it, and that they get exactly what
the FastAPI route gives (answers, errors, headers, metrics, log line)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from service.fast_path import PredictFastPath, fast_path_query
from tests.service.conftest import digit_png, running_app
from tests.service.test_app import KEY, assert_error

pytestmark = pytest.mark.anyio


def scope(
    query: bytes = b"",
    content_type: bytes | None = b"image/png",
    method: str = "POST",
    path: str = "/predict",
) -> dict[str, Any]:
    headers = [(b"host", b"test")]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": headers,
    }


@pytest.mark.parametrize(
    ("query", "content_type", "expected"),
    [
        (b"", b"image/png", (None, None)),
        (b"", None, (None, None)),
        (b"", b"application/octet-stream", (None, None)),
        (b"", b"application/x-www-form-urlencoded", (None, None)),
        (b"", b"Image/JPEG; q=1", (None, None)),
        (b"model=lenet5", b"image/png", ("lenet5", None)),
        (b"model=lenet5&version=12", b"image/png", ("lenet5", "12")),
        (b"version=1", b"image/webp", (None, "1")),
    ],
)
def test_plain_requests_take_the_fast_path(
    query: bytes, content_type: bytes | None, expected: tuple[str | None, str | None]
) -> None:
    assert fast_path_query(scope(query, content_type)) == expected


@pytest.mark.parametrize(
    ("query", "content_type"),
    [
        (b"", b"multipart/form-data; boundary=x"),
        (b"", b"application/json"),
        (b"", b"text/plain"),
        (b"model=all", b"image/png"),
        (b"explain=true", b"image/png"),
        (b"explain=false", b"image/png"),
        (b"model=lenet5&model=mlp", b"image/png"),
        (b"model=", b"image/png"),
        (b"model=LeNet5", b"image/png"),
        (b"version=0", b"image/png"),
        (b"version=one", b"image/png"),
        (b"verbose=1", b"image/png"),
        (b"model", b"image/png"),
        (b"model=%ff", b"image/png"),
        (b"model=\xff", b"image/png"),
    ],
)
def test_everything_else_goes_to_the_fastapi_route(query: bytes, content_type: bytes) -> None:
    assert fast_path_query(scope(query, content_type)) is None


def test_other_routes_and_methods_are_not_taken() -> None:
    assert fast_path_query(scope(path="/predict/batch")) is None
    assert fast_path_query(scope(path="/predict/")) is None
    assert fast_path_query(scope(method="GET")) is None
    assert fast_path_query({"type": "websocket", "path": "/predict"}) is None


def comparable(response: httpx.Response) -> dict[str, Any]:
    """A /predict response without what differs from one request to the next."""
    body: dict[str, Any] = response.json()
    body.pop("timing_ms", None)
    body.pop("batch_size", None)
    body.get("error", {}).pop("request_id", None)
    # The length varies with the timings' digits.
    varying = ("x-request-id", "date", "content-length")
    headers = {k: v for k, v in response.headers.items() if k not in varying}
    return {"status": response.status_code, "headers": headers, "body": body}


async def both_ways(client: httpx.AsyncClient, query: str, **kwargs: Any) -> list[httpx.Response]:
    """The same request by the fast path and, with ``explain=false`` added (which changes
    nothing but the route), by the FastAPI route."""
    fast = await client.post(f"/predict{query}", **kwargs)
    joiner = "&" if query else "?"
    routed = await client.post(f"/predict{query}{joiner}explain=false", **kwargs)
    return [fast, routed]


@pytest.mark.parametrize(
    ("query", "body", "content_type", "status"),
    [
        ("", digit_png(7), "image/png", 200),
        ("?model=mlp", digit_png(2), "application/octet-stream", 200),
        ("?model=lenet5&version=1", digit_png(4), "", 200),
        ("?model=nosuchmodel", digit_png(4), "image/png", 404),
        ("?model=lenet5&version=9", digit_png(4), "image/png", 404),
        ("", b"", "image/png", 400),
        ("", b"not an image at all", "image/png", 400),
        ("", digit_png(1)[:100], "image/png", 400),
    ],
)
async def test_fast_path_answers_as_the_route_does(
    trained_model_dir: Path, query: str, body: bytes, content_type: str, status: int
) -> None:
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        fast, routed = await both_ways(
            client, query, content=body, headers={"content-type": content_type}
        )
    assert fast.status_code == status, fast.text
    assert comparable(fast) == comparable(routed)
    if status >= 400:
        assert_error(fast, status)


async def test_fast_path_checks_the_api_key_as_the_route_does(trained_model_dir: Path) -> None:
    png = digit_png(5)
    async with running_app(
        model_dir=trained_model_dir, default_model="lenet5", api_keys=KEY
    ) as client:
        for headers in (
            {},
            {"x-api-key": "wrong"},
            {"authorization": "Basic " + KEY},
            {"authorization": "Bearer wrong", "x-api-key": KEY},
        ):
            fast, routed = await both_ways(client, "", content=png, headers=headers)
            assert_error(fast, 401, "unauthorized")
            assert comparable(fast) == comparable(routed)
        for headers in ({"x-api-key": KEY}, {"authorization": "bearer " + KEY}):
            fast, routed = await both_ways(client, "", content=png, headers=headers)
            assert fast.status_code == 200, fast.text
            assert comparable(fast) == comparable(routed)


async def test_fast_path_requests_are_counted_and_logged_under_their_route(
    trained_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        with caplog.at_level(logging.INFO, logger="service.access"):
            response = await client.post("/predict", content=digit_png(3))
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200
    assert 'digits_requests_total{model="lenet5/1",route="/predict",status="200"} 1.0' in metrics
    (record,) = [r for r in caplog.records if r.name == "service.access"]
    assert record.__dict__["request_id"] == response.headers["x-request-id"]
    assert record.__dict__["model"] == "lenet5/1"
    assert record.__dict__["batch_size"] == 1
    assert record.__dict__["status"] == 200


async def test_fast_path_refuses_work_while_shutting_down(trained_model_dir: Path) -> None:
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        transport = client._transport
        assert isinstance(transport, httpx.ASGITransport)
        transport.app.state.runtime.shutting_down = True  # type: ignore[attr-defined]
        fast, routed = await both_ways(client, "", content=digit_png(1))
    assert_error(fast, 503, "shutting_down")
    assert comparable(fast) == comparable(routed)


async def test_plain_requests_never_reach_fastapi_routing(trained_model_dir: Path) -> None:
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        await client.get("/healthz")  # builds the middleware stack
        transport = client._transport
        assert isinstance(transport, httpx.ASGITransport)
        layer: Any = transport.app.middleware_stack  # type: ignore[attr-defined]
        while not isinstance(layer, PredictFastPath):
            layer = layer.app
        reached: list[str] = []

        async def fastapi_routing(scope: Scope, receive: Receive, send: Send) -> None:
            reached.append(scope["path"] + "?" + scope["query_string"].decode())
            await PlainTextResponse("routed", status_code=418)(scope, receive, send)

        layer.app = fastapi_routing
        plain = await client.post("/predict?model=lenet5", content=digit_png(6))
        other = await client.post("/predict?explain=false", content=digit_png(6))
    assert plain.status_code == 200 and plain.json()["digit"] == 6
    assert other.status_code == 418
    assert reached == ["/predict?explain=false"]
