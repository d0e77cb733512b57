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

from service.api.predict import PredictQuery
from service.http.fast_path import PredictFastPath, fast_path_query
from tests.service.api.test_routes import KEY, assert_error
from tests.service.conftest import digit_png, running_app

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
    ("query", "expected"),
    [
        (b"", PredictQuery()),
        (b"model=lenet5", PredictQuery(model="lenet5")),
        (b"model=lenet5&version=12", PredictQuery(model="lenet5", version="12")),
        (b"version=1", PredictQuery(version="1")),
        (b"model=all", PredictQuery(model="all")),
        (b"explain=true", PredictQuery(explain=True)),
        (b"explain=0", PredictQuery()),
        # As Starlette reads a query: the last of repeats, unknown parameters ignored.
        (b"model=lenet5&model=mlp", PredictQuery(model="mlp")),
        (b"verbose=1", PredictQuery()),
    ],
)
def test_a_query_the_route_takes_takes_the_fast_path(query: bytes, expected: PredictQuery) -> None:
    for content_type in (b"image/png", None, b"multipart/form-data; boundary=x", b"text/plain"):
        assert fast_path_query(scope(query, content_type)) == expected


@pytest.mark.parametrize(
    "query",
    [
        b"model=",
        b"model",
        b"model=LeNet5",
        b"version=0",
        b"version=one",
        b"explain=maybe",
        b"model=%ff",
        b"model=\xff",
    ],
)
def test_a_query_the_route_refuses_goes_to_fastapi(query: bytes) -> None:
    assert fast_path_query(scope(query)) is None


def test_other_routes_and_methods_are_not_taken() -> None:
    assert fast_path_query(scope(path="/predict/batch")) is None
    assert fast_path_query(scope(path="/predict/")) is None
    assert fast_path_query(scope(method="GET")) is None
    assert fast_path_query({"type": "websocket", "path": "/predict"}) is None


def comparable(response: httpx.Response) -> dict[str, Any]:
    """A /predict response without what differs from one request to the next."""
    body: dict[str, Any] = response.json()
    for answer in [body, *body.get("predictions", [])]:
        answer.pop("timing_ms", None)
        answer.pop("batch_size", None)
    body.get("error", {}).pop("request_id", None)
    # The length varies with the timings' digits.
    varying = ("x-request-id", "date", "content-length")
    headers = {k: v for k, v in response.headers.items() if k not in varying}
    return {"status": response.status_code, "headers": headers, "body": body}


def fast_path_layer(client: httpx.AsyncClient) -> tuple[Any, PredictFastPath]:
    """The app's fast path, and the layer that calls it."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    parent: Any = transport.app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(parent.app, PredictFastPath):
        parent = parent.app
    return parent, parent.app


async def both_ways(client: httpx.AsyncClient, query: str, **kwargs: Any) -> list[httpx.Response]:
    """The same request by the fast path, and by the FastAPI route (the fast path taken out
    of the middleware stack for it)."""
    await client.get("/healthz")  # builds the middleware stack
    fast = await client.post(f"/predict{query}", **kwargs)
    parent, layer = fast_path_layer(client)
    parent.app = layer.app
    try:
        routed = await client.post(f"/predict{query}", **kwargs)
    finally:
        parent.app = layer
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
        ("?model=all", digit_png(7), "image/png", 200),
        ("?explain=true", digit_png(3), "image/png", 200),
        ("?model=all&version=1", digit_png(3), "image/png", 422),
        ("", b"{}", "application/json", 400),
        ("", digit_png(1), "text/html", 415),
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
    sample = 'digits_requests_total{model="lenet5",route="/predict",status="200",version="1"} 1.0'
    assert sample in metrics
    (record,) = [r for r in caplog.records if r.name == "service.access"]
    assert record.__dict__["request_id"] == response.headers["x-request-id"]
    assert record.__dict__["model"] == "lenet5"
    assert record.__dict__["version"] == "1"
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


async def test_requests_the_route_takes_never_reach_fastapi_routing(
    trained_model_dir: Path,
) -> None:
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        await client.get("/healthz")  # builds the middleware stack
        _, layer = fast_path_layer(client)
        reached: list[str] = []

        async def fastapi_routing(scope: Scope, receive: Receive, send: Send) -> None:
            reached.append(scope["path"] + "?" + scope["query_string"].decode())
            await PlainTextResponse("routed", status_code=418)(scope, receive, send)

        layer.app = fastapi_routing
        plain = await client.post("/predict?model=lenet5", content=digit_png(6))
        refused = await client.post("/predict?version=0", content=digit_png(6))
    assert plain.status_code == 200 and plain.json()["digit"] == 6
    assert refused.status_code == 418
    assert reached == ["/predict?version=0"]
